"""A run's life: its parts built from the configuration, the step, the epoch, the loop, checkpoints'
contents, the precision choice, training to a time budget."""
