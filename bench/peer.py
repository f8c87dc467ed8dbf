"""Run a published speed-run script on this machine's CPU, side by side with this trainer.

    python bench/peer.py NAME DATA_DIR [--epochs E] [--runs N] [--source FILE] [--work DIR] [--dry-run]

NAME: speedrun (hiverge/cifar10-speedrun's cifar10_speedrun.py); airbench94_muon, or airbench94,
airbench95 or airbench96 from legacy/ (KellerJordan/cifar10-airbench). The script is downloaded
from GitHub at the commit pinned below (or read from --source, a copy of that file) and its
SHA-256 checked, so every figure quoted from it can be rerun by anyone. DATA_DIR holds
cifar-10-batches-py/ (the official layout, or the benchmark copy made by bench/make_jpeg_copy.py);
the images are written once as the scripts' own train.pt/test.pt in --work.

The scripts are written for a CUDA GPU; the patch changes only what a CPU needs, each change
listed in PATCHES with its reason, and fails naming the first text it no longer finds:
- CUDA calls become CPU ones (device "cpu", no pinned memory, perf_counter for CUDA events,
  no synchronize, empty_cache or sleep);
- fp16 weights become fp32 weights under bfloat16 autocast (a CPU has no fast fp16; this
  trainer trains the same way), and Muon's Newton-Schulz runs in bfloat16 as this trainer's;
- torch.compile is left out (this trainer runs eagerly on a CPU unless --compile is given;
  compiling the script's graphs for a CPU takes minutes a run);
- the warm-up run on random data is left out (it warms up compilation and cuDNN, which a CPU
  run without compile does not have), and the script trains --runs runs (its own: 200 or 25),
  each of --epochs epochs when given.
The patched script is written to --work/NAME_cpu.py and run there, printing as the original does.
"""
from __future__ import annotations

import argparse
import hashlib
import pickle
import re
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CPU_PRELUDE = '''import time as _time
import torch as _torch


class _CpuEvent:
    """torch.cuda.Event's timing on a CPU: record() notes the time, elapsed_time() gives ms."""

    def __init__(self, enable_timing=True):
        self.at = None

    def record(self):
        self.at = _time.perf_counter()

    def elapsed_time(self, end):
        return 1e3 * (end.at - self.at)


_torch.cuda.Event = _CpuEvent
_torch.cuda.synchronize = lambda *args: None
_torch.cuda.empty_cache = lambda: None
_torch.cuda._sleep = lambda cycles: None
_torch.nn.Module.cuda = lambda self, *args, **kwargs: self
'''


@dataclass(frozen=True)
class Peer:
    repo: str
    commit: str
    path: str
    sha256: str
    patches: tuple[tuple[str, str, str], ...]  # (text, replacement, why), each replacing every occurrence
    length: tuple[str, str]  # the script's text of its length, and that text with {epochs} for --epochs
    runs: tuple[str, str]  # its loop over runs, and that loop with {runs} for --runs

    @property
    def url(self) -> str:
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/{self.path}"


NO_COMPILE = ("torch.compile is left out: this trainer runs eagerly on a CPU")
FP32_WEIGHTS = "fp32 weights under bf16 autocast: a CPU has no fast fp16"
AUTOCAST = '    @torch.autocast("cpu", dtype=torch.bfloat16)\n'
LOSS_FP32 = "the loss of the bf16 logits in fp32, as autocast computes it"

# The changes the legacy airbench scripts (airbench94.py, airbench95.py, airbench96.py) need.
LEGACY_AIRBENCH_PATCHES = (
    ("map_location=torch.device(gpu)", 'map_location=torch.device("cpu")', "the CPU"),
    ("net = net.half().cuda()", "net = net.float()", FP32_WEIGHTS),
    ("self.images.half()", "self.images.float()", FP32_WEIGHTS),
    ("outputs = model(inputs)",
     'with torch.autocast("cpu", dtype=torch.bfloat16): outputs = model(inputs)', FP32_WEIGHTS),
    ("loss = loss_fn(outputs, labels)", "loss = loss_fn(outputs.float(), labels)", LOSS_FP32),
    ("with torch.no_grad():", 'with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):',
     FP32_WEIGHTS),
)


