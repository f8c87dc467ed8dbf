"""--route auto: the curves, the prediction from injected speeds, the cache, the line that says
what was picked, and every refusal."""
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import run_cli

from resnet_cifar.config import TrainConfig
from resnet_cifar.recipes.routes import ROUTES, CurvePoint, Route
from resnet_cifar.training import route_choice
from resnet_cifar.training.route_choice import RouteCost, choose_route, measure_cost, wants_route
from resnet_cifar.training.run import resolve_run

REPO = Path(__file__).resolve().parent.parent
# Costs of the CPU routes close to a 2-core AVX512-BF16 CPU's (s a step, s an evaluated image, build).
CPU_COSTS = {"airbench94-muon-cpu": RouteCost(2.2, 0.0012, 3.0), "speedrun": RouteCost(3.9, 0.0005, 3.0),
             "airbench94": RouteCost(2.0, 0.0012, 3.0), "fast": RouteCost(0.42, 0.0004, 2.0)}


def measuring(costs: dict[str, RouteCost], calls: list | None = None):
    def measure(configs: list[TrainConfig]) -> list[RouteCost]:
        if calls is not None:
            calls.extend(config.recipe for config in configs)
        return [costs[config.recipe] for config in configs]
    return measure


def budget_config(budget: str, **values) -> TrainConfig:
    return TrainConfig(time_budget=budget, device="cpu", **values)


def test_the_curve_is_linear_in_log_epochs_between_points_and_flat_beyond():
    route = Route("fast", "resnet20", (CurvePoint(2, 80.0, "a"), CurvePoint(8, 90.0, "b")))
    assert route.accuracy_at(4) == pytest.approx(85.0)  # halfway between log 2 and log 8
    assert route.accuracy_at(2) == 80.0 and route.accuracy_at(8) == 90.0
    assert route.accuracy_at(50) == 90.0  # no gain claimed past the longest point
    assert route.accuracy_at(1.9) is None  # nothing measured says what so short a run gives


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.name)
def test_every_curve_point_is_a_measured_figure_in_the_docs(route):
    epochs = [point.epochs for point in route.curve]
    assert epochs == sorted(epochs) and len(set(epochs)) == len(epochs)
    for point in route.curve:
        document, _, entry = point.source.partition(", ")
        text = (REPO / document).read_text()
        assert f"{point.accuracy:.2f}%" in text, (route.name, point)
        assert entry, point


def test_a_budget_picks_the_route_its_epochs_buy_the_most_with(tmp_path):
    config, line = choose_route(budget_config("15m"), {"time_budget"}, measure=measuring(CPU_COSTS),
                                cache=tmp_path / "routes.json", spent_s=2.0)
    predictions = {route.recipe: route_choice.predict(route, route_choice.candidate_config(
        budget_config("15m"), {"time_budget"}, route), CPU_COSTS[route.recipe], 900.0, 2.0)
        for route in ROUTES if "cpu" in route.devices}
    best = max(predictions.values(), key=lambda p: -1.0 if p.accuracy is None else p.accuracy)
    assert (config.recipe, config.model, config.route) == (best.route.recipe, best.route.model, None)
    assert line.startswith(f"route auto for --time-budget 15m on cpu: --recipe {best.route.recipe} --model "
                           f"{best.route.model}, {best.epochs:.1f} epochs fit, {best.accuracy:.1f}% expected")
    assert "(timed now in 0 s, taken from this budget: " in line and "\n" not in line
    assert config.time_budget == "15m" and config.iterations is None  # the run plans its own steps


def test_the_fastest_route_wins_when_the_others_fit_too_little(tmp_path):
    slow_airbench = {**CPU_COSTS, **{name: RouteCost(60.0, 0.01, 3.0) for name in
                                     ("airbench94-muon-cpu", "speedrun", "airbench94")}}
    config, line = choose_route(budget_config("30m"), {"time_budget"}, measure=measuring(slow_airbench),
                                cache=tmp_path / "routes.json", spent_s=2.0)
    assert (config.recipe, config.model) == ("fast", "resnet20"), line
    assert "--recipe fast --model resnet20" in line and "(shorter than its curve)" in line


