"""Checkpoint files: atomic and verified writes, background writes, safe loading, damaged and foreign files."""
import os
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from helpers import ROOT, python, run_cli, tiny_train_args

from resnet_cifar.errors import UserError
from resnet_cifar.runfiles import checkpoints
from resnet_cifar.runfiles.checkpoints import load_checkpoint, read_checkpoint, save_checkpoint
from resnet_cifar.utils import rng
from resnet_cifar.utils.atomic_files import WriteError

KILL_WRITER = """
import sys, torch
from resnet_cifar.runfiles.checkpoints import read_checkpoint, save_checkpoint
payload = read_checkpoint(sys.argv[1])
payload["padding"] = torch.randn(64, 1024, 1024)  # 256 MiB: each write takes a while
print("writing", flush=True)
while True:
    save_checkpoint(sys.argv[1], payload)
"""


@pytest.mark.slow
def test_sigkill_during_write_leaves_previous_checkpoint_and_resume_cleans_up(batches_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_cli(capsys, *tiny_train_args(batches_dir, run_dir, "--epochs", "1"))[0] == 0
    path = run_dir / "last.pt"
    before = path.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", KILL_WRITER, str(path)], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"writing"
        deadline = time.time() + 60
        while not list(run_dir.glob(".last.pt.tmp-*")) and time.time() < deadline:
            time.sleep(0.005)
        assert list(run_dir.glob(".last.pt.tmp-*")), "the writer never started a temporary file"
        proc.kill()
    finally:
        proc.kill()
        proc.wait()
    # Either the old file, or (if a whole write finished first) a complete new one: never a mix.
    if path.read_bytes() != before:
        assert read_checkpoint(path)["padding"].shape == (64, 1024, 1024)
    assert read_checkpoint(path)["epoch"] == 1
    assert list(run_dir.glob(".last.pt.tmp-*"))  # the killed writer's partial file is still there
    code, _, err = run_cli(capsys, "--resume", path, "--epochs", "2", "--quiet")
    assert code == 0, err
    assert not list(run_dir.glob(".*.tmp-*"))
    assert read_checkpoint(path)["epoch"] == 2


@pytest.mark.parametrize("mode", ["foreground", "background"])
@pytest.mark.slow
def test_disk_full_reports_and_keeps_previous(tmp_path, mode):
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model_state": {"w": torch.ones(3)}})
    before = path.read_bytes()
    result = python("-c", DISK_FULL_WRITER, str(path), mode)
    assert result.stdout.strip() == f"cannot write {path}: File too large; its previous version is intact"
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


def test_a_background_write_saves_the_payload_as_it_was_when_saved(tmp_path):
    weights = torch.ones(1000)
    payload = {"model_state": {"w": weights}, "optimizer_state": {"state": {0: {"m": weights * 2}}}, "epoch": 3}
    with checkpoints.CheckpointWriter(background=True) as writer:
        writer.save(tmp_path / "last.pt", payload)
        weights.add_(1)  # training goes on while the file is written
        payload["epoch"] = 4
    saved = read_checkpoint(tmp_path / "last.pt")
    assert torch.equal(saved["model_state"]["w"], torch.ones(1000)) and saved["epoch"] == 3
    assert torch.equal(saved["optimizer_state"]["state"][0]["m"], torch.full((1000,), 2.0))
    save_checkpoint(tmp_path / "foreground.pt", {**payload, "epoch": 3, "model_state": {"w": torch.ones(1000)}})
    assert read_checkpoint(tmp_path / "foreground.pt")["sha256"] == saved["sha256"]


def test_a_failed_background_write_is_raised_by_wait_unless_the_run_already_failed(tmp_path):
    missing = tmp_path / "no-such-folder" / "last.pt"
    writer = checkpoints.CheckpointWriter(background=True)
    writer.save(missing, {"model_state": {}})
    with pytest.raises(WriteError, match=f"^cannot write {missing}: its folder {missing.parent} does not exist"):
        writer.wait()
    writer.wait()  # raised once
    with pytest.raises(KeyError):  # the run's own error wins over the write's
        with checkpoints.CheckpointWriter(background=True) as failing:
            failing.save(missing, {"model_state": {}})
            raise KeyError("the run failed")


def test_rng_state_round_trips_through_a_safe_checkpoint(tmp_path):
    import random

    import numpy as np

    state = rng.capture_rng_state()
    save_checkpoint(tmp_path / "rng.pt", {"model_state": {}, "rng": state})
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    rng.restore_rng_state(read_checkpoint(tmp_path / "rng.pt")["rng"])
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("force_unsafe_env", [False, True], ids=["plain", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"])
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_code_in_a_checkpoint_never_runs(tmp_path, monkeypatch, force_unsafe_env, zip_format):
    if force_unsafe_env:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model_state": Exploit(marker)}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(UserError, match="refusing to load .*could run code"):
        read_checkpoint(path)
    assert not marker.exists()


def test_legacy_full_model_pickle_is_refused_with_reason(tmp_path, capsys):
    from resnet_cifar.models.registry import modeltype

    path = tmp_path / "model.pt"
    torch.save(modeltype("resnet20"), path)  # the whole nn.Module, as some repos save
    code, _, err = run_cli(capsys, "--mode", "eval", "--checkpoint", path)
    assert code == 2 and "holds Python objects that could run code" in err


def flip_one_bit_in_largest_tensor(path: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        entry = max(archive.infolist(), key=lambda info: info.file_size)
    with open(path, "r+b") as f:
        f.seek(entry.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", f.read(4))
        position = entry.header_offset + 30 + name_length + extra_length + entry.file_size // 2
        f.seek(position)
        byte = f.read(1)[0]
        f.seek(position)
        f.write(bytes([byte ^ 0x10]))


def test_a_flipped_bit_is_detected(tmp_path, capsys):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model_state": {"w": torch.randn(1000)}, "model_name": "resnet20"})
    flip_one_bit_in_largest_tensor(path)
    with pytest.raises(UserError, match="failed its integrity check"):
        read_checkpoint(path)


def test_newer_checkpoint_format_is_refused(tmp_path):
    path = tmp_path / "future.pt"
    save_checkpoint(path, {"model_state": {}})
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    payload["sha256"] = checkpoints.checksum(payload)
    torch.save(payload, path)
    with pytest.raises(UserError, match="format version 99, newer than this program's 1"):
        read_checkpoint(path)


def make_bad_checkpoint(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.pt"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        import random

        path.write_bytes(random.Random(0).randbytes(4096))
    elif kind == "truncated":
        save_checkpoint(path, {"model_state": {"w": torch.randn(10000)}})
        path.write_bytes(path.read_bytes()[:20000])
    return path


@pytest.mark.parametrize("kind,message", [
    ("missing", "does not exist"),
    ("directory", "is a directory"),
    ("empty", "is empty"),
    ("random", "not a valid checkpoint"),
    ("truncated", "not a valid checkpoint (truncated or corrupted"),
])
def test_bad_checkpoint_files(tmp_path, capsys, kind, message):
    path = make_bad_checkpoint(kind, tmp_path)
    if kind == "random":  # many random files: some parse as pickle opcodes, all must be rejected
        import random

        for seed in range(30):
            (tmp_path / "r.pt").write_bytes(random.Random(seed).randbytes(4096))
            with pytest.raises(UserError, match="not a valid checkpoint"):
                read_checkpoint(tmp_path / "r.pt")
    for args in (["--mode", "eval", "--checkpoint", path], ["--resume", path]):
        code, _, err = run_cli(capsys, *args)
        assert code == 2 and message in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_checkpoint_of_another_architecture_or_class_count(batches_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_cli(capsys, *tiny_train_args(batches_dir, run_dir, "--epochs", "1"))[0] == 0
    last = run_dir / "last.pt"
    code, _, err = run_cli(capsys, "--mode", "eval", "--checkpoint", last, "--model", "resnet18")
    assert code == 2 and "--model resnet18 does not match the checkpoint's model resnet20" in err
    payload = load_checkpoint(last)
    payload["model_name"] = "resnet32"
    save_checkpoint(tmp_path / "relabelled.pt", payload)
    code, _, err = run_cli(capsys, "--mode", "eval", "--checkpoint", tmp_path / "relabelled.pt")
    assert code == 2 and "does not hold resnet32 weights" in err
    payload = load_checkpoint(last)
    payload["num_classes"], payload["classes"] = 5, payload["classes"][:5]
    payload["model_state"]["fc.weight"] = payload["model_state"]["fc.weight"][:5]
    payload["model_state"]["fc.bias"] = payload["model_state"]["fc.bias"][:5]
    save_checkpoint(tmp_path / "five.pt", payload)
    code, _, err = run_cli(capsys, "--mode", "eval", "--checkpoint", tmp_path / "five.pt")
    assert code == 2 and "has 10 classes but the checkpoint's resnet20 has 5" in err


@pytest.mark.slow
def test_module_prefixed_state_dict_gives_the_same_logits(batches_dir, tmp_path, capsys):
    from resnet_cifar.results.evaluation import load_model

    run_dir = tmp_path / "run"
    assert run_cli(capsys, *tiny_train_args(batches_dir, run_dir, "--epochs", "1"))[0] == 0
    payload = load_checkpoint(run_dir / "last.pt")
    plain = load_model(payload, run_dir / "last.pt").eval()
    payload["model_state"] = {f"module.{k}": v for k, v in payload["model_state"].items()}
    save_checkpoint(tmp_path / "ddp.pt", payload)
    prefixed = load_model(load_checkpoint(tmp_path / "ddp.pt"), tmp_path / "ddp.pt").eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(plain(x), prefixed(x))


DISK_FULL_WRITER = """
import resource, signal, sys, torch
from resnet_cifar.runfiles.checkpoints import CheckpointWriter
from resnet_cifar.errors import UserError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
writer = CheckpointWriter(background=sys.argv[2] == "background")
try:
    writer.save(sys.argv[1], {"model_state": {"w": torch.randn(1_000_000)}})
    writer.wait()
except UserError as e:
    print(e)
"""
