"""Several processes: real torchrun jobs (gloo, world size 2, on the CPU), each under an outer
timeout, and the pieces they rest on (sharded batches, shares, restarts) in process."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import ROOT, synthetic_images, write_batches

from resnet_cifar.config import TrainConfig
from resnet_cifar.data.augmentations import Augmentation
from resnet_cifar.data.datasets import CIFAR10_MEAN, CIFAR10_STD, Split
from resnet_cifar.data.loader import BatchLoader, Normalizer
from resnet_cifar.errors import UserError
from resnet_cifar.results.evaluation import evaluate, load_model
from resnet_cifar.runfiles.checkpoints import load_checkpoint
from resnet_cifar.training.run import check_start, restart_checkpoint
from resnet_cifar.utils import distributed

OUTER_TIMEOUT = 180  # seconds for one torchrun job here; a hang fails the test instead of CI
WORKER = ROOT / "tests" / "ddp_worker.py"


def torchrun_command(*args: str, nproc: int = 2, launcher: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            *launcher, *map(str, args)]


def job_env(**extra: str) -> dict[str, str]:
    # One thread a process, as torchrun would set for several processes (said here to silence its warning).
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def run_job(command: list[str], **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=OUTER_TIMEOUT, cwd=ROOT,
                          env=job_env(**extra_env))


def train_args(data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    """ResNet-20, 256 training images in global batches of 64 (32 a process): 4 steps an epoch."""
    return ["--mode", "train", "--model", "resnet20", "--data-dir", str(data_dir), "--run-dir", str(run_dir),
            "--batch-size", "64", "--quiet", "--no-download", "--precision", "fp32", "--device", "cpu",
            "--dist-timeout", "60", *map(str, extra)]


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory) -> Path:
    """256 training images and an odd-sized test set of 1,001 (shares of 500 and 501)."""
    root = tmp_path_factory.mktemp("odd")
    write_batches(root / "cifar-10-batches-py", n_train=256, n_test=1001)
    return root


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small")
    write_batches(root / "cifar-10-batches-py", n_train=256, n_test=100)
    return root


def succeeded(result: subprocess.CompletedProcess) -> bool:
    if result.returncode != 0:
        print(result.stdout[-3000:], result.stderr[-6000:])
    return result.returncode == 0


# ---------------------------------------------------------------------------------------------
# In process: the global batch split among ranks, evaluation shares, restarts, refusals


def loader_for(split: Split, rank: int, world_size: int, augmentation: Augmentation) -> BatchLoader:
    normalizer = Normalizer(CIFAR10_MEAN, CIFAR10_STD, torch.device("cpu"))
    return BatchLoader(split, 32, torch.device("cpu"), normalizer, False, train=True, seed=3,
                       augmentation=augmentation, rank=rank, world_size=world_size)


@pytest.mark.parametrize("world_size", [2, 3, 4, 7])
@pytest.mark.parametrize("augmentation", [
    Augmentation(),
    Augmentation(pad_mode="reflect", cutout=8, policy="trivialaugment", mixup=0.4, cutmix=1.0),
], ids=["classic", "every-augmentation"])
def test_the_ranks_batches_together_are_the_single_process_batch(augmentation, world_size):
    """Global batches of 32: even shares on 2 and 4 processes, shares of 10, 11 and 11 on 3 and of 4
    and 5 on 7; together, and in rank order, they are the single process's batch (mixing partners included)."""
    images, labels = synthetic_images(128, seed=5)
    split = Split(torch.from_numpy(images), torch.from_numpy(labels))
    single = list(loader_for(split, 0, 1, augmentation).epoch(epoch=1))
    shares = [list(loader_for(split, rank, world_size, augmentation).epoch(epoch=1)) for rank in range(world_size)]
    assert len(single) == 4 and all(len(batches) == 4 for batches in shares)
    sizes = [len(batches[0][1]) for batches in shares]
    assert sum(sizes) == 32 and max(sizes) - min(sizes) <= 1
    for step, (inputs, targets) in enumerate(single):
        assert torch.equal(torch.cat([batches[step][0] for batches in shares]), inputs)
        assert torch.equal(torch.cat([batches[step][1] for batches in shares]), targets)