def test_the_epochs_that_fit_are_the_plan_a_budgeted_run_makes():
    route = next(route for route in ROUTES if route.recipe == "airbench94")
    config = route_choice.candidate_config(budget_config("10m"), {"time_budget"}, route)
    cost = RouteCost(step_s=2.0, image_s=0.001, build_s=4.0)
    prediction = route_choice.predict(route, config, cost, 600.0, 10.0)
    # 48 steps an epoch; its own measurement: build 4, 2 + 3 steps (10 s, past measure_seconds(600) =
    # 6 s), 4 evaluation batches of 256 images, a CPU's (1.0 s); then plan_steps as the run will.
    own = 4.0 + 10.0 + 4 * 0.256
    plan = route_choice.plan_steps(600.0, 10.0 + own, 2.0, 10.0, 48, 0, 4.0)
    assert prediction.epochs == pytest.approx(plan.steps / 48)
    assert prediction.accuracy == pytest.approx(route.accuracy_at(plan.steps / 48))


def test_costs_are_measured_once_then_read_from_the_cache(tmp_path):
    calls: list[str] = []
    cache = tmp_path / "routes.json"
    first = choose_route(budget_config("15m"), {"time_budget"}, measure=measuring(CPU_COSTS, calls), cache=cache,
                         spent_s=2.0)
    cpu_routes = [route.recipe for route in ROUTES if "cpu" in route.devices]
    assert calls == cpu_routes  # ResNet-18 is no candidate on a CPU
    stored = json.loads(cache.read_text())
    assert len(stored) == len(cpu_routes) and all(set(v) == {"step_s", "image_s", "build_s"} for v in stored.values())
    second = choose_route(budget_config("15m"), {"time_budget"}, measure=measuring(CPU_COSTS, calls), cache=cache,
                          spent_s=2.0)
    assert calls == cpu_routes and second[0] == first[0]
    assert second[1].endswith("(speeds cached)")


def test_the_choice_is_the_one_a_run_with_the_costs_cached_makes(tmp_path, monkeypatch):
    now = {"age": 3.0}

    def slow_measure(configs: list[TrainConfig]) -> list[RouteCost]:
        now["age"] += 100.0 * len(configs)  # timing routes takes time a run with the cache does not spend
        return [CPU_COSTS[config.recipe] for config in configs]

    monkeypatch.setattr(route_choice, "process_age_s", lambda: now["age"])
    first = choose_route(budget_config("5m"), {"time_budget"}, measure=slow_measure, cache=tmp_path / "r.json")
    now["age"] = 3.0
    second = choose_route(budget_config("5m"), {"time_budget"}, measure=slow_measure, cache=tmp_path / "r.json")
    assert first[0] == second[0]
    assert first[1].split(" (timed now")[0] == second[1].split(" (speeds cached)")[0]


def test_a_budgeted_run_keeps_its_own_measurement_as_its_routes_cost(tmp_path):
    cache = tmp_path / "routes.json"
    choose_route(budget_config("15m"), {"time_budget"}, measure=measuring(CPU_COSTS), cache=cache, spent_s=2.0)
    route = next(route for route in ROUTES if route.recipe == "speedrun")
    config = route_choice.candidate_config(budget_config("15m"), {"time_budget"}, route)
    plan = route_choice.plan_steps(900.0, 30.0, 3.5, 15.0, 32, 0, 2.0)
    route_choice.remember_cost(config, plan, 10_000, cache)
    stored = json.loads(cache.read_text())[route_choice.cache_key(route_choice.resolve_device("cpu"), config)]
    assert stored == {"step_s": 3.5, "image_s": 15.0 / 10_000, "build_s": CPU_COSTS["speedrun"].build_s}
    _, line = choose_route(budget_config("15m"), {"time_budget"}, measure=measuring({}), cache=cache, spent_s=2.0)
    assert line.endswith("(speeds cached)")
    folder_config = TrainConfig(dataset="folder", time_budget="15m", device="cpu")
    route_choice.remember_cost(folder_config, plan, 10_000, cache)  # not a CIFAR-10 run: nothing kept
    assert len(json.loads(cache.read_text())) == len(CPU_COSTS)


