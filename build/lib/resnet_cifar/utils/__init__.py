"""Shared basics every layer uses: atomic file writes, devices and precision, RNG state, torchrun's
process group, timings, progress lines, signals."""