def test_weighting_each_share_makes_the_averaged_gradient_the_global_batchs():
    """DDP averages the processes' gradients; weighting each process's mean loss by W n_r / B makes
    that average the gradient of the global batch's mean loss, whatever the shares."""
    from types import SimpleNamespace

    from resnet_cifar.training.step import share_weight

    losses = torch.randn(10, dtype=torch.float64)
    world = distributed.Distributed(torchrun=True, active=True, world_size=3)
    ctx = SimpleNamespace(dist=world, global_batch=10)
    bounds = [distributed.shard_bounds(10, rank, 3) for rank in range(3)]
    assert [end - start for start, end in bounds] == [3, 3, 4]
    averaged = sum(share_weight(ctx, end - start) * losses[start:end].mean() for start, end in bounds) / 3
    assert averaged.item() == pytest.approx(losses.mean().item(), rel=1e-12)
    assert share_weight(SimpleNamespace(dist=distributed.Distributed(), global_batch=10), 10) == 1.0
    assert share_weight(SimpleNamespace(dist=distributed.Distributed(torchrun=True, active=True, world_size=2),
                                        global_batch=64), 32) == 1.0


def test_a_resumed_share_replays_the_same_batches():
    images, labels = synthetic_images(128, seed=5)
    split = Split(torch.from_numpy(images), torch.from_numpy(labels))
    loader = loader_for(split, 1, 2, Augmentation(cutout=8))
    full = list(loader.epoch(epoch=2))
    resumed = list(loader.epoch(epoch=2, start_step=2))
    for (a, b), (c, d) in zip(full[2:], resumed, strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)


def test_only_more_processes_than_images_in_a_batch_are_refused():
    images, labels = synthetic_images(64, seed=5)
    split = Split(torch.from_numpy(images), torch.from_numpy(labels))
    normalizer = Normalizer(CIFAR10_MEAN, CIFAR10_STD, torch.device("cpu"))
    with pytest.raises(UserError, match=r"^--batch-size 3 is the global batch and must hold at least one image "
                                        r"for each of the 4 processes; give a batch of 4 or more, or start fewer "
                                        r"processes$"):
        BatchLoader(split, 3, torch.device("cpu"), normalizer, False, train=True, world_size=4)
    assert BatchLoader(split, 30, torch.device("cpu"), normalizer, False, train=True, rank=3, world_size=4).share == 8


