"""Nothing already saved is lost: every refused or forked command leaves the runs it touches
byte-identical; a full disk in any writer is one line naming the file; a process killed at any
step, even while it writes a checkpoint, resumes bit-exactly."""
import errno
import json
import random
from pathlib import Path

import pytest
from helpers import python, run_cli, same_state, snapshot, tiny_train_args, training_state, write_image_folder

from resnet_cifar.runfiles.checkpoints import load_checkpoint
from resnet_cifar.utils import atomic_files

pytestmark = pytest.mark.slow  # every test here trains through the command line


@pytest.fixture(scope="module")
def finished(module_batches, tmp_path_factory) -> Path:
    """A finished 3-epoch run with a validation split (so best.pt), its report and timings."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    code = run_cli_plain(*tiny_train_args(module_batches, run_dir, "--epochs", "3", "--val-size", "30"))
    assert code == 0 and (run_dir / "best.pt").exists() and (run_dir / "report").is_dir()
    return run_dir


def run_cli_plain(*args) -> int:
    from resnet_cifar.cli.main import main

    return main([str(a) for a in args])


def failed(capsys, *args) -> tuple[str, str]:
    """The one line on stderr of a command that fails (exit 2), and what it printed before."""
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), (code, out, err)
    return err[len("error: "):].rstrip("\n"), out


def refused(capsys, *args) -> str:
    """The one line of a command refused before any work: it prints nothing else."""
    message, out = failed(capsys, *args)
    assert out == "", out
    return message


# --- refused and forked commands leave every run byte-identical -----------------------------------

@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_commands_that_would_overwrite_a_run_are_refused(finished, module_batches, tmp_path, capsys, dry_run):
    before = snapshot(finished)
    image = write_image_folder(tmp_path / "img", n_train=10, n_test=0) / "train" / "cat"
    one_image = sorted(image.iterdir())[0]
    dry = ["--dry-run"] if dry_run else []
    last = finished / "last.pt"
    cases = [
        (["--mode", "export", "--checkpoint", last, "--format", "torchscript", "--output", last],
         f"--output {last} is the checkpoint, which this command reads; choose another name"),
        (["--mode", "export", "--checkpoint", last, "--format", "torchscript", "--output", finished / "metrics.csv"],
         f"--output {finished / 'metrics.csv'} is the metrics.csv of the run in {finished}, which is never "
         f"overwritten; choose another name"),
        (["--mode", "eval", "--checkpoint", last, "--output", finished / "config.json"],
         f"--output {finished / 'config.json'} is the config.json of the run in {finished}"),
        (["--mode", "eval", "--checkpoint", last, "--report-dir", finished / "report"],
         f"--report-dir {finished / 'report'} is the report/ of the run in {finished}"),
        (["--mode", "eval", "--checkpoint", last, "--output", module_batches / "cifar-10-batches-py" / "eval.json"],
         f"--output {module_batches / 'cifar-10-batches-py' / 'eval.json'} is inside the CIFAR-10 data"),
        (["--mode", "predict", "--checkpoint", last, one_image, "--output", one_image],
         f"--output {one_image} is an input to classify, which this command reads"),
        (["--mode", "summary", finished, "--output", finished / "timings.json"],
         f"--output {finished / 'timings.json'} is the timings.json of the run in {finished}"),
        (["--resume", finished / "best.pt", "--run-dir", finished, "--epochs", "5"],
         f"--run-dir {finished} is the run that best.pt comes from, whose later state"),
        ([*tiny_train_args(module_batches, finished)],
         f"--run-dir {finished} already holds a run; resume it with --resume"),
        ([*tiny_train_args(module_batches, module_batches / "cifar-10-batches-py" / "run")],
         f"--run-dir {module_batches / 'cifar-10-batches-py' / 'run'} is inside the CIFAR-10 data"),
    ]
    for args, message in cases:
        assert refused(capsys, *args, *dry).startswith(message), args
    assert snapshot(finished) == before
    assert not (module_batches / "cifar-10-batches-py" / "run").exists()


def test_resuming_an_older_checkpoint_continues_as_a_new_run(finished, tmp_path, capsys, monkeypatch):
    before = snapshot(finished)
    best = load_checkpoint(finished / "best.pt")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "--resume", finished / "best.pt", "--max-steps", str(best["global_step"] + 2),
                             "--epochs", "5", "--quiet")
    assert code == 0, err
    assert snapshot(finished) == before  # the run it came from: every byte as it was
    (new_dir,) = (tmp_path / "runs").iterdir()
    assert (f"continuing from {finished / 'best.pt'} (best.pt is not its run's latest checkpoint, "
            f"{finished.resolve() / 'last.pt'}) at epoch {best['epoch']}, step {best['global_step']}, as a new run in "
            f"runs/{new_dir.name}; {finished.resolve()} is left as it is") in out.splitlines()
    recorded = json.loads((new_dir / "config.json").read_text())["resumed_from"]
    assert recorded == {"checkpoint": str((finished / "best.pt").resolve()), "run_dir": str(finished.resolve()),
                        "epoch": best["epoch"], "global_step": best["global_step"]}
    assert load_checkpoint(new_dir / "last.pt")["global_step"] == best["global_step"] + 2
    # Its metrics start with the original run's epochs up to the checkpoint's.
    parent_rows = (finished / "metrics.csv").read_text().splitlines()
    assert (new_dir / "metrics.csv").read_text().splitlines() == parent_rows[:1 + best["epoch"]]


def test_a_run_continues_in_a_new_or_empty_folder_only(finished, module_batches, tmp_path, capsys):
    before = snapshot(finished)
    other = tmp_path / "other"
    assert run_cli(capsys, *tiny_train_args(module_batches, other, "--max-steps", "1"))[0] == 0
    other_before = snapshot(other)
    message = refused(capsys, "--resume", finished / "last.pt", "--run-dir", other, "--epochs", "4")
    assert message == (f"--run-dir {other} holds another run; continuing the run of {finished / 'last.pt'} needs a "
                       f"new or empty folder")
    assert snapshot(other) == other_before
    code, out, err = run_cli(capsys, "--resume", finished / "last.pt", "--run-dir", tmp_path / "b", "--quiet",
                             "--max-steps", str(load_checkpoint(finished / "last.pt")["global_step"] + 1),
                             "--epochs", "4")
    assert code == 0, err
    assert snapshot(finished) == before
    assert json.loads((tmp_path / "b" / "config.json").read_text())["resumed_from"]["run_dir"] == \
        str(finished.resolve())


def test_seeds_check_every_folder_before_the_first_seed_trains(module_batches, tmp_path, capsys):
    root = tmp_path / "seeds"
    assert run_cli(capsys, *tiny_train_args(module_batches, root / "seed1", "--max-steps", "1"))[0] == 0
    before = snapshot(root)
    message = refused(capsys, *tiny_train_args(module_batches, root), "--seeds", "0", "1", "2")
    assert message.startswith(f"--run-dir {root / 'seed1'} already holds a run")
    assert snapshot(root) == before and not (root / "seed0").exists()


def test_summary_takes_whatever_runs_star_expands_to(finished, module_batches, tmp_path, capsys):
    runs = tmp_path / "runs"
    seeds = runs / "s"
    code, _, err = run_cli(capsys, *tiny_train_args(module_batches, seeds, "--epochs", "1"), "--seeds", "0", "1")
    assert code == 0, err
    (runs / "notes.txt").write_text("a file")
    (runs / "empty").mkdir()
    (runs / "foreign" / "x").mkdir(parents=True)
    (runs / "list").mkdir()
    (runs / "list" / "config.json").write_text("[1, 2]")
    (runs / "latin1").mkdir()
    (runs / "latin1" / "config.json").write_text(json.dumps({"model": "resnet20"}))
    (runs / "latin1" / "metrics.csv").write_bytes("epoch,test_acc\n1,0.5\xe9\n".encode("latin-1"))
    paths = sorted(str(p) for p in runs.iterdir()) + [str(finished)]
    before = snapshot(runs)
    code, out, err = run_cli(capsys, "--mode", "summary", *paths)
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == [str(seeds / "seed0"), str(seeds / "seed1"), str(finished)]
    assert lines[3].startswith("resnet20 seed: final test accuracy over 2 seeds")
    assert err.splitlines() == [
        f"skipped {runs / 'empty'}: an empty folder",
        f"skipped {runs / 'foreign'}: not a run folder (no config.json)",
        f"skipped {runs / 'latin1'}: {runs / 'latin1' / 'metrics.csv'} is not readable "
        f"('utf-8' codec can't decode byte 0xe9 in position 20: invalid continuation byte)",
        f"skipped {runs / 'list'}: {runs / 'list' / 'config.json'} holds list, not a run's options",
        f"skipped {runs / 'notes.txt'}: a file, not a run folder",
    ]
    assert snapshot(runs) == before


# --- a full disk in any writer ---------------------------------------------------------------------

@pytest.fixture
def full_disk(monkeypatch):
    """full_disk(name): every write of a file called name fails as on a full disk."""
    real = atomic_files._fsync_file

    def arm(name: str) -> None:
        def fsync(path: Path) -> None:
            if Path(path).name.startswith(f".{name}{atomic_files.TEMP_MARKER}"):
                raise OSError(errno.ENOSPC, "No space left on device")
            real(path)

        monkeypatch.setattr(atomic_files, "_fsync_file", fsync)

    return arm


@pytest.mark.parametrize("name", ["config.json", "metrics.csv", "curves.png", "last.pt", "timings.json"])
def test_a_full_disk_in_a_training_writer_is_one_line(module_batches, tmp_path, capsys, full_disk, name):
    run_dir = tmp_path / "run"
    assert run_cli(capsys, *tiny_train_args(module_batches, run_dir, "--epochs", "1"))[0] == 0
    before = snapshot(run_dir)
    full_disk(name)
    message, _ = failed(capsys, "--resume", run_dir / "last.pt", "--epochs", "2")
    assert message.startswith(f"cannot write {run_dir.resolve() / name}: No space left on device")
    assert not list(run_dir.glob(f".*{atomic_files.TEMP_MARKER}*"))
    assert load_checkpoint(run_dir / "last.pt")["epoch"] in (1, 2)  # the last good checkpoint, whole
    if name == "last.pt":
        assert snapshot(run_dir)["last.pt"] == before["last.pt"]


@pytest.mark.parametrize("name, args", [
    ("report.json", ["--mode", "eval", "--report-dir", "{tmp}/report"]),
    ("eval.json", ["--mode", "eval", "--output", "{tmp}/eval.json"]),
    ("model.ts", ["--mode", "export", "--format", "torchscript", "--output", "{tmp}/model.ts"]),
    ("summary.csv", ["--mode", "summary", "{run}", "--output", "{tmp}/summary.csv"]),
])
def test_a_full_disk_in_a_report_or_export_is_one_line(finished, tmp_path, capsys, full_disk, name, args):
    before = snapshot(finished)
    full_disk(name)
    args = [a.format(tmp=tmp_path, run=finished) for a in args]
    if args[1] != "summary":
        args += ["--checkpoint", str(finished / "last.pt")]
    message, _ = failed(capsys, *args)
    written = tmp_path / "report" / name if name == "report.json" else tmp_path / name
    assert message == f"cannot write {written}: No space left on device"
    assert snapshot(finished) == before
    assert not list(tmp_path.rglob(f".*{atomic_files.TEMP_MARKER}*"))


def test_a_full_disk_for_the_image_cache_is_a_note_and_the_run_goes_on(tmp_path, capsys, full_disk):
    images = write_image_folder(tmp_path / "images", n_train=20, n_test=10)
    full_disk(".cifar-cache.npz")
    code, _, err = run_cli(capsys, *tiny_train_args(images, tmp_path / "run", "--epochs", "1", "--batch-size", "8"))
    assert code == 0
    assert err == (f"note: cannot write {images / '.cifar-cache.npz'}: No space left on device; the images are "
                   f"decoded again next time\n")


# --- a killed process resumes bit-exactly ------------------------------------------------------------

KILL_IN_A_CHECKPOINT_WRITE = """
import os, signal, sys, torch
from resnet_cifar.cli.main import main
real_save, saves = torch.save, []
def save(obj, f, *args, **kwargs):
    saves.append(1)
    if len(saves) == int(os.environ["KILL_AT_SAVE"]):
        f.write(b"half a checkpoint")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)
