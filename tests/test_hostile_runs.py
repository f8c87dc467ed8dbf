"""Runs a hostile or clumsy user starts: two processes into one folder, a stop before the first
checkpoint, a --seeds set cut off, a resume through another spelling, the API in a live process.
Nothing already saved changes; every state left behind can be finished."""
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT, python, run_cli, snapshot, tiny_train_args

from resnet_cifar import api
from resnet_cifar.runfiles.checkpoints import load_checkpoint

pytestmark = pytest.mark.slow  # every test here trains


@pytest.fixture(scope="module")
def finished(module_batches, tmp_path_factory) -> Path:
    """A finished 2-epoch run with a validation split (so best.pt)."""
    from resnet_cifar.cli.main import main

    run_dir = tmp_path_factory.mktemp("finished") / "runs" / "R"
    assert main([str(a) for a in tiny_train_args(module_batches, run_dir, "--val-size", "30")]) == 0
    return run_dir


def test_a_resume_into_another_spelling_of_its_own_run_is_refused(finished, module_batches, capsys, monkeypatch):
    monkeypatch.chdir(finished.parent.parent)
    before = snapshot(finished)
    code, out, err = run_cli(capsys, "--resume", "runs/R/best.pt", "--run-dir", "runs/nope/../R", "--epochs", "3")
    assert code == 2 and err.count("\n") == 1 and "is the run that best.pt comes from" in err, err
    assert snapshot(finished) == before and not (finished.parent / "nope").exists()


def test_a_link_named_last_pt_to_a_best_pt_continues_as_a_new_run(finished, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    link = tmp_path / "elsewhere" / "last.pt"
    link.parent.mkdir()
    link.symlink_to(finished / "best.pt")
    before = snapshot(finished)
    code, out, err = run_cli(capsys, "--resume", link, "--run-dir", tmp_path / "fork", "--max-steps", "9")
    assert code == 0, err
    assert "is not its run's latest checkpoint" in out
    assert snapshot(finished) == before
    assert json.loads((tmp_path / "fork" / "config.json").read_text())["resumed_from"]["checkpoint"] == \
        str((finished / "best.pt").resolve())


def test_two_processes_racing_for_one_folder_leave_one_run(module_batches, tmp_path):
    run_dir = tmp_path / "race"
    commands = [[sys.executable, "main.py", *map(str, tiny_train_args(module_batches, run_dir, "--seed", str(seed),
                                                                      "--max-steps", "4", "--threads", "1"))]
                for seed in (1, 2)]
    procs = [subprocess.Popen(c, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in commands]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert loser.count("\n") == 1 and ("is in use by another run (process" in loser or "already holds a run" in loser)
    recorded = json.loads((run_dir / "config.json").read_text())["seed"]
    assert load_checkpoint(run_dir / "last.pt")["config"]["seed"] == recorded
    assert not (run_dir / ".lock").exists()


SIGINT_AFTER_CONFIG = """
import os, signal, sys
from resnet_cifar.runfiles import run_files
from resnet_cifar.cli.main import main
real = run_files.write_config
def write_config(path, config):
    real(path, config)
    os.kill(os.getpid(), signal.SIGINT)  # the moment config.json appears
run_files.write_config = write_config
sys.exit(main(sys.argv[1:]))
"""


def test_a_stop_as_the_first_file_appears_leaves_a_run_that_resumes(module_batches, tmp_path):
    run_dir = tmp_path / "run"
    stopped = python("-c", SIGINT_AFTER_CONFIG, *map(str, tiny_train_args(module_batches, run_dir, "--epochs", "1")))
    assert stopped.returncode == 130, stopped.stderr
    assert "SIGINT: stopped after saving" in stopped.stderr and (run_dir / "last.pt").exists()
    resumed = python("main.py", "--resume", str(run_dir / "last.pt"))
    assert resumed.returncode == 0, resumed.stderr


def test_a_start_that_crashed_before_its_checkpoint_can_be_run_again(module_batches, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"model": "resnet20"}')  # what a killed start leaves
    (run_dir / "metrics.csv").write_text("epoch\n")
    code, out, err = run_cli(capsys, *tiny_train_args(module_batches, run_dir, "--max-steps", "2"))
    assert code == 0 and "holds a start that saved no checkpoint; starting anew in it" in err
    assert json.loads((run_dir / "config.json").read_text())["max_steps"] == 2


def test_a_resume_keeps_the_options_its_run_recorded(module_batches, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_cli(capsys, *tiny_train_args(module_batches, run_dir, "--max-steps", "3"))[0] == 0
    recorded = json.loads((run_dir / "config.json").read_text())
    code, _, err = run_cli(capsys, "--resume", run_dir / "last.pt", "--max-steps", "5")
    assert code == 0, err
    again = json.loads((run_dir / "config.json").read_text())
    assert {k: v for k, v in again.items() if k != "max_steps"} == {k: v for k, v in recorded.items()
                                                                     if k != "max_steps"}
    assert recorded["quiet"] is True and recorded["channels_last"] is None and again["max_steps"] == 5


def test_an_interrupted_seeds_set_is_finished_by_the_same_command(module_batches, tmp_path):
    root = tmp_path / "set"
    command = ["main.py", *map(str, tiny_train_args(module_batches, root, "--threads", "1")), "--seeds", "0", "1", "2"]
    killed = python(*command, env={"RESNET_CIFAR_TEST_FAULT": "0:10:kill"})  # seed 0, in its second epoch
    assert killed.returncode == -9 and not (root / "seeds.json").exists()
    finished = python(*command)
    assert finished.returncode == 0, finished.stderr
    assert "seed 0: resuming" in finished.stdout
    summary = json.loads((root / "seeds.json").read_text())
    assert summary["seeds"] == [0, 1, 2]
    before = snapshot(root / "seed0")
    again = python(*command)
    assert again.returncode == 2 and "already holds a finished --seeds set" in again.stderr
    assert snapshot(root / "seed0") == before


def test_a_stopped_seeds_set_prints_the_command_that_finishes_it(module_batches, tmp_path):
    root = tmp_path / "set"
    run = python("-c", SIGINT_AFTER_CONFIG, *map(str, tiny_train_args(module_batches, root, "--epochs", "1")),
                 "--seeds", "3", "4")
    assert run.returncode == 130
    hint = run.stderr.strip().splitlines()[-1]
    assert "finish the set with: python main.py --mode train " in hint and "--seeds 3 4" in hint


def test_the_api_leaves_the_callers_process_as_it_was(module_batches, tmp_path):
    torch.set_num_threads(2)
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
              os.environ.get("CUBLAS_WORKSPACE_CONFIG"), random.getstate(), np.random.get_state()[1].tolist(),
              torch.get_rng_state())
    api.train(model="resnet20", data_dir=str(module_batches), run_dir=str(tmp_path / "run"), batch_size=32, epochs=1,
              max_steps=2, quiet=True, download=False, precision="fp32", deterministic=True, threads=1, seed=9)
    after = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             os.environ.get("CUBLAS_WORKSPACE_CONFIG"), random.getstate(), np.random.get_state()[1].tolist(),
             torch.get_rng_state())
    assert after[:5] == before[:5] and torch.equal(after[5], before[5])
