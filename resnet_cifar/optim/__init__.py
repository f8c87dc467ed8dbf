"""Optimisation: the optimizer and its parameter groups, the learning-rate schedules, Muon, lookahead
and the weights' moving average."""
