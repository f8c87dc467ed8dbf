"""The package: its layout (every import pointing one way, the root's four faces), the installed
command and the Python API."""
import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, run_cli, tiny_train_args

import resnet_cifar

PACKAGE = ROOT / "resnet_cifar"
FACES = ("main", "datasets", "models", "training")
# The package's folders from the bottom up: each may import only the ones before it.
LAYERS = ("errors", "config", "utils", "models", "data", "optim", "recipes", "runfiles", "options", "option_values",
          "results", "training", "cli", "api")


def package_imports() -> dict[str, set[str]]:
    """For each module of the package, the top-level names of what it imports."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[module] = names
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_the_root_holds_the_four_faces_and_no_other_module():
    assert sorted(p.stem for p in ROOT.glob("*.py")) == sorted(FACES)


def test_nothing_in_the_package_imports_a_root_module():
    offenders = {(module, name) for module, names in package_imports().items() for name in names
                 if name.split(".")[0] in FACES}
    assert offenders == set()


def test_every_import_points_down_the_layers():
    upward = set()
    for module, names in package_imports().items():
        mine = layer_of(module)
        for name in names:
            theirs = layer_of(name) if name.startswith("resnet_cifar.") else None
            if mine and theirs and LAYERS.index(theirs) > LAYERS.index(mine):
                upward.add((module, name))
    assert upward == set()


def floors() -> dict[str, int]:
    """Each room's floor: 1 for a room that imports no other room, else one above the highest it imports."""
    imports: dict[str, set[str]] = {}
    for module, names in package_imports().items():
        mine = layer_of(module)
        if mine:
            imports.setdefault(mine, set()).update(
                theirs for name in names if name.startswith("resnet_cifar.") and (theirs := layer_of(name)) != mine
                and theirs is not None)
    found: dict[str, int] = {}

    def floor(room: str) -> int:
        if room not in found:
            found[room] = 1 + max((floor(other) for other in imports.get(room, ())), default=0)
        return found[room]
    for room in imports:
        floor(room)
    return found


def test_the_package_stands_on_seven_floors():
    # errors, config, models; optim, utils, recipes; data; runfiles, options; option_values, results; training;
    # cli and api
    assert max(floors().values()) == 7, floors()


def test_the_api_names_show_in_dir_before_first_use():
    names = [name for name in dir(resnet_cifar) if not name.startswith("_")]
    assert names == sorted(resnet_cifar.__all__)


def test_the_api_and_the_command_line_stand_side_by_side():
    """The API builds its configuration itself: it never goes through the command line's parser."""
    assert not {name for module, names in package_imports().items() if module == "resnet_cifar.api"
                for name in names if name.startswith("resnet_cifar.cli")}


def test_the_faces_give_the_names_users_know():
    import datasets
    import models
    import training

    assert sum(p.numel() for p in models.modeltype("resnet20").parameters()) == 269_722
    assert issubclass(models.ResNet, __import__("torch").nn.Module) and models.ResidualBlock.expansion == 1
    assert callable(training.train_model) and callable(datasets.load_cifar10)
    assert models.modeltype is resnet_cifar.build_model.__globals__["modeltype"]


def test_api_builds_lists_and_refuses_by_name():
    assert "resnet18" in resnet_cifar.list_models() and "wrn-28-10" in resnet_cifar.list_models()
    model = resnet_cifar.build_model("resnet20", num_classes=100)
    assert model.fc.out_features == 100
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        resnet_cifar.nothing  # noqa: B018


