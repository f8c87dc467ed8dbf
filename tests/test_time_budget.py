"""--time-budget: durations, the plan from measured costs, the measurement with a fake clock, and
budgeted runs that record, resume and refuse."""
import argparse
import json
import math
from types import SimpleNamespace

import pytest
import torch
from helpers import read_metrics, run_cli, same_state, training_state

from resnet_cifar.config import TrainConfig
from resnet_cifar.optim.schedules import LRSchedule
from resnet_cifar.runfiles.checkpoints import load_checkpoint
from resnet_cifar.training import run as run_module
from resnet_cifar.training import time_budget
from resnet_cifar.training.time_budget import STEP_SLACK, evaluations_in, plan_steps
from resnet_cifar.utils.distributed import Distributed
from resnet_cifar.utils.durations import duration_seconds, parse_duration
from resnet_cifar.utils.timings import seconds_per_call, warm_then_time


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400),
                                               ("1.5m", 90), ("2m30s", 150)])
def test_durations(text, seconds):
    assert parse_duration(text) == text and duration_seconds(text) == seconds


@pytest.mark.parametrize("bad", ["", "30", "m", "30x", "0s", "-5m", "1m1h"])
def test_bad_durations(bad):
    with pytest.raises(argparse.ArgumentTypeError, match="expected a duration"):
        parse_duration(bad)


def test_evaluations_counted_as_the_run_does():
    assert evaluations_in(10, 0) == 1 and evaluations_in(10, 1) == 10 and evaluations_in(10, 4) == 3


@pytest.mark.parametrize(("budget", "step_s", "evaluation_s", "per_epoch", "every", "steps", "epochs", "evaluations"), [
    # fast resnet20 on a 2-core CPU, one flip-translate evaluation. 1,759 s are left after 20 s spent,
    # the final report's 3 s and 1% held back; 9,448 steps at 0.17 s x 1.03 are 1,654.3 s, their 95
    # epochs' checkpoints 47.5 s, the evaluation 57 s: 1,758.8 s. One step more is 1,759.0 s.
    (1800, 0.17, 57, 100, 0, 9448, 95, 1),
    # every epoch evaluated (9 s): 65 whole epochs cost 1,755.7 s; a 66th epoch's first step 1,765.3 s.
    (1800, 0.17, 9, 100, 1, 6500, 65, 65),
    # a GPU minute: 36.4 s left; 2,162 steps of 11.33 ms are 24.50 s, 23 epochs' checkpoints 11.5 s,
    # the evaluation 0.4 s: 36.395 s. One step more is 36.407 s.
    (60, 0.011, 0.4, 97, 0, 2162, 23, 1),
])
def test_the_plan_is_the_most_steps_that_fit(budget, step_s, evaluation_s, per_epoch, every, steps, epochs,
                                             evaluations):
    plan = plan_steps(budget, 20.0, step_s, evaluation_s, per_epoch, every)
    assert (plan.steps, plan.epochs, plan.evaluations) == (steps, epochs, evaluations)


def test_what_the_run_pays_again_is_taken_off_the_budget():
    alone = plan_steps(1800, 60.0, 2.0, 60.0, 100, 0)
    with_build = plan_steps(1800, 20.0, 2.0, 60.0, 100, 0, repeat_s=40.0)
    assert with_build.steps == alone.steps  # as if those 40 s had already been spent
    assert plan_steps(1800, 20.0, 2.0, 60.0, 100, 0).steps - with_build.steps == math.floor(40 / (2.0 * STEP_SLACK))
    assert "~40 s to build the run again" in with_build.describe("30m")
    assert "build the run again" not in plan_steps(1800, 20.0, 2.0, 60.0, 100, 0, repeat_s=0.4).describe("30m")


def test_a_compiling_first_step_is_counted_apart_from_the_step():
    now = {"t": 0.0}
    costs = iter([33.0, 2.5] + [2.0] * 20)  # the first step compiles, the second still warms up

    def step():
        now["t"] += next(costs)

    extra, per_step = warm_then_time(step, lambda: now["t"], 2, min_seconds=10.0)
    assert per_step == pytest.approx(2.0) and extra == pytest.approx(33.0 + 2.5 - 2 * 2.0)
    costs = iter([1.0] + [2.0] * 20)  # a warm-up faster than the median: nothing to add
    assert warm_then_time(step, lambda: now["t"], 1, min_seconds=1.0)[0] == 0.0