def test_evaluation_shares_cover_each_image_once():
    for n, world in ((1001, 2), (10, 3), (7, 8)):
        bounds = [distributed.shard_bounds(n, rank, world) for rank in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
        sizes = [stop - start for start, stop in bounds]
        assert max(sizes) - min(sizes) <= 1


def test_torchrun_environment_is_read_and_a_single_process_needs_none():
    assert distributed.describe_launch({}) == distributed.Distributed()
    launch = distributed.describe_launch({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2",
                                          "TORCHELASTIC_RESTART_COUNT": "2", "TORCHELASTIC_MAX_RESTARTS": "5",
                                          "TORCHELASTIC_RUN_ID": "job7"})
    assert (launch.rank, launch.local_rank, launch.world_size, launch.local_world_size) == (3, 1, 4, 2)
    assert (launch.restart_count, launch.max_restarts, launch.run_id) == (2, 5, "job7")
    assert launch.torchrun and not launch.active
    assert not launch.is_main


def test_under_torchrun_each_process_names_itself_in_its_errors():
    from resnet_cifar.cli.main import rank_prefix

    assert rank_prefix({"RANK": "1", "WORLD_SIZE": "2"}) == "[rank 1] "
    assert rank_prefix({"RANK": "0", "WORLD_SIZE": "1"}) == rank_prefix({}) == rank_prefix({"WORLD_SIZE": "x"}) == ""


def test_only_training_runs_under_torchrun(monkeypatch, capsys):
    from resnet_cifar.cli.main import main as cli_main

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli_main(["--mode", "eval", "--checkpoint", "x.pt"]) == 2
    assert capsys.readouterr().err == ("error: [rank 1] --mode eval runs in one process: start it with python "
                                       "main.py, not torchrun\n")


def test_sync_bn_is_refused_on_the_cpu_and_without_torchrun():
    launch = distributed.describe_launch({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(UserError, match="^--sync-bn needs CUDA: SyncBatchNorm has no CPU kernel; drop --sync-bn "
                                        "on the CPU$"):
        distributed.start(launch, "cpu", 10, sync_bn=True)
    with pytest.raises(UserError, match="^--sync-bn synchronises BatchNorm across processes; launch with torchrun"):
        distributed.start(distributed.Distributed(), "cpu", 10, sync_bn=True)


@pytest.mark.slow
def test_a_restart_resumes_only_its_own_jobs_checkpoint(tmp_path, small_data, capsys):
    from resnet_cifar.cli.main import main as cli_main

    run_dir = tmp_path / "run"
    assert cli_main(train_args(small_data, run_dir, "--epochs", "1")) == 0
    payload = load_checkpoint(run_dir / "last.pt")
    assert payload["elastic_run_id"] is None and payload["world_size"] == 1
    config = TrainConfig(run_dir=str(run_dir))
    restarted = distributed.Distributed(torchrun=True, restart_count=1, max_restarts=1, run_id="job7")
    assert restart_checkpoint(config, restarted) is None  # another job's (here: no job's) run
    first = distributed.Distributed(torchrun=True, restart_count=0, max_restarts=1, run_id=None)
    assert restart_checkpoint(config, first) is None
    with pytest.raises(UserError, match="^torchrun --max-restarts needs --run-dir"):
        check_start(TrainConfig(), set(), None, None, restarted)
    with pytest.raises(UserError, match="^torchrun --max-restarts with --seeds: run one seed per job"):
        check_start(config, set(), None, [0, 1], restarted)
    # The failed first attempt of this job wrote config.json but no checkpoint yet: cleared for a new start.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.json").write_text(json.dumps({"elastic_run_id": "job7"}))
    assert restart_checkpoint(TrainConfig(run_dir=str(fresh)), restarted) is None
    assert not (fresh / "config.json").exists()


# ---------------------------------------------------------------------------------------------
# Real torchrun jobs (deselect with -m "not torchrun")


@pytest.mark.slow
@pytest.mark.torchrun
def test_ranks_stay_identical_and_evaluation_counts_each_image_once(tmp_path, odd_data):
    """Two ranks end with bit-identical parameters and buffers; a second job with the same seed
    ends bit-identical to the first; the distributed evaluation of 1,001 images (shares of 500
    and 501) counts n = 1,001 with exactly the single-process per-class counts; only rank 0
    writes, and its checkpoint gives the DDP model's logits exactly in a single process."""
    outputs = []
    for attempt in ("first", "second"):
        out, run_dir = tmp_path / attempt, tmp_path / f"run-{attempt}"
        result = run_job(torchrun_command(WORKER, out, "--", *train_args(odd_data, run_dir, "--epochs", "1")))
        assert succeeded(result)
        outputs.append([torch.load(out / f"rank{rank}.pt") for rank in range(2)])
    (rank0, rank1), (again0, _) = outputs
    for name, tensor in rank0["state"].items():
        assert torch.equal(tensor, rank1["state"][name]), name
        assert torch.equal(tensor, again0["state"][name]), name
    assert rank0["n"] == rank1["n"] == 1001
    # One epoch: config.json, then the epoch's metrics row, curves and last.pt, then the report.
    assert rank0["writes"] == ["config", "metrics", "curves", "checkpoint", "report"]
    assert rank1["writes"] == []

    run_dir = tmp_path / "run-first"
    payload = load_checkpoint(run_dir / "last.pt")
    model = load_model(payload, run_dir / "last.pt").eval()
    from resnet_cifar.data.datasets import load_cifar10

    test = load_cifar10(odd_data, download=False).test
    normalizer = Normalizer(CIFAR10_MEAN, CIFAR10_STD, torch.device("cpu"))
    single = evaluate(model, BatchLoader(test, 256, torch.device("cpu"), normalizer, False, train=False),
                      torch.device("cpu"), "fp32", 10)
    assert single.n == 1001 and single.per_class_correct == rank0["correct"]
    # The final report is built from the last epoch's logits, gathered from both shares in order.
    report = json.loads((run_dir / "report" / "report.json").read_text())
    counts = report["confusion_matrix"]["counts"]
    assert report["n"] == 1001 and [counts[i][i] for i in range(10)] == single.per_class_correct
    assert [sum(row) for row in counts] == single.per_class_total
    with torch.no_grad():
        assert torch.equal(model(normalizer(test.images[:64], False)), rank0["logits"])
    assert payload["world_size"] == 2
    assert len((run_dir / "metrics.csv").read_text().strip().splitlines()) == 2  # header + one epoch, once
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "curves.png", "last.pt", "metrics.csv",
                                                         "report"]


@pytest.mark.slow
@pytest.mark.torchrun
@pytest.mark.parametrize(("processes", "batch"), [(2, 64), (3, 10)], ids=["2-equal-shares", "3-shares-of-3-3-4"])
def test_without_batchnorm_ddp_matches_one_process_with_the_global_batch(tmp_path, small_data, processes, batch):
    """DDP averages the shares' gradients, each share's mean loss weighted by its size: the global
    batch's mean gradient, with equal shares (64 on 2) or not (10 on 3: shares of 3, 3 and 4).
    Without BatchNorm the runs differ only in summation order: allclose at atol 1e-6, rtol 1e-5
    after 4 steps at lr 0.02 (the largest difference seen here was 6e-8; after one step 4e-8).
    Training amplifies such differences: at lr 0.1 they reached 1e-5 after 6 steps. A ResNet would
    not match at all: BatchNorm normalises each process's share with its own statistics."""
    common = ("--max-steps", "4", "--lr", "0.02", "--batch-size", str(batch))
    args = train_args(small_data, tmp_path / "run-ddp", *common)
    assert succeeded(run_job(torchrun_command(WORKER, tmp_path / "ddp", "--toy", "--", *args, nproc=processes)))
    args = train_args(small_data, tmp_path / "run-single", *common)
    assert succeeded(run_job([sys.executable, str(WORKER), str(tmp_path / "single"), "--toy", "--", *args]))
    single = torch.load(tmp_path / "single" / "rank0.pt")
    for rank in range(processes):
        ddp = torch.load(tmp_path / "ddp" / f"rank{rank}.pt")
        for name, tensor in single["state"].items():
            assert not torch.equal(tensor, initial_toy_weights()[name]), name  # it trained
            torch.testing.assert_close(ddp["state"][name], tensor, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.torchrun
def test_a_three_process_checkpoint_resumes_on_two(tmp_path, small_data):
    run_dir = tmp_path / "run"
    first = run_job(torchrun_command("main.py", *train_args(small_data, run_dir, "--batch-size", "10", "--epochs",
                                                            "2", "--max-steps", "30"), nproc=3))
    assert succeeded(first)
    assert "3 processes (gloo, global batch 10: 1 x 4 + 2 x 3)" in first.stdout
    payload = load_checkpoint(run_dir / "last.pt")
    assert (payload["world_size"], payload["global_step"], payload["epoch"], payload["step"]) == (3, 30, 1, 5)
    resumed = run_job(torchrun_command("main.py", *train_args(small_data, run_dir, "--resume", run_dir / "last.pt",
                                                              "--batch-size", "10"), nproc=2))
    assert succeeded(resumed)
    payload = load_checkpoint(run_dir / "last.pt")
    assert (payload["world_size"], payload["global_step"], payload["epoch"]) == (2, 50, 2)
    assert len((run_dir / "metrics.csv").read_text().strip().splitlines()) == 3


@pytest.mark.slow
@pytest.mark.torchrun
def test_a_time_budget_is_decided_once_for_every_process(tmp_path, small_data):
    """Under torchrun every process measures (the steps are collective) and rank 0's plan is
    everyone's: one line, one recorded length, and the processes train the same steps."""
    run_dir = tmp_path / "run"
    result = run_job(torchrun_command("main.py", *train_args(small_data, run_dir, "--time-budget", "40s",
                                                             "--max-steps", "6"), nproc=2))
    assert succeeded(result)
    lines = [line for line in result.stdout.splitlines() if line.startswith("time budget 40s: ")]
    assert len(lines) == 1
    steps = int(lines[0].split(": ")[1].split(" steps")[0].replace(",", ""))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["iterations"] == steps and config["time_budget"] == "40s" and config["world_size"] == 2
    assert load_checkpoint(run_dir / "last.pt")["global_step"] == min(6, steps)


def initial_toy_weights() -> dict[str, torch.Tensor]:
    """The toy model as build_run creates it for --seed 0."""
    from ddp_worker import toy_model

    torch.manual_seed(0)
    return toy_model("toy", 10).state_dict()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, small_data) -> Path:
    """A finished 4-epoch DDP run through main.py, to compare resumed runs with."""
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    assert succeeded(run_job(torchrun_command("main.py", *train_args(small_data, run_dir, "--epochs", "4"))))
    return run_dir


def assert_same_weights(run_dir: Path, reference: Path) -> None:
    mine, theirs = load_checkpoint(run_dir / "last.pt"), load_checkpoint(reference / "last.pt")
    assert mine["finished"] and mine["epoch"] == theirs["epoch"]
    for name, tensor in theirs["model_state"].items():
        assert torch.equal(mine["model_state"][name], tensor), name


@pytest.mark.slow
@pytest.mark.torchrun
def test_sigterm_saves_once_and_the_resumed_job_equals_the_uninterrupted_one(tmp_path, small_data, uninterrupted):
    run_dir = tmp_path / "run"
    job = subprocess.Popen(torchrun_command("main.py", *train_args(small_data, run_dir, "--epochs", "4")),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=job_env())
    try:
        deadline = time.monotonic() + OUTER_TIMEOUT
        while not (run_dir / "last.pt").exists() and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        job.send_signal(signal.SIGTERM)  # to torchrun, which forwards it to both workers
        out, err = job.communicate(timeout=OUTER_TIMEOUT)
    finally:
        job.kill()
    # torchrun reports a worker that exited 143 as a failure: exit 1, not 143.
    assert job.returncode == 1, err[-3000:]
    assert err.count("SIGTERM: stopped after saving") == 1, err[-3000:]
    assert f"resume with: torchrun --standalone --nproc-per-node=2 main.py --mode train --resume {run_dir}" in err
    payload = load_checkpoint(run_dir / "last.pt")
    assert not payload["finished"]
    result = run_job(torchrun_command("main.py", *train_args(small_data, run_dir, "--resume", run_dir / "last.pt")))
    assert succeeded(result)
    assert_same_weights(run_dir, uninterrupted)


@pytest.mark.slow
@pytest.mark.torchrun
def test_a_killed_rank_ends_the_job_promptly_naming_the_rank(tmp_path, small_data):
    started = time.monotonic()
    result = run_job(torchrun_command("main.py", *train_args(small_data, tmp_path / "run", "--epochs", "4")),
                     RESNET_CIFAR_TEST_FAULT="1:3:kill")
    assert result.returncode != 0
    assert time.monotonic() - started < 60  # well inside --dist-timeout: torchrun stops the survivor
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)", result.stderr), result.stderr[-3000:]
    assert "SIGKILL" in result.stderr


@pytest.mark.slow
@pytest.mark.torchrun
def test_with_max_restarts_a_crashed_job_resumes_from_its_checkpoint(tmp_path, small_data, uninterrupted):
    run_dir = tmp_path / "run"
    # Rank 1 raises at its 7th step check: in epoch 2, after epoch 1's checkpoint.
    result = run_job(torchrun_command("main.py", *train_args(small_data, run_dir, "--epochs", "4"),
                                      launcher=("--max-restarts=1",)), RESNET_CIFAR_TEST_FAULT="1:7:raise")
    assert succeeded(result)
    assert "fault injected on rank 1" in result.stderr
    assert f"torchrun restart 1: resuming from {run_dir / 'last.pt'}" in result.stdout
    assert_same_weights(run_dir, uninterrupted)


@pytest.mark.slow
@pytest.mark.torchrun
def test_a_ddp_checkpoint_resumes_in_one_process_with_the_same_global_batch(tmp_path, small_data, uninterrupted,
                                                                            capsys):
    """The data order depends on the global batch only, so another number of processes continues
    the same data stream from an epoch boundary (BatchNorm then sees 64 images a step, not 32)."""
    import shutil

    from resnet_cifar.cli.main import main as cli_main

    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, run_dir)
    assert cli_main(train_args(small_data, run_dir, "--resume", run_dir / "last.pt", "--epochs", "5")) == 0
    assert "resumed resnet20 from epoch 5, step 0" in capsys.readouterr().out
    payload = load_checkpoint(run_dir / "last.pt")
    assert (payload["epoch"], payload["world_size"]) == (5, 1)
    assert len((run_dir / "metrics.csv").read_text().strip().splitlines()) == 6
