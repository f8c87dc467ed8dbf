"""Durations as typed: 90s, 30m, 2h, 1h30m (--time-budget)."""
from __future__ import annotations

import argparse
import re

UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")
# Longer than any training run is planned for; it keeps the plan's arithmetic bounded.
MAX_BUDGET_S = 30 * 24 * 3600


def parse_duration(text: str) -> str:
    """argparse type: '30m', '90s', '2h', '1h30m' (returned as typed, checked)."""
    match = DURATION.match(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 30m, 2h or 1h30m, got {text!r}")
    seconds = duration_seconds(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration > 0, got {text!r}")
    if seconds > MAX_BUDGET_S:
        raise argparse.ArgumentTypeError(f"expected a duration of at most 30 days (720h), got {text!r}")
    return text.strip()


parse_duration.what = "a duration: 90s, 30m, 2h, 1h30m"  # for docs/options.md


def duration_seconds(text: str) -> float:
    hours, minutes, seconds = (float(g) if g else 0.0 for g in DURATION.match(text.strip()).groups())
    return hours * UNITS["h"] + minutes * UNITS["m"] + seconds


