"""The training loop, and training to a time budget."""
