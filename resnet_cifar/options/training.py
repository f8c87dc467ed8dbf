"""The options of how a model learns: the optimizer and its schedule, and the augmentation."""
from __future__ import annotations

from resnet_cifar.config import FLIPS, MILESTONE_UNITS, OPTIMIZERS, ROUTES, SCHEDULERS, WARMUP_STYLES
from resnet_cifar.data.augmentations import PAD_MODES, POLICIES
from resnet_cifar.models.registry import DROPOUT_MODELS
from resnet_cifar.optim.muon import NS_COEFFICIENTS
from resnet_cifar.options.form import ALLOWED, INVOCATION, Option
from resnet_cifar.options.form import train_option as _train
from resnet_cifar.utils.durations import parse_duration
from resnet_cifar.utils.value_types import (
    cutout_size,
    gamma_type,
    non_negative_float,
    non_negative_int,
    open_unit_interval,
    positive_float,
    positive_int,
    seed_type,
    unit_interval,
)

OPTIMISATION: tuple[Option, ...] = (
    _train("epochs", "epochs to train", group="optimisation", type=positive_int, resume=ALLOWED),
    _train("iterations", "optimizer steps to train in all, instead of --epochs (the last epoch may be partial)",
           group="optimisation", type=positive_int, resume=ALLOWED),
    _train("time_budget", "train for this much wall time (e.g. 30m, 90s, 2h): the steps that fit, start-up, "
           "evaluations and report included, are measured and fixed at the start, and the recipe's schedule is "
           "laid over them", group="optimisation", type=parse_duration, metavar="DURATION"),
    _train("route", "auto: the model and recipe that buy the most accuracy in the --time-budget on this machine, "
           "from each route's timed step and measured accuracy-versus-epochs curve (CIFAR-10; the default for a "
           "--time-budget with no --model or --recipe)", group="optimisation", choices=ROUTES,
           experiment=False),
    _train("batch_size", "training batch size", group="optimisation", type=positive_int),
    _train("lr", "peak learning rate", group="optimisation", type=positive_float),
    _train("optimizer", "sgd; or muon: Muon (momentum orthogonalised by 3 Newton-Schulz steps, each filter "
           "bank renormalised) on the convolution filters, SGD with the other options on the rest",
           group="optimisation", choices=OPTIMIZERS),
    _train("muon_lr", "--optimizer muon: the filters' peak learning rate (the schedule's shape, scaled)",
           group="optimisation", type=positive_float),
    _train("muon_momentum", "--optimizer muon: the filters' momentum (Nesterov with --nesterov)",
           group="optimisation", type=unit_interval),
    _train("muon_weight_decay", "--optimizer muon: the filters' decoupled weight decay (each weight times 1 - lr x "
           "DECAY after the update; 0: none, as airbench94_muon)", group="optimisation", type=non_negative_float,
           metavar="DECAY"),
    _train("muon_coefficients", "--optimizer muon: the Newton-Schulz quintic's coefficients, Muon's or the record "
           "script's", group="optimisation", choices=tuple(NS_COEFFICIENTS)),
    _train("muon_renorm_every", "--optimizer muon: renormalise the filters every N + int(G x progress) steps "
           "(G: --muon-renorm-growth; airbench94_muon: every step; the record script: N 2, G 15)",
           group="optimisation", type=positive_int, metavar="N"),
    _train("muon_renorm_growth", "--optimizer muon: how much the renormalisation period grows over the run",
           group="optimisation", type=non_negative_float, metavar="G"),
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
           type=non_negative_float, metavar="EPOCHS"),
    _train("whitening_images", "the training images the whitening layer's filters are computed from (the "
           "first N; airbench: 5000, the record script: 960)", group="optimisation", type=positive_int,
           metavar="N"),
    _train("bn_momentum", "every BatchNorm's running-average momentum, in PyTorch's convention (the new batch's "
           "weight; default: the model's own, 0.4 for airbench94 and airbench95, else 0.1)", group="optimisation",
           type=unit_interval, metavar="M"),
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
)

AUGMENTATION: tuple[Option, ...] = (
    _train("translate_pad", "padding of the random crop (4 pixels): zeros or the mirrored image",
           group="augmentation", choices=PAD_MODES),
    _train("translate", "the random crop's padding in pixels (default 4 at 32 pixels, scaled with the image size)",
           group="augmentation", type=non_negative_int, metavar="N"),
    _train("flip", "random: each image mirrored with probability 1/2 every epoch; alternating: a random half in the "
           "first epoch, then every image's mirroring inverted each epoch (airbench)", group="augmentation",
           choices=FLIPS),
    _train("cutout", "zero an N x N square per image after normalisation (DeVries & Taylor 2017); 0: off",
           group="augmentation", type=cutout_size, metavar="N"),
    _train("cutout_inside", "place the --cutout square wholly inside the image (airbench96), not centred anywhere "
           "with the part outside clipped (DeVries & Taylor)", group="augmentation", kind="boolean"),
    _train("brightness", "add to each image, after normalisation, a value drawn from [-B, B] once an epoch (the "
           "record script: 0.14); 0: off", group="augmentation", type=non_negative_float, metavar="B"),
    _train("contrast", "then multiply it by a value drawn from [1 - C, 1 + C] once an epoch (the record script: "
           "0.13); 0: off", group="augmentation", type=unit_interval, metavar="C"),
    _train("augment", "a torchvision policy per image: AutoAugment (CIFAR-10 policy), RandAugment, "
           "TrivialAugmentWide", group="augmentation", choices=POLICIES),
    _train("mixup", "mixup with lambda ~ Beta(ALPHA, ALPHA); 0: off", group="augmentation",
           type=non_negative_float, metavar="ALPHA"),
    _train("cutmix", "CutMix with lambda ~ Beta(ALPHA, ALPHA); 0: off (with --mixup: one of the two per batch)",
           group="augmentation", type=non_negative_float, metavar="ALPHA"),
)
