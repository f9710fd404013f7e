"""Infrastructure below every other package: the on-disk cache, worker pools and progress bars, line files."""