def test_a_seeds_set_is_finished_on_the_route_it_started_on(tmp_path):
    from resnet_cifar.cli.commands import finish_command

    config, _ = choose_route(budget_config("15m"), {"time_budget"}, measure=measuring(CPU_COSTS),
                             cache=tmp_path / "routes.json", spent_s=2.0)
    command = finish_command(config, {"time_budget"}, [0, 1], tmp_path / "set")
    assert f"--recipe={config.recipe}" in command and f"--model={config.model}" in command
    assert "--time-budget=15m" in command and command.endswith("--seeds 0 1")


def test_a_typed_option_holds_for_every_candidate(tmp_path):
    config, _ = choose_route(budget_config("15m", seed=3, label_smoothing=0.05),
                             {"time_budget", "seed", "label_smoothing"}, measure=measuring(CPU_COSTS),
                             cache=tmp_path / "routes.json", spent_s=2.0)
    assert (config.seed, config.label_smoothing) == (3, 0.05)


def test_when_the_route_is_the_budgets_to_choose():
    assert wants_route(budget_config("5m"), {"time_budget"})
    assert not wants_route(budget_config("5m", model="resnet20"), {"time_budget", "model"})
    assert not wants_route(budget_config("5m", recipe="fast"), {"time_budget", "recipe"})
    assert not wants_route(budget_config("5m", dataset="folder"), {"time_budget", "dataset"})
    assert not wants_route(TrainConfig(), set())
    assert wants_route(TrainConfig(route="auto"), {"route"})  # then refused: no budget


@pytest.mark.parametrize(("args", "message"), [
    (["--route", "auto"], "--route auto picks the route a time budget buys the most with: give --time-budget "
                          "(e.g. --time-budget 15m)"),
    (["--route", "auto", "--time-budget", "5m", "--model", "resnet20"],
     "--route auto picks the model and recipe; drop --model (or --route auto)"),
    (["--route", "auto", "--time-budget", "5m", "--recipe", "fast", "--model", "resnet20"],
     "--route auto picks the model and recipe; drop --model and --recipe (or --route auto)"),
    (["--route", "auto", "--time-budget", "5m", "--dataset", "folder"],
     "--route auto picks from routes measured on CIFAR-10; for --dataset folder name --model and --recipe"),
    (["--route", "fastest"], "argument --route: invalid choice: 'fastest' (choose from "),
])
def test_route_refusals(capsys, args, message):
    code, out, err = run_cli(capsys, "--dry-run", *args)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert message in err


def test_route_auto_is_refused_under_torchrun():
    environ = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "x",
               "MASTER_PORT": "1", "TORCHELASTIC_RUN_ID": "job", "GROUP_RANK": "0"}
    with pytest.raises(route_choice.UserError, match="a --time-budget with no --model or --recipe times each route in "
                                                     "one process; under torchrun name the route"):
        resolve_run(budget_config("15m"), {"time_budget"}, environ=environ)


def test_a_refused_run_folder_is_said_before_any_route_is_timed(capsys, tmp_path, monkeypatch):
    timed: list = []
    monkeypatch.setattr(route_choice, "measure_costs", measuring(CPU_COSTS, timed))
    monkeypatch.setattr(route_choice, "cache_file", lambda: tmp_path / "routes.json")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "last.pt").write_bytes(b"a run's checkpoint")
    code, out, err = run_cli(capsys, "--time-budget", "15m", "--device", "cpu", "--run-dir", str(tmp_path / "old"))
    assert code == 2 and out == "" and "--run-dir" in err and err.count("\n") == 1, err
    assert timed == []  # no route timed for a run that cannot start


def test_a_budget_too_short_for_every_curve_is_refused(tmp_path):
    with pytest.raises(route_choice.UserError, match=r"--time-budget 20s is shorter than every route's measured "
                                                     r"curve \(airbench94-muon-cpu airbench94 0\.0 epochs"):
        choose_route(budget_config("20s"), {"time_budget"}, measure=measuring(CPU_COSTS),
                     cache=tmp_path / "routes.json", spent_s=2.0)


