"""The routes a --time-budget may pick from (--route auto), each with its measured accuracy-versus-
epochs curve: how many epochs fit a budget depends on the machine and is measured there
(training/route_choice.py); what an epoch count buys is the curve's.

Every point is the final epoch's test accuracy (the recipe's TTA) of one run of
`python main.py --recipe RECIPE --model MODEL --epochs E` (or --iterations for a fractional E, or a
--time-budget run that planned E epochs) on the JPEG copy of CIFAR-10 (quality 75), each named by
the docs/results.md or bench/README.md entry that has its command, machine, date and commit.
`python bench/curves.py DATA` measures every point again on the machine it runs on.

A curve says nothing of the official files' accuracy (about 3 points higher) nor of other data
sets: the routes are CIFAR-10's.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

DEVICE_TYPES = ("cpu", "cuda")


@dataclass(frozen=True)
class CurvePoint:
    epochs: float
    accuracy: float  # percent
    source: str  # the entry that has its command, machine, date and commit


@dataclass(frozen=True)
class Route:
    recipe: str
    model: str
    curve: tuple[CurvePoint, ...]  # by epochs, ascending
    devices: tuple[str, ...] = DEVICE_TYPES  # the device types it is a candidate on
    why_devices: str = ""

    @property
    def name(self) -> str:
        return f"{self.recipe} {self.model}"

    def accuracy_at(self, epochs: float) -> float | None:
        """The curve's accuracy at `epochs`: linear in log(epochs) between measured points, the
        longest point's beyond it (no gain is claimed past what was measured), None before its
        shortest (nothing measured says what so short a run gives)."""
        points = self.curve
        if epochs < points[0].epochs:
            return None
        for low, high in itertools.pairwise(points):
            if epochs <= high.epochs:
                share = (math.log(epochs) - math.log(low.epochs)) / (math.log(high.epochs) - math.log(low.epochs))
                return low.accuracy + share * (high.accuracy - low.accuracy)
        return points[-1].accuracy


RESULTS = "docs/results.md"
CURVES = "docs/results.md, \"Accuracy against epochs\""

ROUTES: tuple[Route, ...] = (
    Route("airbench94-muon-cpu", "airbench94", (
        CurvePoint(1, 81.34, CURVES),
        CurvePoint(2, 86.24, CURVES),
        CurvePoint(4, 89.06, CURVES),
        CurvePoint(7, 90.40, f"{RESULTS}, airbench94 against the published script (AMX CPU)"),
        CurvePoint(7.5, 90.60, f"{RESULTS}, airbench94 against the published script (AMX CPU)"),
        CurvePoint(8, 90.79, f"{RESULTS}, airbench94 against the published script (AMX CPU)"),
        CurvePoint(8.25, 90.98, f"{RESULTS}, what a budget buys (AVX512-BF16 CPU, --time-budget 15m: 8.25 epochs)"),
        CurvePoint(8.58, 90.37, f"{RESULTS}, what a budget buys (AVX512-BF16 CPU, --time-budget 15m: 8.58 epochs)"),
        CurvePoint(15, 91.23, f"{RESULTS}, fifteen minutes (AMX CPU, --time-budget 15m: 15.0 epochs)"),
    )),
    Route("speedrun", "airbench94", (
        CurvePoint(2, 84.68, CURVES),
        CurvePoint(4, 88.49, CURVES),
        CurvePoint(6.91, 90.41, f"{RESULTS}, what a budget buys (AVX512-BF16 CPU, --time-budget 15m: 6.91 epochs)"),
        CurvePoint(7.47, 90.68, f"{RESULTS}, what a budget buys (AVX512-BF16 CPU, --time-budget 15m: 7.47 epochs)"),
        CurvePoint(7.59, 90.81, f"{RESULTS}, the record script on the CPU (AVX512-BF16 CPU)"),
    )),
    Route("airbench94", "airbench94", (
        CurvePoint(2, 81.59, CURVES),
        CurvePoint(4, 86.91, CURVES),
        CurvePoint(5, 88.49, f"{RESULTS}, what airbench94's choices buy (AMX CPU)"),
        CurvePoint(8, 90.26, f"{RESULTS}, airbench94 against the published script (AMX CPU)"),
        CurvePoint(9, 90.44, f"{RESULTS}, airbench94 against the published script (AMX CPU)"),
        CurvePoint(9.9, 90.89, f"{RESULTS}, airbench94 against the published script (AMX CPU)"),
        CurvePoint(15.7, 91.48, f"{RESULTS}, fifteen minutes (AMX CPU, --time-budget 15m: 15.7 epochs)"),
    )),
    Route("fast", "resnet20", (
        CurvePoint(1, 50.46, CURVES),
        CurvePoint(3, 72.56, f"{RESULTS}, on a 2-core CPU (AVX512-BF16; the raw weights of an --ema 0.99 run)"),
        CurvePoint(4, 75.86, f"{RESULTS}, on a 2-core CPU (AVX2)"),
        CurvePoint(10, 84.97, f"{RESULTS}, on a 2-core CPU (AVX512-BF16; the raw weights of an --ema 0.99 run)"),
        CurvePoint(17.7, 87.33, f"{RESULTS}, time budgets on the CPU (AVX512-BF16, --time-budget 15m)"),
        CurvePoint(30, 89.42, f"{RESULTS}, on a 2-core CPU (AVX2)"),
    )),
    Route("fast", "resnet18", (
        CurvePoint(18, 90.06, f"{RESULTS}, on one GPU (H200)"),
        CurvePoint(26, 91.02, f"{RESULTS}, on one GPU (H200; the mean of 3 seeds)"),
        CurvePoint(80, 92.64, f"{RESULTS}, on one GPU (H200)"),
    ), devices=("cuda",),
        why_devices="a 2-core CPU trains ResNet-18 at ~25 img/s (AVX2): 1.8 epochs an hour"),
)
