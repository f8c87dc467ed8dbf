"""--route auto: the route (recipe and model) that a --time-budget buys the most accuracy with on
this machine.

Each candidate's step, evaluation and build are timed on this device with its own configuration
(model, batch, optimizer, precision, TTA) on a few batches of random images, the candidates taking
turns, and cached per device like the precision choice; the epochs its budget then holds come
from the same plan a --time-budget run makes (time_budget.plan_steps), and the accuracy those
epochs buy from the route's measured curve (recipes/routes.py). The best prediction wins; the
chosen route's run then measures and plans its own steps as any --time-budget run does, and what
it measured on the real images replaces the route's cached cost.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from resnet_cifar.config import TrainConfig
from resnet_cifar.data.datasets import Dataset, Split
from resnet_cifar.errors import UserError
from resnet_cifar.recipes import apply_recipe
from resnet_cifar.recipes.routes import ROUTES, Route
from resnet_cifar.training import precision_choice
from resnet_cifar.training.assembly import CPU_EVALUATION_BATCH, build_run, evaluation_batch
from resnet_cifar.training.time_budget import (
    ONE_CALL,
    UNTIMED_STEPS,
    BudgetPlan,
    measure_seconds,
    plan_steps,
    timed_calls,
)
from resnet_cifar.utils.devices import resolve_device
from resnet_cifar.utils.durations import duration_seconds
from resnet_cifar.utils.timings import process_age_s, seconds_per_call

CIFAR10_TRAIN, CIFAR10_TEST = 50_000, 10_000
# What a route's own --time-budget run measures before its plan (time_budget.measure_and_plan): its
# build, UNTIMED_STEPS steps, measure_seconds(budget) of steps (at least 3) and 4 evaluation batches.
MEASURED_STEPS, MEASURED_BATCHES = 3, 4
EVALUATED = CPU_EVALUATION_BATCH  # images a route's evaluation batch is timed on: a CPU run's batch
TIMED_ROUNDS = 2  # timed steps a route: one of each route in turn, twice


@dataclass(frozen=True)
class RouteCost:
    """What a route costs on this device: one training step, one evaluated image (with its TTA),
    and what building the run and its first step and batch cost beyond the others."""

    step_s: float
    image_s: float
    build_s: float


@dataclass(frozen=True)
class Prediction:
    route: Route
    epochs: float
    accuracy: float | None  # None: shorter than its curve's first point

    def describe(self) -> str:
        if self.accuracy is None:
            return f"{self.route.name} {self.epochs:.1f} epochs (shorter than its curve)"
        return f"{self.route.name} {self.epochs:.1f} epochs {self.accuracy:.1f}%"


@dataclass(frozen=True)
class RouteChoice:
    predictions: tuple[Prediction, ...]  # every candidate, the chosen first
    measured: tuple[str, ...]  # the routes timed now (the others' costs were cached)
    timing_s: float = 0.0  # what timing them took

    def describe(self, budget: str, device: torch.device) -> str:
        best, others = self.predictions[0], self.predictions[1:]
        speeds = (f"timed now in {self.timing_s:.0f} s, taken from this budget: {', '.join(self.measured)}"
                  if self.measured else "speeds cached")
        return (f"route auto for --time-budget {budget} on {device.type}: --recipe {best.route.recipe} --model "
                f"{best.route.model}, {best.epochs:.1f} epochs fit, {best.accuracy:.1f}% expected on the JPEG copy "
                f"of CIFAR-10 (its measured curve: recipes/routes.py); the others: "
                f"{'; '.join(p.describe() for p in others) or 'none'} ({speeds})")


def wants_route(config: TrainConfig, explicit: set[str]) -> bool:
    """Whether the route is the trainer's to choose: --route auto, or a --time-budget on CIFAR-10
    with neither --model nor --recipe typed."""
    if config.route is not None:
        return True
    return (config.time_budget is not None and config.dataset == "cifar10"
            and not explicit & {"model", "recipe"})


def check_route(config: TrainConfig, explicit: set[str], world_size: int) -> None:
    """The refusals of a chosen route that need nothing measured."""
    typed = "--route auto" if config.route is not None else "a --time-budget with no --model or --recipe"
    if config.time_budget is None:
        raise UserError("--route auto picks the route a time budget buys the most with: give --time-budget "
                        "(e.g. --time-budget 15m)")
    named = sorted(f"--{name}" for name in explicit & {"model", "recipe"})
    if named:
        raise UserError(f"--route auto picks the model and recipe; drop {' and '.join(named)} (or --route auto)")
    if config.dataset != "cifar10":
        raise UserError(f"{typed} picks from routes measured on CIFAR-10; for --dataset {config.dataset} name "
                        f"--model and --recipe")
    if world_size > 1:
        raise UserError(f"{typed} times each route in one process; under torchrun name the route with --model "
                        f"and --recipe (python main.py --time-budget {config.time_budget} --dry-run shows the choice)")


def candidate_config(config: TrainConfig, explicit: set[str], route: Route) -> TrainConfig:
    """config as the route trains it: the route's recipe and model, the options typed kept."""
    chosen = replace(config, route=None, recipe=route.recipe, model=route.model)
    return apply_recipe(chosen, explicit | {"model"})