def test_dry_run_shows_the_choice(capsys, monkeypatch):
    monkeypatch.setattr(route_choice, "measure_costs", measuring(CPU_COSTS))
    monkeypatch.setattr(route_choice, "process_age_s", lambda: 2.0)  # the command's, not the test process's age
    code, out, _ = run_cli(capsys, "--time-budget", "15m", "--device", "cpu", "--dry-run")
    plan = json.loads(out)
    assert code == 0 and plan["route"].startswith("route auto for --time-budget 15m on cpu: --recipe ")
    chosen = plan["route"].split("--recipe ")[1].split(",")[0]
    recipe, model = chosen.split(" --model ")
    assert (plan["config"]["recipe"], plan["config"]["model"], plan["config"]["route"]) == (recipe, model, None)
    code, out, _ = run_cli(capsys, "--time-budget", "15m", "--model", "resnet20", "--recipe", "fast", "--dry-run")
    assert code == 0 and "route" not in json.loads(out)  # a route typed is the route


def test_a_route_is_timed_with_its_own_step():
    config = TrainConfig(model="resnet20", recipe="fast", batch_size=8, precision="fp32", device="cpu")
    cost = measure_cost(config)
    assert all(math.isfinite(value) and value > 0 for value in (cost.step_s, cost.image_s, cost.build_s))
    assert cost.image_s < cost.step_s  # an evaluated image costs less than a step of 8


def test_the_routes_take_turns_so_a_drifting_machine_slows_each_alike(monkeypatch):
    now, calls = {"t": 0.0}, []
    slowdown = {"factor": 1.0}  # the machine: each call slower than the one before

    def fake_build(config, data):
        now["t"] += 1.0
        return SimpleNamespace(eval_loaders={"test": SimpleNamespace(batch_size=256)}, name=config.model)

    def fake_calls(parts, config):
        step_s, batch_s = {"resnet20": (1.0, 0.5), "resnet32": (2.0, 1.0)}[parts.name]

        def paying(kind, seconds):
            def call():
                calls.append((parts.name, kind))
                now["t"] += seconds * slowdown["factor"]
                slowdown["factor"] *= 1.1
            return call
        return paying("step", step_s), paying("batch", batch_s)

    monkeypatch.setattr(route_choice, "build_run", fake_build)
    monkeypatch.setattr(route_choice, "timed_calls", fake_calls)
    configs = [TrainConfig(model=model, device="cpu") for model in ("resnet20", "resnet32")]
    slowdown["factor"] = 1.0
    costs = route_choice.measure_costs(configs, clock=lambda: now["t"])
    assert calls == [("resnet20", "step"), ("resnet20", "batch"), ("resnet32", "step"), ("resnet32", "batch"),
                     ("resnet20", "step"), ("resnet32", "step"), ("resnet20", "step"), ("resnet32", "step"),
                     ("resnet20", "batch"), ("resnet32", "batch")]
    # Calls 5-8 are each 1.1x slower than the last: interleaved, the step ratio stays near 2 (2.2 here),
    # where timing one route's two steps after the other's would read 2 x 1.1^2 = 2.42.
    ratio = costs[1].step_s / costs[0].step_s
    assert ratio == pytest.approx(2.0 * 1.1, rel=1e-9)
    assert costs[0].image_s == pytest.approx(0.5 * 1.1**8 / 256)


def test_the_api_says_the_route_it_picked(capsys, tmp_path, monkeypatch):
    import resnet_cifar
    from resnet_cifar import api

    monkeypatch.setattr(route_choice, "measure_costs", measuring(CPU_COSTS))
    monkeypatch.setattr(route_choice, "cache_file", lambda: tmp_path / "routes.json")
    monkeypatch.setattr(route_choice, "process_age_s", lambda: 2.0)
    trained = []

    def run_training(run):
        trained.append(run.config)
        return 0, {}

    monkeypatch.setattr(api, "run_training", run_training)
    resnet_cifar.train(time_budget="15m", device="cpu")
    line = capsys.readouterr().out
    assert line.startswith("route auto for --time-budget 15m on cpu: --recipe ") and line.count("\n") == 1
    assert f"--recipe {trained[0].recipe} --model {trained[0].model}," in line
