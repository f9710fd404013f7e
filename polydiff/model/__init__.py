"""The BERT denoiser."""
