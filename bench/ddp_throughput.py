"""One process with T threads against T gloo processes (torchrun) with one thread each, same
global batch, on this CPU; and the share of a DDP step spent on the gradient all-reduce.

    python bench/ddp_throughput.py --data-dir data/cifar10-jpeg [--model resnet20] [--batch-size 256] [--steps 20]
    python bench/ddp_throughput.py --data-dir data/cifar10-jpeg --device cuda --processes 1 --model resnet18 \
        --batch-size 512

With --device cuda: the plain run on the GPU against torchrun with --processes NCCL processes (1 on
a one-GPU machine: what DDP's wrapper and its all-reduce of one cost), bf16 + channels_last.

Each round runs, one after the other (never two jobs at once):
  single   python, torch.set_num_threads(T), the training path as main.py runs it (train_one_epoch);
  ddp      torchrun --nproc-per-node=T, OMP_NUM_THREADS=1, the same global batch split in T shares;
  no-sync  the same DDP job, with the backward inside DDP.no_sync(): no gradient all-reduce.
communication share = 1 - time(no-sync) / time(ddp): what the all-reduce (and the waiting for the
slower process that it implies) adds to a step. Every job warms up for --warmup steps before
--steps timed steps. Figures are medians over --rounds rounds. Prints a table, then one JSON
object on the last line.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import medians, synchronize  # noqa: E402


def worker(args: argparse.Namespace) -> None:
    """One timed job (or one rank of it): prints {"img_per_s": ...} from rank 0."""
    import torch

    from resnet_cifar.config import TrainConfig
    from resnet_cifar.data.datasets import load_cifar10
    from resnet_cifar.training.assembly import build_run
    from resnet_cifar.training.checkpoint_state import EpochTotals
    from resnet_cifar.training.epoch import train_one_epoch
    from resnet_cifar.utils import distributed
    from resnet_cifar.utils.progress import NoProgress

    launch = distributed.describe_launch()
    dist = distributed.start(launch, args.device, timeout_s=300)
    if not launch.torchrun and args.device == "cpu":
        torch.set_num_threads(args.threads)
    data = load_cifar10(Path(args.data_dir), download=False)
    images = args.batch_size * (args.warmup + args.steps)
    data = replace(data, train=data.train.subset(slice(0, images)))
    config = TrainConfig(model=args.model, batch_size=args.batch_size, device=args.device,
                         precision="fp32" if args.device == "cpu" else "auto", data_dir=args.data_dir, quiet=True)
    parts = build_run(config, data, dist)
    no_sync = parts.ctx.model.no_sync if args.no_sync else contextlib.nullcontext

    def run(first_step: int, steps: int) -> None:
        with no_sync():
            train_one_epoch(parts.ctx, parts.train_loader, 0, first_step, EpochTotals(), steps, lambda: False,
                            NoProgress, epoch_steps=first_step + steps)

    run(0, args.warmup)
    synchronize(parts.device)
    dist.barrier()
    started = time.perf_counter()
    run(args.warmup, args.steps)
    synchronize(parts.device)
    dist.barrier()
    seconds = time.perf_counter() - started
    if dist.is_main:
        print(json.dumps({"img_per_s": args.steps * args.batch_size / seconds,
                          "threads_per_process": torch.get_num_threads()}))
    distributed.stop(dist)


def job(args: argparse.Namespace, kind: str) -> dict:
    common = ["--worker", "--data-dir", args.data_dir, "--model", args.model, "--batch-size", str(args.batch_size),
              "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
              "--device", args.device]
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if kind == "single":
        command = [sys.executable, __file__, *common]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.processes}",
                   __file__, *common, *(["--no-sync"] if kind == "no-sync" else [])]
        if args.device == "cpu":
            # The cores shared among the processes (torchrun's own default is 1 for several).
            env["OMP_NUM_THREADS"] = str(max(1, args.threads // args.processes))
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"{kind} job failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=256, help="global batch")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="CPU threads of the single process")
    parser.add_argument("--processes", type=int, default=None,
                        help="processes of the DDP job (default: --threads on the CPU, 1 on CUDA)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-sync", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.processes is None:
        args.processes = args.threads if args.device == "cpu" else 1
    kinds = ("single", "ddp", "no-sync")
    samples = {kind: [] for kind in kinds}
    for _ in range(args.rounds):
        for kind in kinds:
            samples[kind].append(job(args, kind)["img_per_s"])
    median = medians(samples)
    share = 1 - median["ddp"] / median["no-sync"]
    backend = "gloo" if args.device == "cpu" else "nccl"
    single = f"1 process x {args.threads} threads" if args.device == "cpu" else "1 process, plain"
    print(f"{args.model} on {args.device}, global batch {args.batch_size}, {args.steps} timed steps, "
          f"medians of {args.rounds} rounds")
    print(f"  {single + ':':34s} {median['single']:8.1f} img/s")
    print(f"  {f'{args.processes} process(es), {backend} DDP:':34s} {median['ddp']:8.1f} img/s  "
          f"({median['ddp'] / median['single']:.2f}x the single process)")
    print(f"  {'the same without the all-reduce:':34s} {median['no-sync']:8.1f} img/s  (communication share of a "
          f"DDP step: {100 * share:.1f}%)")
    print(json.dumps({"model": args.model, "device": args.device, "batch_size": args.batch_size,
                      "threads": args.threads, "processes": args.processes,
                      "samples": samples, "median": median, "communication_share": share}))


if __name__ == "__main__":
    main()