def legacy_airbench(name: str, sha256: str, epochs: str) -> Peer:
    """KellerJordan/cifar10-airbench's legacy/NAME.py: the scripts share one form, so one patch."""
    return Peer(repo="KellerJordan/cifar10-airbench", commit="f1c599c4af24aca803e3e65a6a7e52a502e09d0e",
                path=f"legacy/{name}.py", sha256=sha256, patches=LEGACY_AIRBENCH_PATCHES,
                length=(f"'train_epochs': {epochs},", "'train_epochs': {epochs},"),
                runs=("for run in range(25)]", "for run in range({runs})]"))


PEERS = {
    "speedrun": Peer(
        repo="hiverge/cifar10-speedrun", commit="5cd49b1e586f473b535cdeee69fe8ad5b6e9618b",
        path="cifar10_speedrun.py", sha256="d1e1f6991cc3e1758c0bbc0e728c86a4b3119dd42a9233075b2edb9735d0ba91",
        patches=(
            ("@torch.compile(fullgraph=True)\n", "", NO_COMPILE),
            ("@torch.compile()\n", "", NO_COMPILE),
            ('@torch.compile(mode="max-autotune", fullgraph=True)\n', "", NO_COMPILE),
            ('model.compile(mode="max-autotune")', "pass", NO_COMPILE),
            ('main("warmup", model)', "pass", "the warm-up run only warms up compilation"),
            ('torch.device("cuda")', 'torch.device("cpu")', "the CPU"),
            ('device="cuda"', 'device="cpu"', "the CPU"),
            (".pin_memory()", "", "pinned memory needs CUDA"),
            (".half()", ".float()", FP32_WEIGHTS),
            ("dtype=torch.half", "dtype=torch.float", FP32_WEIGHTS),
            ('["momentum_buffer_dtype"] = torch.half', '["momentum_buffer_dtype"] = torch.float', FP32_WEIGHTS),
            ('group["momentum_buffer_dtype"] == torch.half', 'group["momentum_buffer_dtype"] == torch.float',
             FP32_WEIGHTS),
            ("    def forward(self, x, whiten_bias_grad=True):",
             AUTOCAST + "    def forward(self, x, whiten_bias_grad=True):",
             FP32_WEIGHTS),
            ("F.cross_entropy(outputs, labels", "F.cross_entropy(outputs.float(), labels", LOSS_FP32),
            ("X = torch.stack(grad_list)", "X = torch.stack(grad_list).bfloat16()",
             "Newton-Schulz in bf16, as the original's fp16"),
            ("orthogonalized_g_reshaped.view(\n            original_shape\n        )",
             "orthogonalized_g_reshaped.view(\n            original_shape\n        ).float()",
             "the bf16 update back to the fp32 weights"),
        ),
        length=("ceil(7.59 * len(train_loader))", "ceil({epochs} * len(train_loader))"),
        runs=("for run in range(200):", "for run in range({runs}):")),
    "airbench94_muon": Peer(
        repo="KellerJordan/cifar10-airbench", commit="f1c599c4af24aca803e3e65a6a7e52a502e09d0e",
        path="airbench94_muon.py", sha256="704e29251a5207d8aed8a35adf13f772ff386b90a712aaddc2a28854385b536e",
        patches=(
            ("@torch.compile\n", "", NO_COMPILE),
            ('model.compile(mode="max-autotune")', "pass", NO_COMPILE),
            ('main("warmup", model)', "pass", "the warm-up run only warms up compilation"),
            ('torch.device("cuda")', 'torch.device("cpu")', "the CPU"),
            (".half()", ".float()", FP32_WEIGHTS),
            ("    def forward(self, x, whiten_bias_grad=True):",
             AUTOCAST + "    def forward(self, x, whiten_bias_grad=True):", FP32_WEIGHTS),
            ("F.cross_entropy(outputs, labels", "F.cross_entropy(outputs.float(), labels", LOSS_FP32),
        ),
        length=("ceil(8 * len(train_loader))", "ceil({epochs} * len(train_loader))"),
        runs=("for run in range(200)]", "for run in range({runs})]")),
    "airbench94": legacy_airbench("airbench94", "0b155e0ff0e696bc01ae136654ddae88a24cd053cd2b4313d44548c29ed6c91d",
                                  "9.9"),
    # airbench94.py with wider groups, lr 10 and 15 epochs.
    "airbench95": legacy_airbench("airbench95", "8fca347ff6e17dae2e34501724c3ddd901d620ed9f6b2d04d5d1b339488a59ee",
                                  "15"),
    # Three convolutions a group, cutout and 37 epochs.
    "airbench96": legacy_airbench("airbench96", "fef298f48d9b629a6454b9c5e84cca95ccfa7fc6450057cc4131811d2ed49c88",
                                  "37.0"),
}


