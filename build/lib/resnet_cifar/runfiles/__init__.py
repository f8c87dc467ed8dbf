"""A run directory's files: config.json, metrics.csv, checkpoints and what they hold."""
