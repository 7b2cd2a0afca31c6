"""Ray cluster entrypoints and configs."""
