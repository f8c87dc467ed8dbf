"""Start-up time: from the command to the end of the first training step.

    python bench/startup.py --model resnet18 --data-dir data/cifar10-jpeg

Runs `main.py --max-steps 1` twice: cold (the image-folder cache removed first, so every image is
decoded) and warm (cache present). The figure is the wall time of the whole command, which after
its first step also writes a checkpoint: an upper bound on "command to first step". The time at
which last.pt appeared (its mtime) is reported too, closer to the end of the step itself.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from resnet_cifar.data.image_folders import cache_path  # noqa: E402


def run_once(model: str, data_dir: str, run_dir: str) -> dict:
    command = [sys.executable, "main.py", "--model", model, "--data-dir", data_dir, "--no-download",
               "--max-steps", "1", "--run-dir", run_dir, "--quiet"]
    launched = time.time()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - launched
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    checkpoint_written = os.stat(os.path.join(run_dir, "last.pt")).st_mtime - launched
    return {"checkpoint_written_s": round(checkpoint_written, 2), "command_s": round(wall, 2)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--data-dir", required=True)
    args = parser.parse_args(argv)
    cache = cache_path(Path(args.data_dir), None)
    report = {"model": args.model}
    with tempfile.TemporaryDirectory() as tmp:
        if cache.exists():
            cache.unlink()
        report["cold"] = run_once(args.model, args.data_dir, os.path.join(tmp, "cold"))
        report["cached"] = run_once(args.model, args.data_dir, os.path.join(tmp, "warm"))
    for name in ("cold", "cached"):
        print(f"{name:<7} whole command {report[name]['command_s']:.2f} s, "
              f"checkpoint after step 1 written at {report[name]['checkpoint_written_s']:.2f} s")
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
