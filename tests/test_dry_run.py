"""--dry-run: every documented command resolves and passes the real command's checks, and a dry run
reads no data set and writes no file."""
import glob
import json
import re
import shlex
from pathlib import Path

import pytest
from helpers import (
    optional_packages,
    run_cli,
    skip_unless_installed,
    tiny_train_args,
    write_batches,
    write_image_folder,
)

from resnet_cifar.cli import main as cli
from resnet_cifar.training import route_choice

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"^\s*(?:\$\s+)?((?:python main\.py|torchrun [^#]*?main\.py)(?: [^#]*)?)")
INLINE = re.compile(r"`((?:python main\.py|torchrun [^`]*?main\.py)(?: [^`]*)?)`")


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) for every `python main.py ...` and `torchrun ... main.py ...` line of a code
    block (indented or fenced), with backslash continuations joined, and every such code span in
    the text (a table's commands)."""
    found = []
    for path in DOCUMENTS:
        in_fence = False
        lines = path.read_text().splitlines()
        number = 0
        while number < len(lines):
            line = lines[number]
            number += 1
            if line.strip().startswith("```"):
                in_fence = not in_fence
                continue
            if not (in_fence or line.startswith("    ")):
                found += [(f"{path.name}:{number}", " ".join(span.split())) for span in INLINE.findall(line)
                          if "…" not in span]  # `python main.py …` names the form, not a command
                continue
            start = number
            while line.rstrip().endswith("\\") and number < len(lines):
                line = line.rstrip()[:-1] + " " + lines[number].strip()
                number += 1
            match = COMMAND.match(line)
            if match:
                found.append((f"{path.name}:{start}", " ".join(match.group(1).split())))
    return found


def in_world(arguments: list[str], world: Path) -> list[str]:
    """The command's arguments with the places only the documents' machine has replaced: every
    checkpoint is the world's finished run, every --run-dir a fresh folder, globs expanded."""
    result = []
    for index, argument in enumerate(arguments):
        previous = arguments[index - 1] if index else ""
        if previous in ("--resume", "--checkpoint"):
            name = Path(argument).name if Path(argument).name in ("last.pt", "best.pt") else "last.pt"
            result.append(str(world / "runs" / "<run>" / name))
        elif previous == "--run-dir":
            result.append(str(world / "fresh" / f"run{len(list((world / 'fresh').glob('*')))}" / argument.strip("/")))
        else:
            result.extend(sorted(glob.glob(argument)) or [argument])
    return result


def torchrun_environment(arguments: list[str]) -> tuple[dict[str, str], list[str]]:
    """What torchrun would give rank 0 of the job these arguments start, and main.py's arguments."""
    split = arguments.index("main.py")
    launcher, rest = arguments[:split], arguments[split + 1:]
    processes = 1
    max_restarts = 0
    for item in launcher:
        if item.startswith("--nproc-per-node=") or item.startswith("--nproc_per_node="):
            processes = int(item.split("=", 1)[1])
        if item.startswith("--max-restarts="):
            max_restarts = int(item.split("=", 1)[1])
    nodes = next((int(item.split("=", 1)[1].split(":")[-1]) for item in launcher if item.startswith("--nnodes=")), 1)
    environ = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": str(processes * nodes),
               "LOCAL_WORLD_SIZE": str(processes), "TORCHELASTIC_RUN_ID": "docs",
               "TORCHELASTIC_RESTART_COUNT": "0", "TORCHELASTIC_MAX_RESTARTS": str(max_restarts)}
    return environ, rest


@pytest.fixture(scope="module")
def documented_world(tmp_path_factory) -> Path:
    """A folder where the documents' placeholders exist: runs/<run>/ with a finished tiny run (last.pt, best.pt),
    photos/ and cat.jpg to classify, a --config file."""
    root = tmp_path_factory.mktemp("docs-world")
    data = write_batches(root / "tiny" / "cifar-10-batches-py").parent
    code = cli.main(tiny_train_args(data, root / "runs" / "<run>", "--epochs", "1", "--val-size", "30"))
    assert code == 0
    write_image_folder(root / "images", n_train=10, n_test=2)
    (root / "photos").mkdir()
    for i, image in enumerate(sorted((root / "images" / "train").rglob("*.png"))[:3]):
        (root / "photos" / f"{i}.png").write_bytes(image.read_bytes())
    (root / "cat.jpg").write_bytes(next((root / "images" / "test").rglob("*.png")).read_bytes())
    (root / "fresh").mkdir()
    (root / "my-experiment.yaml").write_text("model: resnet20\nrecipe: fast\nbatch_size: 256\n")
    return root


