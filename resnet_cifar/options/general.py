"""The options of what to run and on what: mode, model, data, files; the hardware; several processes."""
from __future__ import annotations

from resnet_cifar.config import FORMATS, PRECISIONS, SPLITS, WEIGHTS
from resnet_cifar.data.augmentations import TTA_MODES
from resnet_cifar.data.datasets import DATASETS, LABEL_SETS
from resnet_cifar.models.airbench import ACTIVATIONS
from resnet_cifar.models.registry import AIRBENCH_MODELS, MODEL_NAMES
from resnet_cifar.models.techniques import BN_SCALES
from resnet_cifar.options.form import ALLOWED, INVOCATION, MODES, Option
from resnet_cifar.options.form import train_option as _train
from resnet_cifar.recipes import RECIPE_NAMES
from resnet_cifar.utils.value_types import (
    image_size_type,
    non_negative_int,
    positive_float,
    positive_int,
    unit_interval,
)

GENERAL: tuple[Option, ...] = (
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
    _train("activation", f"the activation of the airbench nets' convolution groups ({', '.join(AIRBENCH_MODELS)}; "
           "default: gelu, as published; the record script's net takes silu)", choices=tuple(ACTIVATIONS)),
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
           "and one-pixel shifts of both (flip-translate); selective: one plain pass, then the six views' mean for "
           "the --tta-fraction least confident images; --mode eval uses the run's unless it is typed",
           choices=TTA_MODES, modes=("train", "eval"), resume=ALLOWED),
    _train("tta_fraction", "--tta selective: the share of the evaluated images looked at again (those whose top "
           "probability is lowest); --mode eval uses the run's unless it is typed", type=unit_interval,
           metavar="FRACTION", modes=("train", "eval"), resume=ALLOWED),
    _train("eval_every", "train: evaluate on val/test after every N-th epoch and after the last (0: after the "
           "last only)", type=non_negative_int, metavar="N", resume=ALLOWED, experiment=False),
    Option("config", "read options from a run's config.json or a JSON/YAML file of option names and values; "
           "options typed on the command line override the file's", ("train", "eval", "predict", "export"),
           default=None, metavar="FILE"),
    Option("dry_run", "check every option as a real run would, print the resolved configuration as JSON and "
           "exit, without reading the data set or writing any file", MODES, kind="switch", default=False),
)

MACHINE: tuple[Option, ...] = (
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