class Costs:
    """Batches whose use advances a fake clock: the first by `first` seconds, the others by `then`."""

    def __init__(self, now, first, then, count):
        self.now, self.costs, self.batch_size, self.count = now, [first] + [then] * 1000, 500, count
        self.split = range(10_000)

    def __len__(self):
        return self.count

    def epoch(self, epoch=0):
        for _ in range(self.count):
            yield self, None

    def pay(self):
        self.now["t"] += self.costs.pop(0)


class FakeRun:
    """Copies of a run whose building, training steps and evaluation batches advance a fake clock:
    the first copy compiles (slow first step and batch); later ones reuse its graphs unless
    compiles_again."""

    def __init__(self, now, compiles_again: bool):
        self.now, self.compiles_again, self.builds = now, compiles_again, 0

    def build(self, config, data, dist):
        self.builds += 1
        self.now["t"] += 4.0
        first = self.builds == 1 or self.compiles_again
        model = SimpleNamespace(eval=lambda: None, train=lambda: None)
        return SimpleNamespace(train_loader=Costs(self.now, 30.0 if first else 2.5, 2.0, 100),
                               eval_loaders={"test": Costs(self.now, 20.0 if first else 3.5, 3.0, 20)},
                               report_split="test", ctx=SimpleNamespace(eval_model=model),
                               device=torch.device("cpu"), precision="fp32")


def fake_train_step(ctx, batch, targets, lr, progress=None):
    batch.pay()
    return torch.zeros(()), None


def fake_tta_logits(model, batch, tta, fraction=0.25):
    batch.pay()
    return torch.zeros(1)


@pytest.mark.parametrize(("compile_", "compiles_again"), [(False, False), (True, False), (True, True)])
def test_the_plan_from_a_measured_warm_up_with_a_fake_clock(monkeypatch, compile_, compiles_again):
    now = {"t": 100.0}  # 100 s of start-up and data before the measurement
    run = FakeRun(now, compiles_again)
    monkeypatch.setattr(time_budget, "build_run", run.build)
    monkeypatch.setattr(time_budget, "train_step", fake_train_step)
    monkeypatch.setattr(time_budget, "tta_logits", fake_tta_logits)
    config = TrainConfig(model="resnet20", time_budget="30m", tta="flip-translate", compile=compile_)
    plan = time_budget.measure_and_plan(config, None, Distributed(), started=0.0, clock=lambda: now["t"])
    assert plan.step_s == pytest.approx(2.0) and plan.evaluation_s == pytest.approx(3.0 / 500 * 10_000)
    if not compile_:  # the copy's own first calls: 30 + 2 - 2 x 2 s (two untimed steps), then 20 - 3 s
        assert plan.repeat_s == pytest.approx(4.0 + 28.0 + 17.0) and run.builds == 1
    elif compiles_again:  # a second copy's first calls pay the build again
        assert plan.repeat_s == pytest.approx(4.0 + 28.0 + 17.0) and run.builds == 2
    else:  # a second copy reuses the graphs: only its small first-call cost is counted
        assert plan.repeat_s == pytest.approx(4.0 + 0.5 + 0.5) and run.builds == 2
    assert plan.spent_s == pytest.approx(now["t"])
    assert plan.steps == plan_steps(1800, plan.spent_s, 2.0, 60.0, 100, config.eval_every, plan.repeat_s).steps


def test_nothing_fits_when_the_budget_is_spent():
    assert plan_steps(30, 29.5, 0.1, 1, 10, 0).steps == 0


def test_the_measurement_window_grows_with_the_budget():
    assert time_budget.measure_seconds(90) == 3.0  # at least 3 s
    assert time_budget.measure_seconds(15 * 60) == 9.0  # 1% of the budget
    assert time_budget.measure_seconds(30 * 60) == 18.0
    assert time_budget.measure_seconds(2 * 3600) == 20.0  # at most 20 s


def test_the_median_step_ignores_a_slow_moment():
    now = {"t": 0.0}
    durations = iter([9.0, 9.0, 2.0, 2.0, 7.0, 2.0, 2.1])  # two untimed, then one slow step among five

    def step():
        now["t"] += next(durations)

    clock = lambda: now["t"]  # noqa: E731
    assert seconds_per_call(step, clock, untimed=2, min_seconds=100.0, min_calls=3, max_calls=5,
                            median=True) == pytest.approx(2.0)
    now["t"], durations = 0.0, iter([9.0, 9.0, 2.0, 2.0, 7.0, 2.0, 2.1])
    assert seconds_per_call(step, clock, untimed=2, min_seconds=100.0, min_calls=3, max_calls=5) == pytest.approx(3.02)


