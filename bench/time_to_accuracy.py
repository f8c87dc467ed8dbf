"""Time to accuracy: whole `main.py` training commands at several epoch budgets, timed from the
outside, and the shortest budget whose final-epoch test accuracy reaches each target.

    python bench/time_to_accuracy.py --data-dir data/cifar10-jpeg --out OUT --model resnet18 --recipe fast \
        --runs 12:0 18:0 26:0 80:0 26:1 26:2 --targets 0.91 0.94 --deadline-s 300 [-- MAIN.PY OPTIONS]

Each --runs item is EPOCHS:SEED, one `python main.py --mode train` command a run, run one after
another in that order (alone: a run beside another would time both wrongly). The schedule
(triangular for `fast`) is laid out over each run's own budget, so a budget's figure is its final
epoch, never an epoch in the middle of a longer run. Wall = the whole command (start-up, data
loading, training, the final evaluation with the recipe's TTA, the report and its plots);
training = the sum of the run's per-epoch training seconds (metrics.csv); each row also keeps the
run's timings.json (seconds per phase: start-up, data, setup, training, evaluation, checkpoints,
curves, report).

Before the first timed run, one untimed run of --warmup-steps steps builds the image-folder cache,
so every timed run starts as a user's second run does. A run whose predicted wall (from the runs
before it) would end after --deadline-s is skipped and recorded as skipped. Options after `--` go
to every main.py command (a CPU dry run: `-- --device cpu --max-steps 2`).

Writes OUT/results.jsonl (one object a run, appended as each ends), OUT/runs.log (the commands'
output) and OUT/table.md (every run in results.jsonl, so a ladder may be run in parts); prints the
table last.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from resnet_cifar.runfiles.run_files import MetricsLog  # noqa: E402
from resnet_cifar.utils.timings import PHASES  # noqa: E402


@dataclass(frozen=True)
class Plan:
    epochs: int
    seed: int


def parse_plan(text: str) -> Plan:
    try:
        epochs, seed = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected EPOCHS:SEED such as 26:0, got {text!r}") from None
    if epochs < 1 or seed < 0:
        raise argparse.ArgumentTypeError(f"EPOCHS must be >= 1 and SEED >= 0, got {text!r}")
    return Plan(epochs, seed)


def timed_runs_parser(description: str) -> argparse.ArgumentParser:
    """The options of a benchmark made of timed main.py training commands (this one, ablation.py)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--recipe", default="fast")
    parser.add_argument("--deadline-s", type=float, default=float("inf"))
    return parser


def parse_with_main_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """parser's options, then after `--` the options for every training command (args.main_args)."""
    parser.add_argument("main_args", nargs=argparse.REMAINDER, help="after --: options for every training command")
    args = parser.parse_args(argv)
    args.main_args = [a for a in args.main_args if a != "--"]
    return args


def parse_args(argv=None) -> argparse.Namespace:
    parser = timed_runs_parser(__doc__.splitlines()[0])
    parser.add_argument("--runs", type=parse_plan, nargs="+", required=True, metavar="EPOCHS:SEED")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.91, 0.94])
    parser.add_argument("--warmup-steps", type=int, default=2, help="0: no untimed warm-up run")
    return parse_with_main_args(parser, argv)


def train_command(args: argparse.Namespace, run_dir: Path, epochs: int, seed: int, extra=()) -> list[str]:
    return [sys.executable, str(REPO / "main.py"), "--mode", "train", "--model", args.model, "--recipe", args.recipe,
            "--epochs", str(epochs), "--seed", str(seed), "--data-dir", args.data_dir, "--no-download",
            "--run-dir", str(run_dir), "--quiet", *args.main_args, *extra]  # extra last: a variant's options win


def run_logged(command: list[str], log: Path) -> tuple[int, float]:
    """(exit code, wall seconds) of command, its output appended to log."""
    with log.open("a") as f:
        f.write("$ " + " ".join(command) + "\n")
        f.flush()
        started = time.perf_counter()
        code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, cwd=REPO).returncode
        return code, time.perf_counter() - started


def final_epoch(run_dir: Path) -> dict:
    """The last row of the run's metrics.csv, with the run's summed training seconds."""
    rows = MetricsLog(run_dir / "metrics.csv").rows()
    last = rows[-1]
    train_s = round(sum(float(row["seconds"]) for row in rows), 2)
    final = {"tta": last["tta"], "epochs_done": int(last["epoch"]), "train_s": train_s}
    if last["test_acc"]:  # empty when the run stopped early (--max-steps) before its last epoch
        final["test_acc"] = float(last["test_acc"])
    if last.get("ema_test_acc"):  # a run with --ema: its moving average's figure too
        final["ema_test_acc"] = float(last["ema_test_acc"])
    timings = run_dir / "timings.json"
    if timings.exists():  # where the wall time went, phase by phase (timings.py)
        final["timings"] = json.loads(timings.read_text())
    return final


def train_unless_late(row: dict, command: list[str], run_dir: Path, log: Path, predicted: float | None,
                      deadline_left_s: float) -> bool:
    """Run the training command into run_dir unless its predicted wall would pass the deadline.
    Fills row with exit_code, wall_s and the final epoch, or with why it was skipped; True when
    the run ended well."""
    if predicted is not None and predicted > deadline_left_s:
        row["skipped"] = f"predicted {predicted:.0f} s would end after the deadline ({deadline_left_s:.0f} s left)"
        return False
    code, wall = run_logged(command, log)
    row.update(exit_code=code, wall_s=round(wall, 2))
    if code == 0:
        row.update(final_epoch(run_dir))
    return code == 0


