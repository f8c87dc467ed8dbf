"""Several seeds of one recipe: one run directory per seed, and their final accuracies' spread."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from resnet_cifar.utils.atomic_files import atomic_path


@dataclass(frozen=True)
class SeedSummary:
    """Final test accuracy (0-1) over seeds; std is the sample standard deviation (n - 1)."""

    seeds: tuple[int, ...]
    accuracies: tuple[float, ...]
    split: str = "test"  # "val" for runs on a folder without test images

    @property
    def mean(self) -> float:
        return sum(self.accuracies) / len(self.accuracies)

    @property
    def std(self) -> float:
        if len(self.accuracies) < 2:
            return 0.0
        mean = self.mean
        return math.sqrt(sum((a - mean) ** 2 for a in self.accuracies) / (len(self.accuracies) - 1))

    def line(self, tta: str) -> str:
        each = ", ".join(f"{s}: {100 * a:.2f}%" for s, a in zip(self.seeds, self.accuracies, strict=True))
        low, high = 100 * min(self.accuracies), 100 * max(self.accuracies)
        return (f"final {self.split} accuracy over {len(self.seeds)} seeds (tta {tta}): {100 * self.mean:.2f}% "
                f"± {100 * self.std:.2f} (min {low:.2f}%, max {high:.2f}%; {each})")

    def as_dict(self) -> dict:
        return {"seeds": list(self.seeds), f"{self.split}_accuracy": list(self.accuracies), "mean": self.mean,
                "std": self.std, "min": min(self.accuracies), "max": max(self.accuracies)}


def write_summary(root: Path, summary: SeedSummary, tta: str) -> Path:
    path = Path(root) / "seeds.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({**summary.as_dict(), "tta": tta}, indent=2) + "\n")
    return path
