"""What each choice of a recipe buys: final test accuracy at one fixed epoch budget, the recipe as
it is against variants that change one thing, each a whole `main.py` training command.

    python bench/ablation.py --data-dir data/cifar10-jpeg --out OUT --model resnet18 --recipe fast --epochs 10 \
        --seeds 0 1 --variants "fast=" "no Cutout=--cutout 0" "zero padding=--translate-pad zeros" \
        "no Nesterov=--no-nesterov" "label smoothing 0.2=--label-smoothing 0.2" "EMA 0.99=--ema 0.99" \
        [--deadline-s 300] [--eval-args "--device cpu"] [-- MAIN.PY OPTIONS FOR EVERY RUN]

Each --variants item is LABEL=OPTIONS (OPTIONS may be empty); the first is the reference the
others are compared with. Runs go seed by seed, every variant within a seed, so a deadline that
cuts the list leaves whole seeds and a machine that drifts in speed touches every variant alike.
Each run's last.pt is evaluated again without TTA (`--mode eval --tta none`, with --eval-args),
so the table shows what the recipe's TTA adds without training a run for it. With --ema in a
variant the table also shows the moving average's test accuracy (the raw weights' stays the
headline). A run predicted to end after --deadline-s (from the slowest run so far) is skipped and
recorded as skipped.

Writes OUT/results.jsonl (a run a line, appended as each ends), OUT/runs.log and OUT/table.md.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # time_to_accuracy puts the project's modules on sys.path
from time_to_accuracy import (  # noqa: E402
    REPO,
    output_files,
    parse_with_main_args,
    record,
    run_logged,
    timed_runs_parser,
    train_command,
    train_unless_late,
)


def parse_variant(text: str) -> tuple[str, list[str]]:
    label, sep, options = text.partition("=")
    if not sep or not label.strip():
        raise argparse.ArgumentTypeError(f"expected LABEL=OPTIONS such as 'no Cutout=--cutout 0', got {text!r}")
    return label.strip(), shlex.split(options)


def parse_args(argv=None) -> argparse.Namespace:
    parser = timed_runs_parser(__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", type=parse_variant, nargs="+", required=True, metavar="LABEL=OPTIONS")
    parser.add_argument("--eval-args", default="", help="options for the --mode eval commands, e.g. '--device cpu'")
    return parse_with_main_args(parser, argv)


def eval_without_tta(args: argparse.Namespace, run_dir: Path, log: Path) -> float | None:
    """last.pt's test accuracy without TTA (None if the evaluation failed)."""
    output = run_dir / "eval_no_tta.json"
    command = [sys.executable, str(REPO / "main.py"), "--mode", "eval", "--checkpoint", str(run_dir / "last.pt"),
               "--data-dir", args.data_dir, "--tta", "none", "--output", str(output), *shlex.split(args.eval_args)]
    code, _ = run_logged(command, log)
    return json.loads(output.read_text())["accuracy"] if code == 0 else None


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def mean_or_dash(accuracies: list[float | None]) -> str:
    known = [100 * value for value in accuracies if value is not None]
    return f"{statistics.mean(known):.2f}%" if known else "–"


def summarise(rows: list[dict], labels: list[str]) -> str:
    """A Markdown row a variant (mean over its seeds, accuracies in %), in the order of labels;
    Δ is the difference of the means from the first variant's, in points."""
    done = [row for row in rows if "test_acc" in row]
    lines = ["| variant | options | seeds | final test acc (TTA) | Δ vs first | without TTA | EMA weights "
             "| training s | wall s |", "|---|---|---|---|---:|---:|---:|---:|---:|"]
    reference = None
    for label in labels:
        group = [row for row in done if row["variant"] == label]
        if not group:
            continue
        mean, std = mean_std([100 * row["test_acc"] for row in group])
        reference = mean if reference is None else reference
        delta = "–" if label == labels[0] else f"{mean - reference:+.2f}"
        no_tta = mean_or_dash([row.get("test_acc_no_tta") for row in group])
        ema = mean_or_dash([row.get("ema_test_acc") for row in group])
        train_s, wall_s = (statistics.mean(row[key] for row in group) for key in ("train_s", "wall_s"))
        options = " ".join(group[0]["options"]) or "(recipe)"
        lines.append(f"| {label} | `{options}` | {' '.join(str(row['seed']) for row in group)} "
                     f"| {mean:.2f}% ± {std:.2f} ({group[0]['tta']}) | {delta} | {no_tta} | {ema} "
                     f"| {train_s:.1f} | {wall_s:.1f} |")
    for row in rows:
        if "test_acc" not in row:
            lines.append(f"- {row['variant']}, seed {row['seed']}: {row.get('skipped') or 'failed (runs.log)'}")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    out, results, log = output_files(args.out)
    started = time.perf_counter()
    rows: list[dict] = []
    for seed in args.seeds:
        for number, (label, options) in enumerate(args.variants):
            row = {"variant": label, "options": options, "model": args.model, "recipe": args.recipe,
                   "epochs": args.epochs, "seed": seed}
            run_dir = out / "runs" / f"v{number}-s{seed}"
            slowest = max((r["wall_s"] for r in rows if "wall_s" in r), default=None)  # the same epochs each
            if train_unless_late(row, train_command(args, run_dir, args.epochs, seed, options), run_dir, log, slowest,
                                 args.deadline_s - (time.perf_counter() - started)):
                row["test_acc_no_tta"] = eval_without_tta(args, run_dir, log)
            rows.append(row)
            record(results, row)
    table = summarise(rows, [label for label, _ in args.variants])
    (out / "table.md").write_text(table + "\n")
    print(table)
    return rows


if __name__ == "__main__":
    main()