def output_files(out_dir: str) -> tuple[Path, Path, Path]:
    """OUT (created), OUT/results.jsonl and OUT/runs.log."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out, out / "results.jsonl", out / "runs.log"


def record(results: Path, row: dict) -> None:
    """Append row to results.jsonl as the run ends (a cut-short ladder keeps what it measured)."""
    with results.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def predicted_wall(plan: Plan, done: list[dict]) -> float | None:
    """A run's wall from the runs before it: their fixed cost plus seconds an epoch (None: no data)."""
    timed = [row for row in done if "train_s" in row]
    if not timed:
        return None
    per_epoch = max(row["train_s"] / row["epochs_done"] for row in timed)
    fixed = max(row["wall_s"] - row["train_s"] for row in timed)
    return fixed + per_epoch * plan.epochs


def summarise(rows: list[dict], targets: list[float]) -> str:
    """A Markdown table a budget (mean over its seeds) and one line a target: the smallest budget
    whose mean final accuracy reaches it."""
    by_epochs: dict[int, list[dict]] = {}
    for row in rows:
        if "test_acc" in row:
            by_epochs.setdefault(row["epochs"], []).append(row)
    lines = ["| epochs | seeds | final test acc, mean ± std (min–max) | TTA | training s | wall s |",
             "|---:|---|---|---|---:|---:|"]
    means = {}
    for epochs in sorted(by_epochs):
        group = by_epochs[epochs]
        accs = [100 * row["test_acc"] for row in group]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        means[epochs] = (statistics.mean(accs), statistics.mean(row["wall_s"] for row in group))
        spread = f" ({min(accs):.2f}–{max(accs):.2f})" if len(accs) > 1 else ""
        lines.append(f"| {epochs} | {' '.join(str(row['seed']) for row in group)} | "
                     f"{means[epochs][0]:.2f}% ± {std:.2f}{spread} | {group[0]['tta']} | "
                     f"{statistics.mean(row['train_s'] for row in group):.1f} | {means[epochs][1]:.1f} |")
    lines.append("")
    for target in targets:
        reached = [epochs for epochs in sorted(means) if means[epochs][0] >= 100 * target]
        if reached:
            acc, wall = means[reached[0]]
            lines.append(f"- time to {100 * target:g}%: {wall:.1f} s ({reached[0]} epochs, {acc:.2f}%)")
        elif means:
            best = max(means, key=lambda e: means[e][0])
            lines.append(f"- time to {100 * target:g}%: not reached (best: {means[best][0]:.2f}% at {best} epochs)")
    skipped = [row for row in rows if row.get("skipped")]
    for row in skipped:
        lines.append(f"- skipped {row['epochs']} epochs, seed {row['seed']}: {row['skipped']}")
    return "\n".join(lines + time_split([row for group in by_epochs.values() for row in group]))


TIMED_PHASES = ("before_run", *PHASES, "other")


def time_split(rows: list[dict]) -> list[str]:
    """A second table from the runs' timings.json: where each budget's wall went, mean seconds a
    phase; "exit" is the rest of the command's wall (the process's start before Python measured
    it, and its end after the `time:` line)."""
    by_epochs: dict[int, list[dict]] = {}
    for row in rows:
        if row.get("timings"):
            by_epochs.setdefault(row["epochs"], []).append(row)
    if not by_epochs:
        return []
    names = " | ".join(name.replace("_", " ") for name in TIMED_PHASES)
    lines = ["", f"| epochs | runs | {names} | exit | wall |", "|---:|---:|" + "---:|" * (len(TIMED_PHASES) + 2)]
    for epochs in sorted(by_epochs):
        group = by_epochs[epochs]
        phases = [statistics.mean(row["timings"][f"{name}_s"] or 0.0 for row in group) for name in TIMED_PHASES]
        wall = statistics.mean(row["wall_s"] for row in group)
        cells = " | ".join(f"{value:.1f}" for value in (*phases, wall - sum(phases), wall))
        lines.append(f"| {epochs} | {len(group)} | {cells} |")
    return lines


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    out, results, log = output_files(args.out)
    started = time.perf_counter()
    if args.warmup_steps > 0:
        warmup = train_command(args, out / "runs" / "warmup", 1, 0, ("--max-steps", str(args.warmup_steps)))
        code, wall = run_logged(warmup, log)
        print(f"warm-up run (builds the data cache): exit {code}, {wall:.1f} s", flush=True)
    rows: list[dict] = []
    for plan in args.runs:
        row = {"model": args.model, "recipe": args.recipe, "epochs": plan.epochs, "seed": plan.seed}
        run_dir = out / "runs" / f"{args.model}-e{plan.epochs}-s{plan.seed}"
        train_unless_late(row, train_command(args, run_dir, plan.epochs, plan.seed), run_dir, log,
                          predicted_wall(plan, rows), args.deadline_s - (time.perf_counter() - started))
        rows.append(row)
        record(results, row)
    # The table covers every run in results.jsonl: a ladder may be run in parts into one --out.
    table = summarise([json.loads(line) for line in results.read_text().splitlines()], args.targets)
    (out / "table.md").write_text(table + "\n")
    print(table)
    return rows


if __name__ == "__main__":
    main()
