"""What a SMILES prefix may still become, checked token by token while a model writes it left to right.

``syntax``: a token automaton for SMILES grammar and valence, batched over rows as tensors.
``kekulization``: whether the prefix's aromatic atoms can still form rings with a Kekulé structure.
"""