def choose_route(config: TrainConfig, explicit: set[str], world_size: int = 1,
                 measure: Callable[[list[TrainConfig]], list[RouteCost]] | None = None,
                 cache: Path | None = None, spent_s: float | None = None) -> tuple[TrainConfig, str]:
    """The configuration of the route the budget buys the most with, and the line saying what was
    picked and why. measure: routes' costs on this device (tests inject theirs). spent_s: what the
    command had spent before the choice (default: the process's age).

    The time the routes take to be timed is not counted: the choice is the one a run with their
    costs cached makes, so that --dry-run (which times them) and the run after it agree."""
    check_route(config, explicit, world_size)
    spent = spent_s if spent_s is not None else (process_age_s() or 0.0)
    device = resolve_device(config.device)
    candidates = [route for route in ROUTES if device.type in route.devices]
    configs = {route: candidate_config(config, explicit, route) for route in candidates}
    timing_started = time.perf_counter()
    costs, measured = route_costs(configs, device, measure or measure_costs, cache or cache_file())
    timing_s = time.perf_counter() - timing_started
    budget_s = duration_seconds(config.time_budget)
    predictions = [predict(route, configs[route], costs[route], budget_s, spent) for route in candidates]
    ranked = sorted(predictions, key=lambda p: -1.0 if p.accuracy is None else p.accuracy, reverse=True)
    if ranked[0].accuracy is None:
        raise UserError(f"--time-budget {config.time_budget} is shorter than every route's measured curve "
                        f"({'; '.join(p.describe() for p in predictions)}); give a larger budget, or name "
                        f"--model and --recipe")
    choice = RouteChoice(tuple(ranked), tuple(route.name for route in measured), timing_s)
    return configs[ranked[0].route], choice.describe(config.time_budget, device)


def predict(route: Route, config: TrainConfig, cost: RouteCost, budget_s: float, spent_s: float) -> Prediction:
    """The epochs the route's --time-budget run would plan and the accuracy its curve gives them."""
    steps_per_epoch = (CIFAR10_TRAIN - config.val_size) // config.batch_size
    evaluation_s = cost.image_s * (CIFAR10_TEST + config.val_size) * (2 if config.ema is not None else 1)
    batch_s = cost.image_s * min(CIFAR10_TEST, evaluation_batch(config.batch_size, resolve_device(config.device)))
    own_measurement_s = (cost.build_s + (UNTIMED_STEPS + MEASURED_STEPS) * cost.step_s
                         + max(0.0, measure_seconds(budget_s) - MEASURED_STEPS * cost.step_s)
                         + MEASURED_BATCHES * batch_s)
    plan = plan_steps(budget_s, spent_s + own_measurement_s, cost.step_s, evaluation_s, steps_per_epoch,
                      config.eval_every, cost.build_s)
    epochs = plan.steps / steps_per_epoch
    return Prediction(route, epochs, route.accuracy_at(epochs) if plan.steps > 0 else None)


def route_costs(configs: dict[Route, TrainConfig], device: torch.device,
                measure: Callable[[list[TrainConfig]], list[RouteCost]],
                cache: Path) -> tuple[dict[Route, RouteCost], list[Route]]:
    """Every route's cost: from the cache, or measured now, together (and cached); and the routes
    measured."""
    stored = precision_choice.read_cache(cache)
    costs, measured = {}, []
    for route, config in configs.items():
        try:
            costs[route] = RouteCost(**stored[cache_key(device, config)])
        except (KeyError, TypeError):
            measured.append(route)
    if measured:
        for route, cost in zip(measured, measure([configs[route] for route in measured]), strict=True):
            costs[route] = cost
            stored[cache_key(device, configs[route])] = asdict(cost)
        precision_choice.write_cache(cache, stored)
    return costs, measured


