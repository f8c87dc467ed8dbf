"""argparse types for numbers in a range: each says what it accepts (docs/options.md shows it) and
refuses the rest in one line."""
from __future__ import annotations

import argparse
import math


def number(kind, low=None, low_inclusive=False, high=None, high_inclusive=True, what="number"):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite {what}, got {text!r}")
        if low is not None and (value < low or (value == low and not low_inclusive)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        if high is not None and (value > high or (value == high and not high_inclusive)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    parse.what = what  # for docs/options.md
    return parse


# Upper bounds far beyond any sensible value, so that a typo such as --lr 1e300 or --epochs 1e20 is one
# line here rather than an overflow deep in torch (float32 holds at most ~3.4e38; counts fit 32 bits).
MAX_COUNT = 2**31 - 1
MAX_REAL = 1e6
positive_int = number(int, low=1, low_inclusive=True, high=MAX_COUNT, what="an integer from 1 to 2147483647")
non_negative_int = number(int, low=0, low_inclusive=True, high=MAX_COUNT, what="an integer from 0 to 2147483647")
positive_float = number(float, low=0, high=MAX_REAL, what="a number > 0 and at most 1e6")
non_negative_float = number(float, low=0, low_inclusive=True, high=MAX_REAL, what="a number from 0 to 1e6")
unit_interval = number(float, low=0, low_inclusive=True, high=1, high_inclusive=False, what="a number in [0, 1)")
open_unit_interval = number(float, low=0, high=1, high_inclusive=False, what="a number in (0, 1)")
cutout_size = number(int, low=0, low_inclusive=True, high=32, what="an integer from 0 (off) to 32")
image_size_type = number(int, low=8, low_inclusive=True, what="an integer >= 8")
# NumPy's and torch's generators both take seeds below 2**32.
seed_type = number(int, low=0, low_inclusive=True, high=2**32 - 1, what="an integer from 0 to 4294967295")
gamma_type = number(float, low=0, high=1, what="a number in (0, 1]")
