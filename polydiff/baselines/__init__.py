"""Baselines that polydiff's models are measured against on the same machine and data."""
