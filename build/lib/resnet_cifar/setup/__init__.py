"""What builds a run from its configuration: recipes, optimizer and schedule, EMA, the precision
choice, the assembled run."""
