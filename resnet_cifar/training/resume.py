"""What a resume may change: the options typed again, the schedule's length, the precision the
run trained in, and the data set it trained on."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from resnet_cifar.config import LENGTH_SHAPED_SCHEDULERS, SCHEDULERS, TrainConfig
from resnet_cifar.data.datasets import Dataset, check_matches
from resnet_cifar.errors import UserError
from resnet_cifar.options import PER_INVOCATION, RESUME_OVERRIDABLE
from resnet_cifar.training.checkpoint_state import data_summary
from resnet_cifar.utils.devices import resolve_device, resolve_precision


def resume_config(saved: TrainConfig, requested: TrainConfig, explicit: set[str]) -> TrainConfig:
    """The saved config, with the options the user typed that a resume may change and this
    command's per-invocation options. Any other typed option that differs from the checkpoint is
    refused, naming both values.
    """
    saved_values, requested_values = saved.to_dict(), requested.to_dict()
    changes = {name: requested_values[name] for name in PER_INVOCATION}
    for name in sorted(explicit & set(saved_values)):
        if requested_values[name] == saved_values[name]:
            continue
        if name not in RESUME_OVERRIDABLE:
            flag = "--" + name.replace("_", "-")
            raise UserError(
                f"{flag} {requested_values[name]} conflicts with the checkpoint's {name} "
                f"{saved_values[name]}; drop {flag} to resume, or start a new run"
            )
        changes[name] = requested_values[name]
    if "epochs" in explicit and saved.iterations is not None:
        changes["iterations"] = None  # a typed --epochs replaces the run's --iterations, as for a new run
    check_length_change(saved, changes)
    return TrainConfig.from_dict({**saved_values, **changes})


def check_length_change(saved: TrainConfig, changes: dict) -> None:
    """Refuse another length for a run whose schedule is laid out over its length: the rest of the
    run would follow another lr curve than the one it started on."""
    if saved.scheduler not in LENGTH_SHAPED_SCHEDULERS:
        return
    for name in ("epochs", "iterations"):
        if name in changes and changes[name] is not None and changes[name] != getattr(saved, name):
            allowed = ", ".join(k for k in SCHEDULERS if k not in LENGTH_SHAPED_SCHEDULERS)
            raise UserError(f"--{name} {changes[name]}: this run's {saved.scheduler} schedule is laid out over its "
                            f"{getattr(saved, name)} {name}, and another length would change the lr curve it "
                            f"started on; resume without --{name}, or start a new run of the length you want "
                            f"(a resume may change the length of {allowed} runs)")


def keep_trained_precision(config: TrainConfig, payload: dict, explicit: set[str]) -> tuple[TrainConfig, str]:
    """A resumed run goes on in the precision and layout it trained in, where `auto` would choose
    otherwise on this machine (another CPU kind: bf16 where the first CPU had no native bf16), so
    that a run continued elsewhere is still one recipe. Not where the user typed --precision or
    --channels-last, nor where the device kind changed (a CPU run resumed on a GPU). Returns the
    config and a line saying what was kept ("" when nothing changed)."""
    trained = payload.get("resolved")
    device = resolve_device(config.device)
    if trained is None or trained["device_type"] != device.type:
        return config, ""
    changes = {}
    if "precision" not in explicit and config.precision == "auto":
        changes["precision"] = trained["precision"]
    if "channels_last" not in explicit and config.channels_last is None:
        changes["channels_last"] = trained["channels_last"]
    kept = replace(config, **changes)  # pinned: a measuring `auto` must not choose anew mid-run
    # What the run goes on in, against what auto's rule would choose: a typed option is in both.
    going_on, chosen = (resolve_precision(device, c.precision, c.channels_last) for c in (kept, config))
    if going_on == chosen:
        return kept, ""
    return kept, (f"resuming in the run's {_named_precision(*going_on)} (auto would choose "
                  f"{_named_precision(*chosen)} here; pass --precision/--channels-last to change it)")


def _named_precision(precision: str, channels_last: bool) -> str:
    return f"{precision} + {'channels_last' if channels_last else 'NCHW'}"


def check_data_matches(payload: dict, data: Dataset) -> None:
    check_matches(data, payload, "the checkpoint's run")
    saved, found = payload.get("data", {}), data_summary(data)
    for key in ("n_train", "n_test"):
        if key in saved and saved[key] != found[key]:
            raise UserError(
                f"the data set differs from the checkpoint's: {key} is {found[key]} in --data-dir "
                f"but {saved[key]} in the checkpoint"
            )


def recorded_options(folder: Path, payload: dict, resumed: TrainConfig, explicit: set[str]) -> dict:
    """What a resumed run's config.json keeps: the options its run recorded (config.json, or the
    checkpoint's where that file is gone), with only what this command typed and changed."""
    try:
        previous = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = None
    if not isinstance(previous, dict):
        previous = dict(payload["config"])
    saved, values = payload["config"], resumed.to_dict()
    changed = {name: values[name] for name in explicit if name in values and values[name] != saved.get(name)}
    if "epochs" in explicit:
        changed["iterations"] = values["iterations"]
    kept = {name: value for name, value in previous.items() if name in values}
    return {**values, **kept, **changed, "run_dir": values["run_dir"], "resumed_from": values["resumed_from"]}
