"""Measure the accuracy-versus-epochs curves --route auto ranks the routes by (recipes/routes.py)
on the machine it runs on: one `main.py` training command a curve point, one after another (alone: a
run beside another slows both), each point's accuracy beside the one shipped.

    python bench/curves.py DATA --out OUT [--routes "fast resnet20" airbench94] [--dry-run]

DATA: CIFAR-10 in any layout --data-dir reads (the shipped points were measured on the JPEG copy).
A point at a fractional number of epochs runs as --iterations (the epochs times the steps an epoch);
a point already in OUT/results.jsonl is not run again, so a stopped run continues where it stopped.
Prints, and writes to OUT/table.md, every point measured and the shipped one.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from resnet_cifar.recipes.routes import ROUTES, CurvePoint, Route  # noqa: E402

TRAIN_IMAGES = 50_000
DONE = re.compile(r"^done: \w+ accuracy ([0-9.]+)%", re.MULTILINE)


def point_command(route: Route, point: CurvePoint, data: str, run_dir: Path, batch_size: int) -> list[str]:
    """The training command that measures one point of a route's curve."""
    if float(point.epochs).is_integer():
        length = ["--epochs", str(int(point.epochs))]
    else:
        length = ["--iterations", str(math.ceil(point.epochs * (TRAIN_IMAGES // batch_size)))]
    return [sys.executable, str(REPO / "main.py"), "--recipe", route.recipe, "--model", route.model, *length,
            "--seed", "0", "--data-dir", data, "--no-download", "--run-dir", str(run_dir), "--quiet"]


def batch_of(route: Route) -> int:
    from resnet_cifar.config import TrainConfig
    from resnet_cifar.recipes import apply_recipe

    config = TrainConfig(recipe=route.recipe, model=route.model)
    return apply_recipe(config, {"model"}).batch_size


def selected(names: list[str] | None) -> list[Route]:
    """The routes named ('RECIPE MODEL', or a recipe only one route has); all of them when none is."""
    if not names:
        return list(ROUTES)
    chosen = []
    for name in names:
        matches = [route for route in ROUTES if name in (route.name, route.recipe)]
        if len(matches) != 1:
            sys.exit(f"curves.py: {'no route' if not matches else 'several routes'} named {name!r}; valid: "
                     f"{', '.join(repr(route.name) for route in ROUTES)}")
        chosen.append(matches[0])
    return chosen


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="--data-dir for every run")
    parser.add_argument("--out", type=Path, default=Path("curves-out"))
    parser.add_argument("--routes", nargs="*", help="route names ('RECIPE MODEL', or the recipe alone); default all")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return parser.parse_args(argv)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    results = args.out / "results.jsonl"
    done = ([json.loads(line) for line in results.read_text().splitlines() if line.strip()]
            if results.exists() else [])
    rows = list(done)
    for route in selected(args.routes):
        batch = batch_of(route)
        for point in route.curve:
            name = f"{route.recipe}-{route.model}-{point.epochs:g}"
            command = point_command(route, point, args.data, args.out / name, batch)
            if args.dry_run:
                print(shlex.join(command))
                continue
            if any(row["name"] == name for row in done):
                continue
            args.out.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            result = subprocess.run(command, capture_output=True, text=True)
            (args.out / f"{name}.log").write_text(result.stdout + result.stderr)
            found = DONE.search(result.stdout)
            row = dict(name=name, route=route.name, epochs=point.epochs, shipped=point.accuracy,
                       measured=float(found.group(1)) if found else None,
                       wall_s=round(time.perf_counter() - started, 1), exit=result.returncode)
            with results.open("a") as stream:
                stream.write(json.dumps(row) + "\n")
            rows.append(row)
    if not args.dry_run:
        table = summarise(rows)
        (args.out / "table.md").write_text(table + "\n")
        print(table)
    return rows


def summarise(rows: list[dict]) -> str:
    lines = ["| route | epochs | shipped | measured | Δ | wall |", "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        measured = row["measured"]
        delta = "–" if measured is None else f"{measured - row['shipped']:+.2f}"
        shown = f"{measured:.2f}%" if measured is not None else f"failed (exit {row['exit']})"
        lines.append(f"| {row['route']} | {row['epochs']:g} | {row['shipped']:.2f}% | {shown} | {delta} | "
                     f"{row['wall_s']:.0f} s |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