def remember_cost(config: TrainConfig, plan: BudgetPlan, test_images: int, cache: Path | None = None) -> None:
    """Keep what a --time-budget run of CIFAR-10 measured on its own data as its route's cost, so
    that the next choice ranks the route by more steps than its own two, at the speed it trained
    at."""
    if config.dataset != "cifar10" or plan.steps_per_epoch != (CIFAR10_TRAIN - config.val_size) // config.batch_size:
        return  # not the data set the routes' curves and plans count
    cache = cache or cache_file()
    stored = precision_choice.read_cache(cache)
    key = cache_key(resolve_device(config.device), config)
    evaluated = (test_images + config.val_size) * (2 if config.ema is not None else 1)
    previous = stored.get(key)
    build_s = previous["build_s"] if isinstance(previous, dict) and "build_s" in previous else plan.repeat_s
    stored[key] = asdict(RouteCost(plan.step_s, plan.evaluation_s / max(1, evaluated), build_s))
    precision_choice.write_cache(cache, stored)


def cache_key(device: torch.device, config: TrainConfig) -> str:
    threads = config.threads if config.threads is not None else torch.get_num_threads()
    return (f"{precision_choice.device_key(device)} | torch {torch.__version__} | {threads} threads | {config.recipe} "
            f"| {config.model} | batch {config.batch_size} | {config.precision} | tta {config.tta}")


def cache_file() -> Path:
    return precision_choice.cache_file().with_name("routes.json")


def measure_cost(config: TrainConfig, clock: Callable[[], float] = time.perf_counter,
                 data: Dataset | None = None) -> RouteCost:
    """One route's cost (measure_costs with one route)."""
    return measure_costs([config], clock, data)[0]


def measure_costs(configs: list[TrainConfig], clock: Callable[[], float] = time.perf_counter,
                  data: Dataset | None = None) -> list[RouteCost]:
    """Time each route's own step and evaluation on random images (their values do not change the
    arithmetic; bench/route_cost.py compares them with the data set's): each route built and
    called once untimed, then TIMED_ROUNDS steps timed, one route's after another's in turn, then
    one batch of EVALUATED images each. A 2-core CPU's speed drifts by several percent within
    minutes (bench/README.md); taking turns puts each route's steps at the same times, so the
    routes' order is not the machine's drift. A few seconds a route on a 2-core CPU, paid once a
    machine (cached). data: other images, as many (the benchmark's)."""
    routes = [_TimedRoute.build(config, clock, data) for config in configs]
    for _ in range(TIMED_ROUNDS):
        for route in routes:
            route.step_times.append(seconds_per_call(route.one_step, clock, **ONE_CALL))
    return [route.cost(seconds_per_call(route.one_batch, clock, **ONE_CALL)) for route in routes]


@dataclass
class _TimedRoute:
    """A route built for timing: its step and evaluation batch, and what it has measured so far."""

    one_step: Callable[[], None]
    one_batch: Callable[[], None]
    batch_images: int
    build_s: float
    first_calls_s: float  # its first step and first batch, untimed by the plan
    step_times: list[float] = field(default_factory=list)

    @classmethod
    def build(cls, config: TrainConfig, clock: Callable[[], float], data: Dataset | None) -> _TimedRoute:
        images = random_dataset(2 * config.batch_size, EVALUATED) if data is None else data
        started = clock()
        parts = build_run(replace(config, iterations=None, epochs=1, ema=None, time_budget=None, val_size=0), images)
        build_s = clock() - started
        one_step, one_batch = timed_calls(parts, config)
        first_calls_s = (seconds_per_call(one_step, clock, **ONE_CALL)
                         + seconds_per_call(one_batch, clock, **ONE_CALL))
        return cls(one_step, one_batch, parts.eval_loaders["test"].batch_size, build_s, first_calls_s)

    def cost(self, batch_s: float) -> RouteCost:
        step_s = statistics.median(self.step_times)
        return RouteCost(step_s, batch_s / self.batch_images,
                         self.build_s + max(0.0, self.first_calls_s - step_s - batch_s))


def random_dataset(train_images: int, test_images: int) -> Dataset:
    """CIFAR-10-shaped random images: enough for a route's steps and evaluation batches to be timed."""
    generator = torch.Generator().manual_seed(0)

    def split(count: int) -> Split:
        return Split(torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator),
                     torch.randint(0, 10, (count,), generator=generator))

    return Dataset(split(train_images), split(test_images), tuple(str(i) for i in range(10)), "random images")
