"""Recipes: resolved configs, their learning rate at chosen iterations, overrides, bad input."""
import json
import math

import pytest
from helpers import read_metrics, run_cli, synthetic_dataset, tiny_train_args

from resnet_cifar.cli import main as cli
from resnet_cifar.config import TrainConfig
from resnet_cifar.errors import UserError
from resnet_cifar.optim.schedules import LRSchedule
from resnet_cifar.recipes import RECIPES, apply_recipe
from resnet_cifar.training.assembly import build_run

PAPER_STEPS_PER_EPOCH = 50_000 // 128  # 390: the last partial batch is dropped


def resolved(argv: list[str]) -> TrainConfig:
    args = cli.parse_args(argv)
    return apply_recipe(cli.train_config_from_args(args), cli.explicit_options(argv))


def test_seed_is_the_default_and_uses_batch_256():
    config = resolved(["--model", "resnet18"])
    assert config.recipe == "seed"
    assert (config.batch_size, config.lr, config.momentum, config.weight_decay, config.scheduler,
            config.gamma, config.nesterov) == (256, 0.1, 0.9, 1e-4, "plateau", 0.1, False)


def test_paper_recipe_resolves_to_he_et_al():
    config = resolved(["--model", "resnet20", "--recipe", "paper"])
    assert (config.batch_size, config.lr, config.momentum, config.weight_decay) == (128, 0.1, 0.9, 1e-4)
    assert (config.scheduler, config.milestones, config.milestone_unit) == ("multistep", (32_000, 48_000), "steps")
    assert config.iterations == 64_000 and config.warmup_steps == 0
    assert (config.val_size, config.cutout, config.translate_pad, config.augment) == (0, 0, "zeros", "none")


@pytest.mark.parametrize(("iteration", "lr"), [(0, 0.1), (31_999, 0.1), (32_000, 0.01), (47_999, 0.01),
                                               (48_000, 0.001), (63_999, 0.001)])
def test_paper_lr_at_iterations(iteration, lr):
    schedule = LRSchedule(resolved(["--model", "resnet56", "--recipe", "paper"]), PAPER_STEPS_PER_EPOCH)
    epoch, step = divmod(iteration, PAPER_STEPS_PER_EPOCH)
    assert schedule.lr(epoch, step) == pytest.approx(lr)


@pytest.mark.parametrize("model", ["resnet110", "resnet1202"])
def test_paper_warms_the_deepest_nets_at_lr_001_then_returns_to_01(model):
    config = resolved(["--model", model, "--recipe", "paper"])
    schedule = LRSchedule(config, PAPER_STEPS_PER_EPOCH)
    lrs = {i: schedule.lr(*divmod(i, PAPER_STEPS_PER_EPOCH)) for i in (0, 399, 400, 31_999, 32_000)}
    assert lrs == pytest.approx({0: 0.01, 399: 0.01, 400: 0.1, 31_999: 0.1, 32_000: 0.01})


