"""Commands of ``polydiff`` beside LightningCLI's fit/validate/test/predict."""
