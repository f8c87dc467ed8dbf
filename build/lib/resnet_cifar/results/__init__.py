"""Evaluation and what is reported: metrics, reports, plots, TensorBoard, prediction, export, the mean
over seeds."""