@pytest.mark.slow
def test_paper_run_ends_at_64k_iterations():
    # 64,000 / 390 = 164.1: 165 epochs, the last one 40 steps long.
    config = resolved(["--model", "resnet20", "--recipe", "paper"])
    parts = build_run(config, synthetic_dataset(n_train=50_000 // 100, n_test=10))
    assert len(parts.train_loader) == 3  # 500 // 128
    assert parts.config.epochs == math.ceil(64_000 / 3)
    from resnet_cifar.training.epoch import epoch_steps
    assert sum(epoch_steps(parts, e) for e in range(parts.config.epochs)) == 64_000
    assert epoch_steps(parts, parts.config.epochs - 1) == 64_000 - 3 * (parts.config.epochs - 1)


def test_standard_and_fast_recipes():
    standard = resolved(["--recipe", "standard"])
    assert (standard.epochs, standard.scheduler, standard.lr, standard.weight_decay, standard.batch_size) == (
        200, "cosine", 0.1, 5e-4, 128)
    fast = resolved(["--recipe", "fast", "--model", "resnet18"])
    assert (fast.nesterov, fast.momentum, fast.weight_decay, fast.batch_size, fast.scheduler) == (
        True, 0.9, 5e-4, 500, "triangular")
    assert (fast.translate_pad, fast.cutout, fast.tta, fast.epochs, fast.lr) == (
        "reflect", 12, "flip-translate", 26, 0.4)
    fast20 = resolved(["--recipe", "fast", "--model", "resnet20"])
    assert (fast20.epochs, fast20.cutout) == (30, 0)  # Cutout cost the small net accuracy (bench/README.md)
    # Evaluated after the last epoch only, at every epoch count; an explicit --eval-every wins.
    assert fast.eval_every == fast20.eval_every == 0 and resolved(["--recipe", "standard"]).eval_every == 1
    assert resolved(["--recipe", "fast", "--eval-every", "1"]).eval_every == 1
    assert [TrainConfig(epochs=5, eval_every=0).evaluates_after(e) for e in range(5)] == [False] * 4 + [True]
    assert [TrainConfig(epochs=5, eval_every=2).evaluates_after(e) for e in range(5)] == [False, True, False, True,
                                                                                         True]


def test_wrn_recipe_resolves_to_zagoruyko_and_komodakis():
    config = resolved(["--model", "wrn-28-10", "--recipe", "wrn"])
    assert (config.epochs, config.batch_size, config.lr, config.momentum, config.nesterov, config.weight_decay) == (
        200, 128, 0.1, 0.9, True, 5e-4)
    assert (config.scheduler, config.milestones, config.milestone_unit, config.gamma) == (
        "multistep", (60, 120, 160), "epochs", 0.2)
    assert (config.dropout, config.translate_pad, config.cutout) == (0.3, "reflect", 0)
    schedule = LRSchedule(config, steps_per_epoch=390)
    lrs = [schedule.lr(epoch, 0) for epoch in (0, 59, 60, 119, 120, 160, 199)]
    assert lrs == pytest.approx([0.1, 0.1, 0.02, 0.02, 0.004, 0.0008, 0.0008])


def test_resnext_recipe_resolves_to_the_authors_code():
    config = resolved(["--model", "resnext29-8x64d", "--recipe", "resnext"])
    assert (config.epochs, config.batch_size, config.lr, config.momentum, config.nesterov, config.weight_decay) == (
        300, 128, 0.1, 0.9, True, 5e-4)
    assert (config.scheduler, config.milestones, config.milestone_unit, config.gamma) == (
        "multistep", (150, 225), "epochs", 0.1)
    assert (config.translate_pad, config.cutout, config.dropout) == ("zeros", 0, 0.0)
    schedule = LRSchedule(config, steps_per_epoch=390)
    lrs = [schedule.lr(epoch, 0) for epoch in (0, 149, 150, 224, 225, 299)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])




# A command-line form of each field a recipe sets, giving a value no recipe uses (booleans: the
# flag that flips the recipe's value).
OVERRIDES = {
    "epochs": (["--epochs", "7"], 7), "iterations": (["--iterations", "99"], 99),
    "batch_size": (["--batch-size", "64"], 64), "lr": (["--lr", "0.05"], 0.05),
    "momentum": (["--momentum", "0.5"], 0.5), "weight_decay": (["--weight-decay", "0"], 0.0),
    "scheduler": (["--scheduler", "step"], "step"), "milestones": (["--milestones", "5", "7"], (5, 7)),
    "milestone_unit": (["--milestone-unit", "epochs"], "epochs"), "gamma": (["--gamma", "0.5"], 0.5),
    "warmup_steps": (["--warmup-steps", "9"], 9), "warmup_style": (["--warmup-style", "linear"], "linear"),
    "translate_pad": (["--translate-pad", "zeros"], "zeros"), "cutout": (["--cutout", "3"], 3),
    "tta": (["--tta", "none"], "none"), "eval_every": (["--eval-every", "2"], 2),
    "dropout": (["--dropout", "0.1"], 0.1), "warmup_epochs": (["--warmup-epochs", "2"], 2.0),
    "triangular_start": (["--triangular-start", "0.5"], 0.5), "triangular_peak": (["--triangular-peak", "0.5"], 0.5),
    "label_smoothing": (["--label-smoothing", "0.1"], 0.1),
    "bn_bias_lr_scale": (["--bn-bias-lr-scale", "2"], 2.0), "flip": (["--flip", "random"], "random"),
    "translate": (["--translate", "3"], 3), "triangular_end": (["--triangular-end", "0.5"], 0.5),
    "whiten_bias_epochs": (["--whiten-bias-epochs", "5"], 5),
    "optimizer": (["--optimizer", "sgd"], "sgd"), "muon_lr": (["--muon-lr", "0.1"], 0.1),
    "muon_momentum": (["--muon-momentum", "0.9"], 0.9),
    "activation": (["--activation", "gelu"], "gelu"), "bn_momentum": (["--bn-momentum", "0.2"], 0.2),
    "brightness": (["--brightness", "0.3"], 0.3), "contrast": (["--contrast", "0.3"], 0.3),
    "muon_coefficients": (["--muon-coefficients", "muon"], "muon"),
    "muon_renorm_every": (["--muon-renorm-every", "3"], 3), "muon_renorm_growth": (["--muon-renorm-growth", "4"], 4.0),
    "muon_weight_decay": (["--muon-weight-decay", "0.01"], 0.01), "tta_fraction": (["--tta-fraction", "0.5"], 0.5),
    "whitening_images": (["--whitening-images", "500"], 500),
}
RECIPE_FIELDS = sorted({(name, model, field) for name, recipe in RECIPES.items()
                        for model, values in [("", recipe.values), *recipe.per_model.items()] for field in values})


@pytest.mark.parametrize("recipe,model,field", RECIPE_FIELDS)
def test_every_recipe_value_is_overridable_by_its_flag(recipe, model, field):
    model = model or (RECIPES[recipe].models or ("resnet18",))[0]
    base = ["--recipe", recipe, "--model", model]
    value = getattr(resolved(base), field)
    if isinstance(value, bool):
        argv, wanted = ([f"--{'no-' if value else ''}{field.replace('_', '-')}"], not value)
    else:
        argv, wanted = OVERRIDES[field]
    assert wanted != value, f"pick another override for {field}: {recipe} sets it to {value}"
    overridden = resolved([*base, *argv])
    assert getattr(overridden, field) == wanted
    # Everything else stays the recipe's (typed --epochs also drops a recipe's --iterations).
    others = set(TrainConfig.__dataclass_fields__) - {field, "iterations"}
    recipe_config = resolved(base)
    assert all(getattr(overridden, name) == getattr(recipe_config, name) for name in others)


def test_typed_epochs_replace_a_recipes_iterations():
    paper = resolved(["--model", "resnet20", "--recipe", "paper", "--epochs", "3"])
    assert (paper.epochs, paper.iterations) == (3, None)


def test_every_recipe_field_exists():
    fields = set(TrainConfig.__dataclass_fields__)
    for recipe in RECIPES.values():
        assert set(recipe.values) <= fields
        for values in recipe.per_model.values():
            assert set(values) <= fields


@pytest.mark.slow
def test_config_json_and_checkpoint_record_the_recipe_and_its_values(batches_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, *tiny_train_args(batches_dir, run_dir, "--recipe", "fast", "--epochs", "1",
                                                      "--batch-size", "32", "--tta", "none"))
    assert code == 0, err
    assert ("recipe fast (the published fast ResNet-18 route, its ResNet-20 values measured on the JPEG copy "
            "(docs/recipes.md)); "
            "options typed on the command line override its values") in out.splitlines()
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["recipe"], config["nesterov"], config["cutout"], config["scheduler"], config["lr"]) == (
        "fast", True, 0, "triangular", 0.2)  # a 1-epoch run: the short-run peak lr
    from resnet_cifar.runfiles.checkpoints import load_checkpoint
    saved = load_checkpoint(run_dir / "last.pt")["config"]
    assert saved["recipe"] == "fast" and saved["translate_pad"] == "reflect" and saved["batch_size"] == 32


