"""Chemistry: MOSES metrics for generated molecules, polymer (PSMILES) validity, and reports."""