def test_step_time_is_measured_after_the_untimed_steps():
    now = {"t": 0.0}
    costs = iter([5.0, 5.0] + [0.25] * 100)  # two slow first steps, then 0.25 s each

    def step():
        now["t"] += next(costs)

    assert seconds_per_call(step, clock=lambda: now["t"], untimed=2, min_seconds=3.0) == pytest.approx(0.25)
    assert now["t"] == pytest.approx(10 + 0.25 * 12)  # timed until 3 s had passed


def budget_args(data_dir, run_dir, *extra: str) -> list:
    """A ResNet-20 run on the 250-image synthetic set (7 steps of 32 an epoch), its length unset."""
    return ["--mode", "train", "--model", "resnet20", "--data-dir", data_dir, "--run-dir", run_dir,
            "--batch-size", "32", "--quiet", "--no-download", "--precision", "fp32", *extra]


def test_time_budget_refuses_another_length(batches_dir, tmp_path, capsys):
    for typed in (["--epochs", "3"], ["--iterations", "30"]):
        code, out, err = run_cli(capsys, *budget_args(batches_dir, tmp_path / "run", "--time-budget", "1m", *typed))
        assert code == 2 and out == ""
        assert err == f"error: --time-budget and {typed[0]} both set the run's length; give one of them\n"
    code, _, err = run_cli(capsys, "--time-budget", "soon")
    assert code == 2 and "argument --time-budget: expected a duration such as 90s, 30m, 2h or 1h30m" in err


@pytest.mark.slow
def test_a_budget_already_spent_is_one_line_and_leaves_nothing(batches_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(run_module, "process_age_s", lambda: 100.0)
    code, _, err = run_cli(capsys, *budget_args(batches_dir, tmp_path / "run", "--time-budget", "30s"))
    assert code == 2 and err.startswith("error: --time-budget 30s: no training step fits")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize(("model", "recipe"), [("resnet20", "fast"), ("airbench94", "airbench94"),
                                               ("airbench94", "airbench94-muon")])
def test_a_budgeted_run_records_its_steps_and_resumes_them(batches_dir, tmp_path, capsys, monkeypatch, model, recipe):
    monkeypatch.setattr(run_module, "process_age_s", lambda: 0.5)
    monkeypatch.setattr(time_budget, "MEASURE_SECONDS", (0.3, 0.3))
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, *budget_args(batches_dir, run_dir, "--recipe", recipe, "--time-budget", "30s",
                                                  "--max-steps", "3", "--model", model))
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("time budget 30s: "))
    steps = int(line.split(": ")[1].split(" steps")[0].replace(",", ""))
    assert steps > 3 and f"rerun with --iterations {steps}" in line
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["iterations"], config["time_budget"], config["scheduler"]) == (steps, "30s", "triangular")
    assert load_checkpoint(run_dir / "last.pt")["config"]["iterations"] == steps
    code, out, err = run_cli(capsys, "--resume", run_dir / "last.pt", "--quiet")
    assert code == 0, err
    assert "time budget" not in out  # the resumed run keeps its recorded steps
    assert load_checkpoint(run_dir / "last.pt")["global_step"] == steps
    assert len(read_metrics(run_dir)) == math.ceil(steps / 7)  # 250 images, batches of 32: 7 steps an epoch


# --- the budget as a ceiling: the rest of a run laid again over the steps that fit ---------------------------

def shaped_schedule(total=100, kind="triangular"):
    config = TrainConfig(scheduler=kind, lr=1.0, iterations=total, triangular_start=0.2, triangular_peak=0.23,
                         triangular_end=0.07)
    return LRSchedule(config, steps_per_epoch=10)


@pytest.mark.parametrize("kind", ["triangular", "cosine", "onecycle"])
def test_a_replanned_schedule_goes_on_from_its_lr_and_ends_where_its_shape_ends(kind):
    original, replanned = shaped_schedule(kind=kind), shaped_schedule(kind=kind)
    replanned.replan(40, 70)
    assert [replanned.lr(0, s) for s in range(40)] == [original.lr(0, s) for s in range(40)]
    assert replanned.lr(4, 0) == pytest.approx(original.lr(4, 0))  # no jump at the replanned step
    assert replanned.lr(6, 9) == pytest.approx(original.lr(9, 9))  # the last step's lr, 30 steps sooner
    assert replanned.total_steps == 70 and replanned.progress(6, 9) == 1.0
    lrs = [replanned.lr(0, s) for s in range(40, 70)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))  # past every shape's peak: falling
    longer = shaped_schedule(kind=kind)
    longer.replan(40, 130)  # ahead of its plan: more steps, the same course stretched
    assert longer.lr(12, 9) == pytest.approx(original.lr(9, 9))


