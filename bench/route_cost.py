"""A route's step and evaluation timed on random images, as `--route auto` times them, and on as
many of the data set's own images, taking turns: how far the choice's timing is from the images a
run trains on; and its evaluation in a batch of 1,024 of the data set's test images against the
256 a CPU run evaluates in a batch.

    python bench/route_cost.py DATA_DIR [--routes RECIPE ...] [--rounds 3] [--dry-run]

Each round times every route on random images, then on the data set's first training and test
images, then with the data set's first 1,024 test images (route_choice.measure_cost each time: one
untimed step, two timed, one evaluation batch). Prints per route the median of the rounds for
each, and the data set's step over the random one; the last line is one JSON object. DATA_DIR
holds cifar-10-batches-py/.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import cpu_name  # noqa: E402

from resnet_cifar.config import TrainConfig  # noqa: E402
from resnet_cifar.data.datasets import Dataset, DataSpec, Split, load_dataset  # noqa: E402
from resnet_cifar.recipes.routes import ROUTES  # noqa: E402
from resnet_cifar.training import route_choice  # noqa: E402

CPU_ROUTES = {route.recipe: route for route in ROUTES if "cpu" in route.devices}  # one route a recipe on a CPU
WHOLE_BATCH = 1024  # test images of the larger evaluation batch compared with a CPU run's 256


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--routes", nargs="+", choices=list(CPU_ROUTES), default=list(CPU_ROUTES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dry-run", action="store_true", help="print each route's configuration, time nothing")
    return parser.parse_args(argv)


def first_images(data: Dataset, train: int, test: int) -> Dataset:
    """The data set cut to the counts the random images have, so both runs do the same work."""
    return replace(data, train=Split(data.train.images[:train], data.train.labels[:train]),
                   test=Split(data.test.images[:test], data.test.labels[:test]))


def route_configs(data_dir: Path, recipes: list[str]) -> dict[str, TrainConfig]:
    """Each route's configuration as a 15-minute budget trains it on the CPU."""
    base = TrainConfig(time_budget="15m", device="cpu", data_dir=str(data_dir), download=False)
    return {name: route_choice.candidate_config(base, {"time_budget", "device", "data_dir", "download"},
                                                CPU_ROUTES[name]) for name in recipes}


def main(argv=None) -> dict:
    args = parse_args(argv)
    configs = route_configs(args.data_dir, args.routes)
    if args.dry_run:
        for name, config in configs.items():
            print(f"{name}: --model {config.model} --batch-size {config.batch_size} --tta {config.tta}")
        return {}
    data = load_dataset(DataSpec(kind="cifar10", data_dir=str(args.data_dir), download=False))
    samples = {name: {"random": [], "data": [], "whole_batch": []} for name in configs}
    for _ in range(args.rounds):
        for name, config in configs.items():  # measure_cost times the steps, not the budget's plan
            real = first_images(data, 2 * config.batch_size, route_choice.EVALUATED)
            samples[name]["random"].append(route_choice.measure_cost(config))
            samples[name]["data"].append(route_choice.measure_cost(config, data=real))
            whole = first_images(data, 2 * config.batch_size, WHOLE_BATCH)
            samples[name]["whole_batch"].append(route_choice.measure_cost(config, data=whole))
    result = {"cpu": cpu_name(), "rounds": args.rounds, "routes": {}}
    print(f"{cpu_name()}, median of {args.rounds} rounds, random images then the data set's in each")
    print("| route | step s, random | step s, data set | data / random | eval ms an image, random | data set "
          "| data set, whole batch |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, kinds in samples.items():
        step = {kind: statistics.median(cost.step_s for cost in costs) for kind, costs in kinds.items()}
        image = {kind: statistics.median(cost.image_s for cost in costs) for kind, costs in kinds.items()}
        ratio = step["data"] / step["random"]
        print(f"| {name} | {step['random']:.3f} | {step['data']:.3f} | {ratio:.3f} | "
              f"{1e3 * image['random']:.2f} | {1e3 * image['data']:.2f} | {1e3 * image['whole_batch']:.2f} |")
        result["routes"][name] = {"step_s": step, "image_s": image, "data_over_random": ratio}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