def test_the_documents_hold_commands_of_every_kind():
    commands = [command for _, command in documented_commands()]
    assert any(c.startswith("torchrun") for c in commands)
    for mode in ("eval", "predict", "export", "summary"):
        assert any(f"--mode {mode}" in c for c in commands), mode
    assert "python main.py --model resnet18 --mode train" in commands


@pytest.mark.parametrize(("where", "command"), documented_commands())
def test_every_documented_command_passes_a_dry_run(where, command, documented_world, monkeypatch, capsys):
    monkeypatch.chdir(documented_world)
    arguments = shlex.split(command)
    environ = {}
    if arguments[0] == "torchrun":
        environ, arguments = torchrun_environment(arguments)
    else:
        arguments = arguments[2:]
    skip_unless_installed(*optional_packages(arguments))
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    # A budget with no route named times the routes: their costs here are given, not measured, and
    # the command starts now (the test process's age is not its).
    monkeypatch.setattr(route_choice, "measure_costs",
                        lambda configs: [route_choice.RouteCost(1.0, 0.001, 1.0) for _ in configs])
    monkeypatch.setattr(route_choice, "process_age_s", lambda: 2.0)
    code = cli.main([*in_world(arguments, documented_world), "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0, f"{where}: {command}\n{err}"
    assert json.loads(out)["mode"] in cli.MODES


def test_a_dry_run_reads_no_data_and_writes_nothing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "--model", "resnet20", "--recipe", "fast", "--data-dir", tmp_path / "nothing",
                             "--no-download", "--run-dir", run_dir, "--dry-run")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["config"]["epochs"] == 30 and plan["config"]["cutout"] == 0 and plan["config"]["lr"] == 0.4
    assert plan["run_dir"] == str(run_dir) and plan["processes"] == 1
    assert list(tmp_path.iterdir()) == []


def test_a_dry_run_refuses_what_the_real_run_refuses(batches_dir, tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(capsys, "--model", "resnet18", "--recipe", "paper", "--dry-run")
    assert code == 2 and err.startswith("error: --recipe paper is for resnet20")
    run_dir = tmp_path / "run"
    assert run_cli(capsys, *tiny_train_args(batches_dir, run_dir, "--epochs", "1"))[0] == 0
    code, _, err = run_cli(capsys, "--resume", run_dir / "last.pt", "--lr", "0.5", "--dry-run")
    assert code == 2 and "--lr 0.5 conflicts with the checkpoint's lr 0.1" in err
    code, _, err = run_cli(capsys, *tiny_train_args(batches_dir, run_dir), "--dry-run")
    assert code == 2 and "already holds a run" in err
    code, out, err = run_cli(capsys, "--resume", run_dir / "last.pt", "--epochs", "3", "--threads", "1", "--dry-run")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["epochs_done"] == 1 and plan["config"]["epochs"] == 3 and plan["config"]["threads"] == 1
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    code, _, err = run_cli(capsys, "--model", "resnet20", "--recipe", "fast", "--batch-size", "2", "--dry-run")
    assert code == 2 and "--batch-size 2 is the global batch and must hold at least one image for each of the 3" in err
    code, out, err = run_cli(capsys, "--model", "resnet20", "--recipe", "fast", "--dry-run")
    assert code == 0 and json.loads(out)["processes"] == 3


def test_a_dry_run_of_eval_checks_the_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    code, _, err = run_cli(capsys, "--mode", "eval", "--checkpoint", bad, "--dry-run")
    assert code == 2 and "is not a valid checkpoint" in err
    code, _, err = run_cli(capsys, "--mode", "export", "--checkpoint", bad, "--format", "onnx",
                           "--output", tmp_path / "missing" / "m.onnx", "--dry-run")
    assert code == 2 and err == f"error: --output {tmp_path / 'missing' / 'm.onnx'}: the folder " \
                                f"{tmp_path / 'missing'} does not exist\n"