def test_a_replan_is_in_the_schedules_state_and_composes():
    schedule = shaped_schedule()
    schedule.replan(40, 80)
    schedule.replan(60, 75)
    again = LRSchedule(TrainConfig(scheduler="triangular", lr=1.0, iterations=75, triangular_start=0.2,
                                   triangular_peak=0.23, triangular_end=0.07), steps_per_epoch=10)
    again.load_state_dict(schedule.state_dict())
    assert [again.lr(0, s) for s in range(75)] == [schedule.lr(0, s) for s in range(75)]
    assert schedule.lr(7, 4) == pytest.approx(shaped_schedule().lr(9, 9))


def watch(now, budget_s=200.0, step_s=1.0, steps=150, steps_per_epoch=10, eval_every=0, evaluation_s=5.0):
    plan = time_budget.BudgetPlan(budget_s, 10.0, step_s, evaluation_s, 0.0, steps_per_epoch, steps,
                                  math.ceil(steps / steps_per_epoch), 1)
    return time_budget.BudgetWatch(plan, deadline=budget_s, eval_every=eval_every, clock=lambda: now["t"])


def test_the_watch_keeps_a_run_on_plan_and_lays_a_late_or_early_one_again():
    now = {"t": 60.0}  # 140 s left for the steps, 5 s a tenth of them, one evaluation (5 s) and the report (3 s)
    on_plan = 175  # 125 s of steps, 13 epochs' 6.5 s, 8 s: 139.5 s
    assert watch(now).steps_that_fit(50, on_plan, 1.0) is None
    assert watch(now).steps_that_fit(50, on_plan + 2, 1.0) == on_plan  # 1.5 s late: over 0.5% of 200 s
    assert watch(now).steps_that_fit(50, on_plan - 3, 1.0) is None  # 3.5 s early: under 2%
    slower = watch(now).steps_that_fit(50, on_plan, 1.25)  # 25% slower than planned: fewer steps
    assert slower == 151  # 126.25 s of steps, 5.5 s, 8 s: 139.75 s
    faster = watch(now).steps_that_fit(50, on_plan, 0.8)
    assert faster > on_plan
    assert watch({"t": 199.0}).steps_that_fit(50, 150, 1.0) == 51  # out of time: one step, then the end


@pytest.mark.slow
def test_a_run_laid_again_records_its_new_length_and_resumes_it_exactly(batches_dir, tmp_path, capsys, monkeypatch):
    plan = time_budget.BudgetPlan(60.0, 5.0, 0.1, 1.0, 0.0, 7, 30, 5, 1)  # 30 steps planned, 7 an epoch
    monkeypatch.setattr(run_module, "measure_and_plan", lambda *args: plan)
    replans = []

    def replan_once(self, done_steps, total_steps, step_s):
        replans.append((done_steps, total_steps))
        return done_steps + 10 if len(replans) == 1 else None  # after the second epoch: 24 steps in all

    monkeypatch.setattr(time_budget.BudgetWatch, "steps_that_fit", replan_once)
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    args = ("--recipe", "fast", "--time-budget", "60s")
    code, out, err = run_cli(capsys, *budget_args(batches_dir, straight, *args))
    assert code == 0, err
    assert replans == [(14, 30), (21, 24)] and "the rest of the run laid over 10 steps instead of 16" in out
    assert json.loads((straight / "config.json").read_text())["iterations"] == 24
    payload = load_checkpoint(straight / "last.pt")
    assert (payload["config"]["iterations"], payload["global_step"]) == (24, 24) and len(read_metrics(straight)) == 4
    assert payload["schedule_state"]["warp"][0] == 14 and payload["schedule_state"]["shape_steps"] == 30
    replans.clear()
    code, _, err = run_cli(capsys, *budget_args(batches_dir, stopped, *args, "--max-steps", "18"))
    assert code == 0, err
    code, out, err = run_cli(capsys, "--resume", stopped / "last.pt", "--quiet")
    assert code == 0, err
    assert replans == [(14, 30)]  # the resumed run keeps the recorded length: no budget to watch
    assert same_state(training_state(load_checkpoint(stopped / "last.pt")), training_state(payload))
