"""Every GPU speed measurement in one prepared run, most important first, each result saved
as soon as it exists (a run cut short by its time limit still leaves what it measured).

    python bench/gpu_suite.py --data-dir data/cifar10-jpeg --out OUT [--deadline-s 480]

1. bench/throughput.py, eager bf16 + channels_last (the `auto` choice on CUDA): ResNet-18 at every
   --r18-batches size (the first with the classic baseline, for (a)/(d) on this machine), then the
   other --models at every --batches size. These run in this process, one after another.
2. bench/precision_matrix.py for --matrix-model (eager cells).
3. The same throughput runs with --compile at --compile-batch, one subprocess per model (a fresh
   torch.compile state each): first all of them at once with one step each, which fills the
   inductor cache on all CPU cores in parallel, then one after another for the timed run, which
   then loads the compiled kernels instead of building them.
A stage that would start after --deadline-s is skipped and recorded as skipped; the compile stage, once
started, may run until --deadline-s + 120 s.
Writes OUT/results.jsonl (one JSON object a run) and prints a Markdown table at the end.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import precision_matrix  # noqa: E402
import throughput  # noqa: E402


class Results:
    """Appends each result to results.jsonl at once and echoes it."""

    def __init__(self, path: Path, started: float, deadline_s: float):
        self.path, self.started, self.deadline_s = path, started, deadline_s
        self.rows: list[dict] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def out_of_time(self, what: str) -> bool:
        if self.elapsed() < self.deadline_s:
            return False
        self.add({"kind": "skipped", "what": what, "reason": f"deadline {self.deadline_s:.0f} s reached"})
        return True

    def add(self, row: dict) -> None:
        row = {**row, "elapsed_s": round(self.elapsed(), 1)}
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        status = "error" if row.get("error") else row.get("reason", "ok")
        # stderr: stdout is captured while the in-process benchmarks run
        print(f"[{row['elapsed_s']:7.1f} s] {row.get('kind')}: {row.get('what', '')} {status}",
              file=sys.stderr, flush=True)


def throughput_argv(model: str, batch: int, common: list[str], classic: bool, compile_model: bool) -> list[str]:
    argv = ["--model", model, "--batch-size", str(batch), *common]
    if not classic:
        argv.append("--no-classic")
    if compile_model:
        argv += ["--compile", "--no-eval"]
    return argv


def run_in_process(results: Results, kind: str, what: str, fn, argv: list[str]) -> None:
    try:
        report = fn(argv)
        results.add({"kind": kind, "what": what, "argv": argv, "report": report})
    except Exception as e:  # record and go on: one failed cell must not cost the others
        results.add({"kind": kind, "what": what, "argv": argv, "error": f"{type(e).__name__}: {e}"[:500]})
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def last_json_line(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None


def throughput_command(argv: list[str]) -> list[str]:
    """bench/throughput.py as a child process (a fresh torch.compile state each)."""
    return [sys.executable, str(BENCH / "throughput.py"), *argv]


def run_subprocess(argv: list[str], timeout: float) -> tuple[dict | None, str]:
    try:
        done = subprocess.run(throughput_command(argv), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    if done.returncode != 0:
        return None, f"exit {done.returncode}: {done.stderr.strip()[-400:]}"
    return last_json_line(done.stdout), ""


def compile_stage(results: Results, models: list[str], batch: int, common: list[str], warm_argv: list[str],
                  hard_limit_s: float) -> None:
    """hard_limit_s: seconds since the suite started after which no compile process may run."""
    if results.out_of_time("compile warm-up"):
        return
    # Fill the inductor cache for all models at once (compiling is CPU work, one model per process).
    warmers = {model: subprocess.Popen(
        throughput_command(throughput_argv(model, batch, warm_argv, classic=False, compile_model=True)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for model in models}
    for model, process in warmers.items():
        try:
            _, err = process.communicate(timeout=max(1.0, hard_limit_s - results.elapsed()))
            results.add({"kind": "compile-warmup", "what": model, "returncode": process.returncode,
                         "stderr_tail": err.strip()[-300:]})
        except subprocess.TimeoutExpired:
            process.kill()
            results.add({"kind": "compile-warmup", "what": model, "error": "timed out"})
    for model in models:
        if results.elapsed() > hard_limit_s - 20:
            results.add({"kind": "skipped", "what": f"compile {model}", "reason": f"hard limit {hard_limit_s:.0f} s"})
            continue
        argv = throughput_argv(model, batch, common, classic=False, compile_model=True)
        report, error = run_subprocess(argv, timeout=max(1.0, hard_limit_s - results.elapsed()))
        results.add({"kind": "throughput", "what": f"{model} b{batch} compile", "argv": argv,
                     **({"report": report} if report else {"error": error})})


def markdown_table(rows: list[dict]) -> str:
    lines = ["| model | batch | compile | (a) train img/s | (b) compute img/s | (a)/(b) | (c) loader img/s "
             "| (d) classic img/s | (a)/(d) | eval img/s | peak CUDA MiB |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        r = row.get("report")
        if row.get("kind") != "throughput" or not r:
            continue
        img = r["img_per_s"]
        cells = [r["model"], r["batch_size"], "yes" if r["compile"] else "no", f"{img['train']:,.0f}",
                 f"{img['compute']:,.0f}", f"{r['ratio_train_over_compute']:.3f}", f"{img['loader']:,.0f}",
                 f"{img['classic']:,.0f}" if "classic" in img else "–",
                 f"{r['ratio_train_over_classic']:.2f}" if "ratio_train_over_classic" in r else "–",
                 f"{r['eval_img_per_s']:,.0f}" if r.get("eval_img_per_s") else "–",
                 f"{r['peak_cuda_mib']:,.0f}" if "peak_cuda_mib" in r else "–"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--r18-batches", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--no-classic", action="store_true", help="no classic baseline in the first run either")
    parser.add_argument("--models", nargs="+",
                        default=["resnet50", "resnet20", "resnet56", "preact-resnet18", "wrn-28-10", "resnext29-32x4d"])
    parser.add_argument("--batches", type=int, nargs="+", default=[512, 128])
    parser.add_argument("--compile-models", nargs="+", default=["resnet18", "resnet50", "resnet20", "resnet56"])
    parser.add_argument("--compile-batch", type=int, default=512)
    parser.add_argument("--matrix-model", default="resnet18")
    parser.add_argument("--matrix-batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--deadline-s", type=float, default=480.0,
                        help="start no new stage after this many seconds")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = Results(out / "results.jsonl", time.perf_counter(), args.deadline_s)
    common = ["--data-dir", args.data_dir, "--device", args.device, "--steps", str(args.steps),
              "--rounds", str(args.rounds), "--warmup", "3"]
    warm = ["--data-dir", args.data_dir, "--device", args.device, "--steps", "1", "--rounds", "1", "--warmup", "1"]

    plan = [("resnet18", batch, i == 0 and not args.no_classic) for i, batch in enumerate(args.r18_batches)]
    plan += [(model, batch, False) for batch in args.batches for model in args.models]
    for model, batch, classic in plan:
        what = f"{model} b{batch} eager" + (" +classic" if classic else "")
        if results.out_of_time(what):
            break
        with contextlib.redirect_stdout(io.StringIO()):  # the JSON goes to results.jsonl instead
            run_in_process(results, "throughput", what, throughput.main,
                           throughput_argv(model, batch, common, classic, compile_model=False))

    if not results.out_of_time("precision matrix"):
        with contextlib.redirect_stdout(io.StringIO()):
            run_in_process(results, "precision_matrix", args.matrix_model, precision_matrix.main,
                           ["--model", args.matrix_model, "--device", args.device, "--batch-size",
                            str(args.matrix_batch), "--steps", str(args.steps), "--rounds", str(args.rounds)])

    compile_stage(results, args.compile_models, args.compile_batch, common, warm,
                  hard_limit_s=args.deadline_s + 120)

    table = markdown_table(results.rows)
    (out / "table.md").write_text(table + "\n")
    print(table)
    for row in results.rows:
        if row.get("kind") == "precision_matrix" and row.get("report"):
            print(json.dumps(row["report"]))
        if row.get("error"):
            print(f"error in {row['what']}: {row['error']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
