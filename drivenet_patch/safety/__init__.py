"""Input safety: the one error type, the one place that opens user files, and tensor boundary checks."""
