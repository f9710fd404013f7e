"""Data: offline tokenizers, SMILES data modules and the bundled MOSES sets."""
