"""--config FILE: a run's config.json or a user's JSON/YAML file, with typed options overriding it."""
import json

import pytest
from helpers import run_cli, tiny_train_args


def dry_config(capsys, *args) -> dict:
    code, out, err = run_cli(capsys, *args, "--dry-run")
    assert code == 0, err
    return json.loads(out)["config"]


@pytest.mark.slow
def test_a_runs_config_repeats_it_and_a_typed_option_overrides(batches_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, *tiny_train_args(batches_dir, run_dir, "--recipe", "fast", "--epochs", "1",
                                                    "--lr", "0.05"))
    assert code == 0, err
    recorded = json.loads((run_dir / "config.json").read_text())
    repeated = dry_config(capsys, "--config", run_dir / "config.json", "--seed", "1")
    differing = {k for k in repeated if repeated[k] != recorded.get(k)}
    assert differing == {"seed", "run_dir"}  # a new run, in a new folder
    assert repeated["seed"] == 1 and repeated["lr"] == 0.05 and repeated["recipe"] == "fast"
    code, out, err = run_cli(capsys, "--config", run_dir / "config.json", "--run-dir", tmp_path / "again")
    assert code == 0, err
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert {k for k in again if again[k] != recorded[k]} <= {"run_dir", "elastic_run_id"}


def test_a_written_json_file_sets_options_that_the_recipe_then_leaves(tmp_path, capsys):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"model": "resnet20", "recipe": "fast", "epochs": 3, "batch_size": 64,
                                "nesterov": False, "milestones": [2, 3], "download": False, "compile": True}))
    config = dry_config(capsys, "--config", path, "--epochs", "5")
    assert (config["model"], config["epochs"], config["batch_size"]) == ("resnet20", 5, 64)
    assert config["nesterov"] is False  # fast's Nesterov is replaced by the file's choice
    assert config["milestones"] == [2, 3] and config["download"] is False and config["compile"] is True


def test_a_yaml_file(tmp_path, capsys):
    pytest.importorskip("yaml", reason="PyYAML is optional: reading YAML configs needs it")
    path = tmp_path / "mine.yaml"
    path.write_text("model: resnet32\nlr: 0.2\nmilestones: [5, 7]\n")
    config = dry_config(capsys, "--config", path)
    assert (config["model"], config["lr"], config["milestones"]) == ("resnet32", 0.2, [5, 7])


@pytest.mark.parametrize("content, message", [
    (None, "--config {path}: no such file"),
    ("[1, 2]", "--config {path} must hold an object of option names and values, not list"),
    ("{\"lr\": ", "--config {path} is not valid JSON (line 1"),
    ("{\"learning_rate\": 0.1}", "--config {path}: unknown option 'learning_rate'; valid keys: "),
    ("{\"model\": \"resnet7\"}", "argument --model: invalid choice: 'resnet7'"),
    ("{\"epochs\": 0}", "argument --epochs: expected an integer from 1 to 2147483647, got '0'"),
    ("{\"nesterov\": \"yes\"}", "--config {path}: nesterov takes true or false, got 'yes'"),
    ("{\"lr\": [0.1, 0.2]}", "--config {path}: lr takes one value, got [0.1, 0.2]"),
])
def test_a_bad_file_is_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    code, out, err = run_cli(capsys, "--config", path, "--dry-run")
    assert code == 2 and out == ""
    assert err.startswith("error: " + message.format(path=path)) and err.count("\n") == 1


@pytest.mark.parametrize("args", [
    ["--model", "airbench94", "--recipe", "airbench94-muon-cpu", "--precision", "bf16"],
    ["--model", "resnet20", "--recipe", "fast", "--epochs", "3", "--seed", "7"],
    ["--model", "resnet18"],
])
def test_what_the_dry_run_prints_is_a_config_file_that_repeats_it(tmp_path, capsys, args):
    code, out, err = run_cli(capsys, *args, "--data-dir", tmp_path, "--dry-run")
    assert code == 0, err
    (tmp_path / "plan.json").write_text(out)
    again = dry_config(capsys, "--config", tmp_path / "plan.json")
    assert again == json.loads(out)["config"]