def test_help_lists_each_recipe(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in RECIPES:
        assert f"\n  {name} " in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--recipe", "paper", "--model", "resnet18"],
     "error: --recipe paper is for resnet20, resnet32, resnet44, resnet56, resnet110, resnet1202; "
     "got --model resnet18"),
    (["--recipe", "paper", "--model", "preact-resnet164"],  # He et al. 2016's nets: not the 2015 schedule's
     "error: --recipe paper is for resnet20, resnet32, resnet44, resnet56, resnet110, resnet1202; "
     "got --model preact-resnet164"),
    (["--model", "wrn-28-12"], "error: argument --model: invalid choice: 'wrn-28-12'"),
    (["--recipe", "wrn", "--model", "preact-resnet18"],
     "error: --recipe wrn is for wrn-16-8, wrn-28-2, wrn-28-10, wrn-40-2, wrn-40-4; got --model preact-resnet18 "
     "(--recipe seed, standard, fast, airbench94, airbench94-muon, airbench94-muon-cpu, airbench95 and "
     "airbench96 take any model)"),
    (["--recipe", "resnext", "--model", "resnet50"],
     "error: --recipe resnext is for resnext29-32x4d, resnext29-8x64d, resnext29-16x64d; got --model resnet50 "
     "(--recipe seed, standard, fast, airbench94, airbench94-muon, airbench94-muon-cpu, airbench95 and "
     "airbench96 take any model)"),
    (["--model", "resnet20", "--dropout", "0.3"],
     "error: --dropout is for the nets of pre-activation basic blocks (preact-resnet18, preact-resnet34, wrn-16-8, "
     "wrn-28-2, wrn-28-10, wrn-40-2, wrn-40-4); got --model resnet20"),
    (["--dropout", "1"], "error: argument --dropout: expected a number in [0, 1), got '1'"),
    (["--recipe", "cifar"], "error: argument --recipe: invalid choice: 'cifar'"),
    (["--epochs", "3", "--iterations", "100"], "error: --epochs and --iterations both set the run's length"),
    (["--cutout", "40"], "error: argument --cutout: expected an integer from 0 (off) to 32, got '40'"),
    (["--ema", "1"], "error: argument --ema: expected a number in (0, 1), got '1'"),
    (["--mixup", "-1"], "error: argument --mixup: expected a number from 0 to 1e6, got '-1'"),
    (["--augment", "autoaug"], "error: argument --augment: invalid choice: 'autoaug'"),
    (["--seeds", "1", "1"], "error: --seeds lists a seed twice: 1 1"),
    (["--seeds", "1", "2", "--seed", "3"], "error: --seed and --seeds both choose the seed"),
    (["--mode", "eval", "--checkpoint", "x.pt", "--seeds", "1"], "error: --seeds is for --mode train"),
])
def test_bad_recipe_input_is_one_line(batches_dir, tmp_path, capsys, argv, message):
    run_dir = [] if "--mode" in argv else ["--run-dir", tmp_path / "r"]
    code, _, err = run_cli(capsys, "--data-dir", batches_dir, "--no-download", *run_dir, *argv)
    assert code == 2
    assert err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_seeds_runner_trains_one_run_per_seed_and_reports_mean_and_std(batches_dir, tmp_path, capsys):
    root = tmp_path / "runs"
    code, out, err = run_cli(capsys, *tiny_train_args(batches_dir, root, "--epochs", "1", "--seeds", "0", "1", "2"))
    assert code == 0, err
    finals = []
    for seed in (0, 1, 2):
        config = json.loads((root / f"seed{seed}" / "config.json").read_text())
        assert config["seed"] == seed
        finals.append(float(read_metrics(root / f"seed{seed}")[-1]["test_acc"]))
        # the process's start-up is the first seed's; the later runs began inside the process
        before_run_s = json.loads((root / f"seed{seed}" / "timings.json").read_text())["before_run_s"]
        assert (before_run_s is not None) == (seed == 0)
    summary = json.loads((root / "seeds.json").read_text())
    mean = sum(finals) / 3
    std = math.sqrt(sum((a - mean) ** 2 for a in finals) / 2)
    assert summary["seeds"] == [0, 1, 2] and summary["test_accuracy"] == pytest.approx(finals, abs=1e-6)
    assert summary["mean"] == pytest.approx(mean, abs=1e-6) and summary["std"] == pytest.approx(std, abs=1e-6)
    assert f"over 3 seeds (tta none): {100 * mean:.2f}% ± {100 * std:.2f}" in out