@pytest.mark.parametrize("options, message", [
    ({"model": "resnet7"}, r"train\(\): model 'resnet7' is none of: resnet9, airbench94, "),
    ({"learning_rate": 0.1}, r"train\(\): unknown option 'learning_rate'; valid options: .*\blr\b"),
    ({"lr": "fast"}, r"train\(\): lr: expected a number > 0 and at most 1e6, got 'fast'"),
    ({"lr": True}, r"train\(\): lr takes a number > 0 and at most 1e6, got True"),
    ({"milestones": 5}, r"train\(\): milestones takes a list of values, got 5"),
    ({"seeds": [1, 2]}, "train\\(\\) starts one new run"),
])
def test_api_checks_each_option_as_the_command_line_does(batches_dir, tmp_path, options, message):
    from resnet_cifar.errors import UserError

    with pytest.raises(UserError, match=message):
        resnet_cifar.train(data_dir=str(batches_dir), run_dir=str(tmp_path / "run"), **options)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_api_trains_evaluates_and_loads_like_the_command_line(batches_dir, tmp_path, capsys):
    summary = resnet_cifar.train(model="resnet20", data_dir=str(batches_dir), run_dir=str(tmp_path / "api"),
                                 batch_size=32, epochs=1, quiet=True, download=False, precision="fp32")
    code, _, err = run_cli(capsys, *tiny_train_args(batches_dir, tmp_path / "cli", "--epochs", "1"))
    assert code == 0, err
    assert summary["run_dir"] == str(tmp_path / "api")
    report = resnet_cifar.evaluate(summary["checkpoint"])
    assert report["accuracy"] == pytest.approx(summary["accuracy"])
    api_payload = resnet_cifar.load_checkpoint(summary["checkpoint"])
    cli_payload = resnet_cifar.load_checkpoint(tmp_path / "cli" / "last.pt")
    for name, tensor in api_payload.model.state_dict().items():  # the same run, bit for bit
        assert cli_payload.model.state_dict()[name].equal(tensor), name
    assert api_payload.classes[0] == "airplane" and api_payload.image_size == 32 and api_payload.epoch == 1
    images = __import__("torch").zeros(2, 3, 32, 32, dtype=__import__("torch").uint8)
    assert api_payload.model(api_payload.normalize(images)).shape == (2, 10)


@pytest.mark.slow
def test_pip_install_gives_the_command_and_the_api(tmp_path):
    """`pip install .` with this interpreter into a folder of its own (nothing downloaded: its
    dependencies are this environment's, whatever kind of environment that is); the command and the
    API work from a folder without the checkout."""
    target = tmp_path / "installed"
    # Built from a copy: an in-place build would leave build/ and *.egg-info in the checkout.
    source = tmp_path / "source"

    def skipped(folder: str, names: list[str]) -> set[str]:
        top = {".git", "build", "runs", "data", "tests", "bench", "docs"} if Path(folder) == ROOT else set()
        return {name for name in names if name in top or name == "__pycache__" or name.endswith(".egg-info")}

    shutil.copytree(ROOT, source, ignore=skipped)
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              "--target", str(target), str(source)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    env_dir, python = target, sys.executable
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    clean_env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": str(target)}
    command = subprocess.run([env_dir / "bin" / "resnet-cifar", "--model", "resnet20", "--dry-run"], cwd=elsewhere,
                             capture_output=True, text=True, timeout=120, env=clean_env)
    assert command.returncode == 0, command.stderr
    assert json.loads(command.stdout)["config"]["model"] == "resnet20"
    bad = subprocess.run([env_dir / "bin" / "resnet-cifar", "--model", "resnet7"], cwd=elsewhere,
                         capture_output=True, text=True, timeout=120, env=clean_env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "resnet7" in bad.stderr
    api = subprocess.run([python, "-c", "import resnet_cifar, sys; print(resnet_cifar.__file__); "
                          "print(sum(p.numel() for p in resnet_cifar.build_model('resnet20').parameters()))"],
                         cwd=elsewhere, capture_output=True, text=True, timeout=120, env=clean_env)
    assert api.returncode == 0, api.stderr
    location, count = api.stdout.split()
    assert str(env_dir) in location and count == "269722"
    module = subprocess.run([python, "-m", "resnet_cifar", "--mode", "eval", "--dry-run"], cwd=elsewhere,
                            capture_output=True, text=True, timeout=120, env=clean_env)
    assert module.returncode == 2 and "--mode eval needs --checkpoint" in module.stderr