def fetch(peer: Peer, source: Path | None, cache: Path) -> str:
    """The script's text, from source or downloaded into cache, checked against the pinned SHA-256."""
    if source is None:
        source = cache / f"{peer.commit[:7]}-{Path(peer.path).name}"
        if not source.exists():
            cache.mkdir(parents=True, exist_ok=True)
            with urllib.request.urlopen(peer.url, timeout=60) as response:
                source.write_bytes(response.read())
    data = source.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != peer.sha256:
        raise SystemExit(f"{source}: SHA-256 {digest} is not the pinned {peer.sha256} ({peer.url})")
    return data.decode()


def patched(peer: Peer, text: str, epochs: float | None, runs: int) -> str:
    """The script with every patch applied; SystemExit naming the first text it does not find."""
    edits = [*peer.patches, (peer.runs[0], peer.runs[1].format(runs=runs), "--runs")]
    if epochs is not None:
        edits.append((peer.length[0], peer.length[1].format(epochs=epochs), "--epochs"))
    for old, new, why in edits:
        # A whole line removed (a decorator) goes with its indentation.
        pattern = re.compile(("(?m)^[ \t]*" if old.endswith("\n") and not new else "") + re.escape(old))
        if not pattern.search(text):
            raise SystemExit(f"{peer.path} at {peer.commit[:7]} no longer holds {old!r} (patched for: {why})")
        text = pattern.sub(lambda _, new=new: new, text)
    return CPU_PRELUDE + text


def write_tensors(data_dir: Path, work: Path) -> None:
    """The scripts' own data files (cifar10/train.pt, test.pt: uint8 NHWC images, labels, classes)
    from the official batch layout, so the scripts download nothing."""
    import numpy as np
    import torch

    target = work / "cifar10"
    if (target / "train.pt").exists() and (target / "test.pt").exists():
        return
    batches = data_dir / "cifar-10-batches-py"
    meta = pickle.loads((batches / "batches.meta").read_bytes(), encoding="latin1")
    target.mkdir(parents=True, exist_ok=True)
    for name, files in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        parts = [pickle.loads((batches / f).read_bytes(), encoding="latin1") for f in files]
        images = np.concatenate([p["data"] for p in parts]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.concatenate([p["labels"] for p in parts])
        torch.save({"images": torch.tensor(images), "labels": torch.tensor(labels),
                    "classes": list(meta["label_names"])}, target / f"{name}.pt")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(PEERS))
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--epochs", type=float, default=None, help="default: the script's own")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--source", type=Path, default=None, help="a copy of the script at the pinned commit")
    parser.add_argument("--work", type=Path, default=Path("peer-runs"))
    parser.add_argument("--dry-run", action="store_true", help="write the patched script, do not run it")
    args = parser.parse_args(argv)
    peer = PEERS[args.name]
    text = patched(peer, fetch(peer, args.source, args.work / "sources"), args.epochs, args.runs)
    args.work.mkdir(parents=True, exist_ok=True)
    script = args.work / f"{args.name}_cpu.py"
    script.write_text(text)
    print(f"{peer.url} patched for a CPU: {script}")
    if args.dry_run:
        return 0
    write_tensors(args.data_dir, args.work)
    return subprocess.call([sys.executable, script.name], cwd=args.work)


if __name__ == "__main__":
    sys.exit(main())
