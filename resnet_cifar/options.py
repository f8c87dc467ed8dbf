"""Every command-line option, declared once: its flag, type or choices, default, help, the modes
that read it, what a resume may do with it, and whether it is part of the experiment.

cli/main.py builds its parser from OPTIONS; the mode checks (MODE_READS), the resume rules
(RESUME_OVERRIDABLE, PER_INVOCATION), the summary's grouping of runs by experiment
(NOT_THE_EXPERIMENT) and docs/options.md (`python -m resnet_cifar.cli.options_page > docs/options.md`) are derived
from the same list. A training option's default is its TrainConfig field's.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet_cifar.config import (
    FLIPS,
    FORMATS,
    MILESTONE_UNITS,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULERS,
    SPLITS,
    WARMUP_STYLES,
    WEIGHTS,
    TrainConfig,
)
from resnet_cifar.data.augmentations import PAD_MODES, POLICIES, TTA_MODES
from resnet_cifar.data.datasets import DATASETS, LABEL_SETS
from resnet_cifar.models.registry import DROPOUT_MODELS, MODEL_NAMES
from resnet_cifar.models.techniques import BN_SCALES
from resnet_cifar.recipes import RECIPE_NAMES
from resnet_cifar.utils.durations import parse_duration
from resnet_cifar.utils.value_types import (
    cutout_size,
    gamma_type,
    image_size_type,
    non_negative_float,
    non_negative_int,
    open_unit_interval,
    positive_float,
    positive_int,
    seed_type,
    unit_interval,
)

MODES = ("train", "eval", "predict", "export", "summary")
GROUPS = {
    "general": "",
    "optimisation": "",
    "augmentation": "",
    "hardware": "",
    "several processes": "launch with torchrun (e.g. torchrun --standalone --nproc-per-node=2 main.py ...); "
                         "--batch-size is then the global batch, split among the processes",
}

# What a resume does with a training option (Option.resume):
REFUSED = "refused"  # a typed value that differs from the checkpoint's is refused: it would be another experiment
ALLOWED = "allowed"  # a typed value replaces the checkpoint's; untyped, the checkpoint's value is kept
INVOCATION = "per invocation"  # always this command line's value (typed or default), never the checkpoint's
RESUME_RULES = (REFUSED, ALLOWED, INVOCATION)



_TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_FROM_TRAIN_CONFIG = object()  # the default is the TrainConfig field's


@dataclass(frozen=True)
class Option:
    dest: str
    help: str
    modes: tuple[str, ...]  # the modes that read it; any other mode refuses it
    group: str = "general"
    kind: str = "value"  # value, switch (store_true), no-switch (--no-X, store_false), boolean (--X/--no-X), positional
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    default: Any = _FROM_TRAIN_CONFIG
    nargs: str | None = None
    metavar: str | None = None
    resume: str | None = None  # training options: REFUSED, ALLOWED or INVOCATION
    experiment: bool = True  # training options: two runs that differ in it are different experiments
    flag_name: str | None = None  # the flag when it is not --<dest with dashes>

    @property
    def flag(self) -> str:
        if self.kind == "positional":
            return self.dest
        if self.flag_name is not None:
            return self.flag_name
        return "--" + self.dest.replace("_", "-")

    @property
    def default_value(self) -> Any:
        if self.default is not _FROM_TRAIN_CONFIG:
            return self.default
        field = _TRAIN_FIELDS[self.dest]
        value = field.default
        return list(value) if isinstance(value, tuple) else value

    @property
    def in_train_config(self) -> bool:
        return self.dest in _TRAIN_FIELDS


def _train(dest: str, help: str, *, resume: str = REFUSED, experiment: bool = True, modes=("train",),
           **kwargs) -> Option:
    return Option(dest, help, modes, resume=resume, experiment=experiment, **kwargs)


OPTIONS: tuple[Option, ...] = (
    # --- general ------------------------------------------------------------------------------
    Option("mode", "train a model; eval, predict with or export a checkpoint; summary of run directories",
           MODES, choices=MODES, default="train"),
    Option("paths", "--mode predict: image files and folders; --mode summary: run directories",
           ("predict", "summary"), kind="positional", nargs="*", default=[], metavar="PATH"),
    _train("model", f"architecture: {', '.join(MODEL_NAMES)}", choices=MODEL_NAMES, metavar="NAME",
           modes=("train", "eval")),
    _train("whitening", "a first layer of 2x2 filters fixed from the training images' patch covariance (whitened), "
           "then GELU, before the model's own first convolution (default: airbench94 has it, the others not; "
           "--no-whitening makes airbench94's first layer an ordinary learned one)", kind="boolean"),
    _train("dirac", "start each 3x3 convolution's first in-channels filters as the identity (default: "
           "airbench94 yes, the others no)", kind="boolean"),
    _train("bn_scale", "BatchNorm scales learned, or fixed at 1 with only the biases learning (default: "
           "airbench94 fixed, the others learned)", choices=BN_SCALES),
    _train("recipe", "named hyperparameters (listed at the end); any option typed overrides its value",
           choices=RECIPE_NAMES),
    _train("dataset", "cifar10, cifar100 (official pickles, image folders or a download), or folder: any "
           "train/<class>/ tree of images (test/<class>/ optional) with 2 or more classes", choices=DATASETS),
    _train("data_dir", "folder with cifar-10-batches-py/, cifar-100-python/ or train/<class>/ (+ test/<class>/) "
           "image folders", modes=("train", "eval", "export"), resume=ALLOWED, experiment=False),
    _train("labels", "--dataset cifar100: its 100 classes (fine) or its 20 superclasses (coarse)",
           choices=LABEL_SETS),
    _train("image_size", "--dataset folder: resize every image to N x N once, when the cache is built (needed "
           "when the images differ in size); the crop's padding scales with it (4 at 32)", type=image_size_type,
           metavar="N"),
    _train("download", "never download CIFAR; fail if it is not in --data-dir", kind="no-switch",
           flag_name="--no-download", modes=("train", "eval"), resume=ALLOWED, experiment=False),
    _train("run_dir", "output folder (default runs/<model>-<timestamp>)", resume=ALLOWED, experiment=False),
    Option("resume", "continue a run from its last.pt", ("train",), default=None, metavar="CHECKPOINT"),
    Option("checkpoint", "the checkpoint to evaluate, predict with or export", ("eval", "predict", "export"),
           default=None),
    Option("output", "eval: the report as JSON; predict, summary: CSV; export: the exported model",
           ("eval", "predict", "export", "summary"), default=None, metavar="FILE"),
    Option("report_dir", "eval: also write report.json, per_class.csv, confusion.png, calibration.png, "
           "mistakes.png here", ("eval",), default=None, metavar="DIR"),
    Option("split", "eval: the test set, or the validation images of a run trained with --val-size (default: "
           "test, or val where the data has no test/ folder)", ("eval",), choices=SPLITS, default=None),
    Option("top_k", "predict: classes listed per image", ("predict",), type=positive_int, default=3),
    Option("format", "export: the file format", ("export",), choices=FORMATS, default=None),
    Option("weights", "eval, predict, export: the trained weights, or their moving average (a run made with "
           "--ema)", ("eval", "predict", "export"), choices=WEIGHTS, default="raw"),
    _train("tta", "test-time augmentation for evaluation: logits averaged over the image and its mirror (flip), "
           "and one-pixel shifts of both (flip-translate); --mode eval uses the run's unless it is typed",
           choices=TTA_MODES,
           modes=("train", "eval"), resume=ALLOWED),
    _train("eval_every", "train: evaluate on val/test after every N-th epoch and after the last (0: after the "
           "last only)", type=non_negative_int, metavar="N", resume=ALLOWED, experiment=False),
    Option("config", "read options from a run's config.json or a JSON/YAML file of option names and values; "
           "options typed on the command line override the file's", ("train", "eval", "predict", "export"),
           default=None, metavar="FILE"),
    Option("dry_run", "check every option as a real run would, print the resolved configuration as JSON and "
           "exit, without reading the data set or writing any file", MODES, kind="switch", default=False),
    # --- optimisation -------------------------------------------------------------------------
    _train("epochs", "epochs to train", group="optimisation", type=positive_int, resume=ALLOWED),
    _train("iterations", "optimizer steps to train in all, instead of --epochs (the last epoch may be partial)",
           group="optimisation", type=positive_int, resume=ALLOWED),
    _train("time_budget", "train for this much wall time (e.g. 30m, 90s, 2h): the steps that fit, start-up, "
           "evaluations and report included, are measured and fixed at the start, and the recipe's schedule is "
           "laid over them", group="optimisation", type=parse_duration, metavar="DURATION"),
    _train("batch_size", "training batch size", group="optimisation", type=positive_int),
    _train("lr", "peak learning rate", group="optimisation", type=positive_float),
    _train("optimizer", "sgd; or muon: Muon (momentum orthogonalised by 3 Newton-Schulz steps, each filter "
           "bank renormalised) on the convolution filters, SGD with the other options on the rest",
           group="optimisation", choices=OPTIMIZERS),
    _train("muon_lr", "--optimizer muon: the filters' peak learning rate (the schedule's shape, scaled)",
           group="optimisation", type=positive_float),
    _train("muon_momentum", "--optimizer muon: the filters' momentum (Nesterov with --nesterov)",
           group="optimisation", type=unit_interval),
    _train("momentum", "SGD momentum", group="optimisation", type=unit_interval),
    _train("weight_decay", "L2 weight decay", group="optimisation", type=non_negative_float),
    _train("nesterov", "Nesterov momentum (--no-nesterov turns off a recipe's)", group="optimisation",
           kind="boolean"),
    _train("label_smoothing", "cross-entropy label smoothing", group="optimisation", type=unit_interval),
    _train("dropout", f"dropout between the two convolutions of each block ({', '.join(DROPOUT_MODELS)}); 0: off",
           group="optimisation", type=unit_interval, metavar="P"),
    _train("clip_grad_norm", "clip the global gradient norm", group="optimisation", type=positive_float,
           metavar="MAX_NORM"),
    _train("scheduler", "plateau divides the lr by 10 when the monitored loss stops improving",
           group="optimisation", choices=SCHEDULERS),
    _train("milestones", "when multistep multiplies the lr by --gamma, in --milestone-unit", group="optimisation",
           type=positive_int, nargs="+"),
    _train("milestone_unit", "--milestones counts epochs or optimizer steps (iterations)", group="optimisation",
           choices=MILESTONE_UNITS),
    _train("step_size", "epochs between lr drops for --scheduler step", group="optimisation", type=positive_int),
    _train("gamma", "lr factor for step, multistep and plateau", group="optimisation", type=gamma_type),
    _train("plateau_patience", "epochs without improvement before plateau lowers the lr", group="optimisation",
           type=non_negative_int),
    _train("warmup_epochs", "lr warmup (for onecycle: the rising phase, default 30%; triangular: default 20%)",
           group="optimisation", type=non_negative_float),
    _train("warmup_steps", "lr warmup in optimizer steps (overrides --warmup-epochs when > 0)",
           group="optimisation", type=non_negative_int),
    _train("warmup_style", "linear: from 0 up to --lr; constant: --lr / 10 throughout the warmup (He et al.)",
           group="optimisation", choices=WARMUP_STYLES),
    _train("triangular_start", "the triangular schedule's first lr, as a fraction of its peak",
           group="optimisation", type=unit_interval, metavar="FRACTION"),
    _train("triangular_peak", "where the triangular schedule peaks, as a fraction of the run (0: it starts at "
           "the peak; a --warmup-epochs or --warmup-steps length overrides it)", group="optimisation",
           type=unit_interval,
           metavar="FRACTION"),
    _train("triangular_end", "the triangular schedule's last lr, as a fraction of its peak (0: it ends at 0)",
           group="optimisation", type=unit_interval, metavar="FRACTION"),
    _train("bn_bias_lr_scale", "BatchNorm biases take the lr times K and the weight decay divided by K, so their "
           "decay per step stays the others' (airbench: 64)", group="optimisation", type=positive_float, metavar="K"),
    _train("lookahead", "every 5 steps move a moving average of the weights toward them by 1 - 0.95^5 (t/T)^3 and "
           "set the weights to it; at the end, set them to it (airbench's lookahead)", group="optimisation",
           kind="boolean"),
    _train("whiten_bias_epochs", "the epochs the whitening layer's bias learns before it is frozen (with "
           "--optimizer muon its lr falls linearly to 0 over them; default: all)", group="optimisation",
           type=non_negative_int, metavar="N"),
    _train("val_size", "training images held out for validation (plateau and best.pt use them)",
           group="optimisation", type=non_negative_int),
    _train("seed", "seeds initialisation, validation split and data order", group="optimisation",
           type=seed_type, experiment=False),
    Option("seeds", "train one run per seed into RUN_DIR/seed<N>/ and print mean ± std of the final test "
           "accuracy", ("train",), group="optimisation", type=seed_type, nargs="+", default=None,
           metavar="SEED"),
    _train("ema", "keep an exponential moving average of the weights (e.g. 0.999), evaluated each epoch; its "
           "decay warms up as min(DECAY, (1 + n) / (10 + n)) over the first steps n",
           group="optimisation", type=open_unit_interval, metavar="DECAY"),
    _train("max_steps", "stop after this many optimizer steps in total (smoke runs, benchmarks)",
           group="optimisation", type=positive_int, resume=INVOCATION, experiment=False),
    # --- augmentation -------------------------------------------------------------------------
    _train("translate_pad", "padding of the random crop (4 pixels): zeros or the mirrored image",
           group="augmentation", choices=PAD_MODES),
    _train("translate", "the random crop's padding in pixels (default 4 at 32 pixels, scaled with the image size)",
           group="augmentation", type=non_negative_int, metavar="N"),
    _train("flip", "random: each image mirrored with probability 1/2 every epoch; alternating: a random half in the "
           "first epoch, then every image's mirroring inverted each epoch (airbench)", group="augmentation",
           choices=FLIPS),
    _train("cutout", "zero an N x N square per image after normalisation (DeVries & Taylor 2017); 0: off",
           group="augmentation", type=cutout_size, metavar="N"),
    _train("augment", "a torchvision policy per image: AutoAugment (CIFAR-10 policy), RandAugment, "
           "TrivialAugmentWide", group="augmentation", choices=POLICIES),
    _train("mixup", "mixup with lambda ~ Beta(ALPHA, ALPHA); 0: off", group="augmentation",
           type=non_negative_float, metavar="ALPHA"),
    _train("cutmix", "CutMix with lambda ~ Beta(ALPHA, ALPHA); 0: off (with --mixup: one of the two per batch)",
           group="augmentation", type=non_negative_float, metavar="ALPHA"),
    # --- hardware -----------------------------------------------------------------------------
    _train("device", "auto, cpu, cuda or cuda:N", group="hardware", modes=("train", "eval", "predict"),
           resume=ALLOWED, experiment=False),
    _train("precision", "auto, without --channels-last/--no-channels-last: the fastest precision and layout for "
           "this model and batch on this device, timed once (seconds) and cached in ~/.cache/resnet-cifar "
           "(RESNET_CIFAR_CACHE); with one: bf16 where the device runs it fast, else fp32 (CPU) or fp16 (CUDA)",
           group="hardware", choices=PRECISIONS, modes=("train", "eval"), resume=ALLOWED),
    _train("channels_last", "NHWC memory layout (default: chosen with --precision auto, or by its rule)",
           group="hardware",
           kind="boolean", modes=("train", "eval"), resume=ALLOWED),
    _train("compile", "torch.compile the model", group="hardware", kind="switch", resume=ALLOWED,
           experiment=False),
    _train("deterministic", "deterministic algorithms (CPU and CUDA); slower on CUDA", group="hardware",
           kind="switch"),
    _train("threads", "CPU threads for torch (default: torch's choice, recorded in the checkpoint)",
           group="hardware", type=positive_int, resume=ALLOWED, experiment=False),
    _train("quiet", "no progress bars", group="hardware", kind="switch", modes=("train", "eval"),
           resume=INVOCATION, experiment=False),
    _train("tensorboard", "also write TensorBoard event files in the run directory (needs tensorboard)",
           group="hardware", kind="switch", resume=ALLOWED, experiment=False),
    # --- several processes --------------------------------------------------------------------
    _train("sync_bn", "BatchNorm statistics over the global batch (SyncBatchNorm; CUDA only)",
           group="several processes", kind="switch"),
    _train("dist_timeout", "how long a process waits for a lost peer before the job fails",
           group="several processes", type=positive_float, metavar="SECONDS", resume=ALLOWED, experiment=False),
)
BY_DEST = {option.dest: option for option in OPTIONS}

# config.json records these beside the training options: what the run resolved on its machine.
# Only the precision and layout it trained in can change its numbers.
RECORDED = {"resolved_device": False, "resolved_precision": True, "resolved_channels_last": True,
            "auto_precision_img_per_s": False, "world_size": False, "elastic_run_id": False, "resumed_from": False}

MODE_READS: dict[str, frozenset[str]] = {
    mode: frozenset(o.dest for o in OPTIONS if mode in o.modes) for mode in MODES
}
TRAIN_OPTIONS = tuple(o for o in OPTIONS if o.in_train_config)
RESUME_OVERRIDABLE = frozenset(o.dest for o in TRAIN_OPTIONS if o.resume in (ALLOWED, INVOCATION))
PER_INVOCATION = frozenset(o.dest for o in TRAIN_OPTIONS if o.resume == INVOCATION)
NOT_THE_EXPERIMENT = frozenset({o.dest for o in TRAIN_OPTIONS if not o.experiment}
                               | {key for key, counts in RECORDED.items() if not counts})


def config_value(option: Option, value: Any) -> Any:
    """The TrainConfig value of a parsed option."""
    if option.dest == "data_dir":
        return str(Path(value).absolute())  # so that eval from another folder finds the data through the checkpoint
    if isinstance(value, list):
        return tuple(value)
    return value