@pytest.mark.slow
def test_eval_reports_weights_and_tta(batches_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, *tiny_train_args(batches_dir, run_dir, "--epochs", "1", "--ema", "0.9",
                                                    "--tta", "flip"))
    assert code == 0, err
    row = read_metrics(run_dir)[-1]
    assert row["tta"] == "flip" and row["ema_test_acc"] != ""
    output = tmp_path / "ema.json"
    code, out, err = run_cli(capsys, "--mode", "eval", "--checkpoint", run_dir / "last.pt", "--weights", "ema",
                             "--tta", "flip", "--precision", "fp32", "--output", output)
    assert code == 0, err
    report = json.loads(output.read_text())
    assert (report["weights"], report["tta"]) == ("ema", "flip")
    assert "(ema weights, tta flip)" in out
    # The same figures training logged for the moving average at its last epoch.
    assert report["accuracy"] == pytest.approx(float(row["ema_test_acc"]), abs=1e-6)
    code, _, _ = run_cli(capsys, "--mode", "eval", "--checkpoint", run_dir / "last.pt", "--tta", "flip",
                         "--precision", "fp32", "--output", output)
    assert json.loads(output.read_text())["accuracy"] == pytest.approx(float(row["test_acc"]), abs=1e-6)


@pytest.mark.slow
def test_eval_of_ema_weights_needs_a_run_with_ema(batches_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_cli(capsys, *tiny_train_args(batches_dir, run_dir, "--epochs", "1"))[0] == 0
    code, _, err = run_cli(capsys, "--mode", "eval", "--checkpoint", run_dir / "last.pt", "--weights", "ema")
    assert code == 2
    assert err == (f"error: --weights ema: checkpoint {run_dir / 'last.pt'} holds no moving average "
                   f"(train with --ema DECAY); use --weights raw\n")


def test_resnet9_recipe_resolves_to_pages_route():
    config = resolved(["--recipe", "resnet9", "--model", "resnet9"])
    assert (config.epochs, config.batch_size, config.lr, config.momentum, config.nesterov, config.weight_decay) == (
        24, 512, 0.4, 0.9, True, 5e-4)
    assert (config.scheduler, config.triangular_peak, config.triangular_start, config.label_smoothing) == (
        "triangular", 5 / 24, 0.0, 0.2)
    assert (config.translate_pad, config.cutout, config.tta, config.eval_every) == ("reflect", 8, "flip", 0)
    # Page's piecewise-linear lr: 0 at the start, 0.4 at epoch 5, 0 at epoch 24 (97 steps an epoch).
    schedule = LRSchedule(config, steps_per_epoch=97)
    assert schedule.lr(0, 0) == 0.0
    assert schedule.lr(2, 48) == pytest.approx(0.4 * (2 * 97 + 48) / (5 * 97))
    assert schedule.lr(5, 0) == pytest.approx(0.4)
    assert schedule.lr(14, 48) == pytest.approx(0.4 * (1 - (9 * 97 + 48) / (19 * 97)))
    assert schedule.lr(23, 96) == pytest.approx(0.4 / (19 * 97))
    # The same shape over another length: one epoch peaks at 5/24 of its steps.
    short = LRSchedule(resolved(["--recipe", "resnet9", "--model", "resnet9", "--epochs", "1"]), steps_per_epoch=97)
    assert short.lr(0, 20) == pytest.approx(0.4) and short.lr(0, 96) == pytest.approx(0.4 / 77)
    with pytest.raises(UserError, match="^--recipe resnet9 is for resnet9; got --model resnet18"):
        resolved(["--recipe", "resnet9", "--model", "resnet18"])


@pytest.mark.parametrize(("argv", "lr", "epochs"), [
    (["--model", "resnet20", "--epochs", "4"], 0.2, 4),  # short: the peak lr measured best there
    (["--model", "resnet56", "--epochs", "1"], 0.2, 1),
    (["--model", "resnet20", "--epochs", "6"], 0.2, 6),
    (["--model", "resnet20", "--epochs", "7"], 0.4, None),  # longer: the recipe's own
    (["--model", "resnet20"], 0.4, None),  # the recipe's 30 epochs
    (["--model", "resnet20", "--epochs", "3", "--lr", "0.4"], 0.4, None),  # typed: never replaced
    (["--model", "resnet18", "--epochs", "2"], 0.4, None),  # not measured on resnet18
])
def test_fast_takes_its_short_run_lr_for_runs_of_six_epochs_or_fewer(capsys, argv, lr, epochs):
    assert cli.main(["--recipe", "fast", "--dry-run", *argv]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["config"]["lr"] == lr
    if epochs is None:
        assert "short_run" not in plan
    else:
        assert plan["short_run"] == (f"a {epochs}-epoch run: lr 0.2 for runs of 6 epochs or fewer (measured on "
                                     "resnet20: +3.7 points at 3 epochs, +1.2 at 4; 0.4 wins at 9)")


def test_a_length_unknown_before_the_run_leaves_the_short_run_lr_to_it(capsys):
    assert cli.main(["--recipe", "fast", "--model", "resnet20", "--time-budget", "15m", "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["config"]["lr"] == 0.4
    assert plan["short_run"].endswith("0.4 wins at 9): decided when the run's length is known")


@pytest.mark.parametrize(("iterations", "lr"), [("42", 0.2), ("43", 0.4)])
def test_a_run_given_in_steps_is_short_by_its_data(batches_dir, tmp_path, capsys, iterations, lr):
    """250 images in batches of 32: 7 steps an epoch, so 42 steps are 6 epochs and 43 are more."""
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "--model", "resnet20", "--recipe", "fast", "--data-dir", batches_dir,
                             "--run-dir", run_dir, "--batch-size", "32", "--iterations", iterations, "--max-steps",
                             "1", "--tta", "none", "--quiet", "--no-download", "--precision", "fp32")
    assert code == 0, err
    assert json.loads((run_dir / "config.json").read_text())["lr"] == lr
    assert ("a 6-epoch run: lr 0.2" in out) == (lr == 0.2)


def test_a_resumed_run_keeps_its_recorded_lr(batches_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, *tiny_train_args(batches_dir, run_dir, "--recipe", "fast", "--epochs", "3",
                                                    "--lr", "0.4", "--max-steps", "2", "--tta", "none"))
    assert code == 0, err
    code, out, err = run_cli(capsys, "--resume", run_dir / "last.pt", "--quiet", "--max-steps", "4")
    assert code == 0, err
    assert json.loads((run_dir / "config.json").read_text())["lr"] == 0.4 and "short" not in out
