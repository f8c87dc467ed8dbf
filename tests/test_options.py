"""The option declarations: the parser, TrainConfig, the mode and resume rules, summary grouping
and docs/options.md all follow from options.OPTIONS."""
import dataclasses
import json
from pathlib import Path

import pytest

from resnet_cifar import options
from resnet_cifar.cli import main as cli
from resnet_cifar.cli import options_page
from resnet_cifar.cli.summary import format_lines, read_run
from resnet_cifar.config import TrainConfig
from resnet_cifar.runfiles.run_files import MetricsLog

ROOT = Path(__file__).resolve().parent.parent


def test_docs_options_page_is_generated_from_the_declarations():
    page = (ROOT / "docs" / "options.md").read_text()
    assert page == options_page.options_markdown(), \
        "docs/options.md is stale: python -m resnet_cifar.cli.options_page > docs/options.md"


def test_every_train_config_field_is_one_option_and_defaults_agree():
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"num_classes", "resumed_from"}
    declared = {o.dest for o in options.OPTIONS if o.in_train_config}
    assert declared == fields
    assert len({o.dest for o in options.OPTIONS}) == len(options.OPTIONS)  # each declared once
    parsed = cli.train_config_from_args(cli.parse_args([]))
    assert parsed == TrainConfig(data_dir=str(Path(TrainConfig().data_dir).absolute()))


def test_every_declared_flag_is_in_the_parser_with_its_declared_default():
    parser = cli.build_parser()
    actions = {action.dest: action for action in parser._actions}
    for option in options.OPTIONS:
        action = actions[option.dest]
        assert action.default == option.default_value, option.dest
        if option.kind != "positional":
            assert option.flag in action.option_strings
        assert action.help.replace("%%", "%") == option.help


def test_training_options_declare_their_resume_rule():
    for option in options.OPTIONS:
        if option.in_train_config:
            assert option.resume in options.RESUME_RULES, option.dest
        else:
            assert option.resume is None, option.dest


def test_derived_rules():
    assert options.PER_INVOCATION == {"max_steps", "quiet"}
    assert {"threads", "epochs", "iterations", "device", "tta"} <= options.RESUME_OVERRIDABLE
    assert not {"model", "lr", "batch_size", "seed", "recipe"} & options.RESUME_OVERRIDABLE
    assert {"seed", "elastic_run_id", "world_size", "resolved_device", "threads"} <= options.NOT_THE_EXPERIMENT
    assert not {"lr", "model", "tta", "resolved_precision"} & options.NOT_THE_EXPERIMENT
    assert "lr" in options.MODE_READS["train"] and "lr" not in options.MODE_READS["eval"]
    assert options.MODE_READS["summary"] == {"paths", "output", "mode", "dry_run"}


def _fake_run(folder: Path, seed: int, test_acc: float, **recorded) -> Path:
    folder.mkdir()
    config = {**TrainConfig(seed=seed).to_dict(), **recorded}
    (folder / "config.json").write_text(json.dumps(config))
    MetricsLog(folder / "metrics.csv").append({"epoch": 1, "lr": 0.1, "test_acc": test_acc, "seconds": 1.0})
    return folder


def test_seeds_run_as_separate_torchrun_jobs_are_grouped(tmp_path):
    """Each torchrun job records its own elastic_run_id: that must not split one experiment."""
    runs = [read_run(_fake_run(tmp_path / f"s{seed}", seed, acc, elastic_run_id=f"job{seed}", world_size=2))
            for seed, acc in ((0, 0.90), (1, 0.92))]
    lines = format_lines(runs)
    assert len(lines) == 3
    assert "over 2 seeds (tta none): 91.00% ± 1.41" in lines[2]


def test_runs_of_another_experiment_are_not_grouped(tmp_path):
    runs = [read_run(_fake_run(tmp_path / "a", 0, 0.90)), read_run(_fake_run(tmp_path / "b", 1, 0.92, lr=0.2))]
    assert len(format_lines(runs)) == 2


@pytest.mark.parametrize("option", [o for o in options.OPTIONS if o.kind == "value" and o.type is not None],
                         ids=lambda o: o.dest)
def test_every_typed_option_refuses_garbage_in_one_line(option, capsys):
    argv = ["--mode", option.modes[0], option.flag, "garbage"]
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and f"argument {option.flag}: expected " in err