torch.save = save
sys.exit(main(sys.argv[1:]))
"""


def kill_args(data: Path, run_dir: Path) -> list[str]:
    return [str(a) for a in tiny_train_args(data, run_dir, "--epochs", "3", "--batch-size", "16", "--threads", "1")]


@pytest.fixture(scope="module")
def uninterrupted(module_batches, tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = python("main.py", *kill_args(module_batches, run_dir))
    assert result.returncode == 0, result.stderr
    return training_state(load_checkpoint(run_dir / "last.pt"))


STEPS = 3 * 15  # 3 epochs of 15 steps (250 images, batch 16)
KILL_STEPS = sorted(random.Random(0).sample(range(16, STEPS), 3))  # after the first epoch's checkpoint


@pytest.mark.parametrize("step", KILL_STEPS)
def test_a_kill_at_a_random_step_resumes_bit_exactly(module_batches, tmp_path, uninterrupted, step):
    run_dir = tmp_path / "run"
    killed = python("main.py", *kill_args(module_batches, run_dir), env={"RESNET_CIFAR_TEST_FAULT": f"0:{step}:kill"})
    assert killed.returncode == -9
    resumed = python("main.py", "--resume", str(run_dir / "last.pt"), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert same_state(training_state(load_checkpoint(run_dir / "last.pt")), uninterrupted)


@pytest.mark.parametrize("save", [2, 3])
def test_a_kill_during_a_checkpoint_write_resumes_bit_exactly(module_batches, tmp_path, uninterrupted, save):
    run_dir = tmp_path / "run"
    killed = python("-c", KILL_IN_A_CHECKPOINT_WRITE, *kill_args(module_batches, run_dir),
                    env={"KILL_AT_SAVE": str(save)})
    assert killed.returncode == -9
    assert list(run_dir.glob(f".last.pt{atomic_files.TEMP_MARKER}*"))  # the write it died in
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == save - 1  # the one before, whole
    resumed = python("main.py", "--resume", str(run_dir / "last.pt"), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert not list(run_dir.glob(f".*{atomic_files.TEMP_MARKER}*"))
    assert same_state(training_state(load_checkpoint(run_dir / "last.pt")), uninterrupted)
