"""Every named recipe: its values, where they come from, and the models it is for."""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from resnet_cifar.models.registry import AIRBENCH_MODELS, RESNEXT_MODELS, WIDE_MODELS
from resnet_cifar.recipes.form import Recipe, ShortRun, airbench_muon_sgd, airbench_sgd

PAPER_MODELS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202")


# airbench94.py's values, in its units; airbench95 and airbench96 change a few of them.
AIRBENCH94: Mapping[str, Any] = MappingProxyType(dict(
    epochs=10, batch_size=1024, **airbench_sgd(lr=11.5, weight_decay=0.0153, momentum=0.85), bn_bias_lr_scale=64.0,
    label_smoothing=0.2, scheduler="triangular", triangular_start=0.2, triangular_peak=0.23, triangular_end=0.07,
    lookahead=True, whiten_bias_epochs=3, translate=2, translate_pad="reflect", flip="alternating",
    tta="flip-translate", eval_every=0))

# airbench94_muon.py's values, in its units, shared by its CPU variant and the record route.
AIRBENCH94_MUON: Mapping[str, Any] = MappingProxyType(dict(
    epochs=8, optimizer="muon", muon_lr=0.24, muon_momentum=0.6, momentum=0.85, nesterov=True,
    **airbench_muon_sgd(head_lr=0.67, bias_lr=0.053, weight_decay=2e-6, batch_size=2000),
    label_smoothing=0.2, scheduler="triangular", triangular_peak=0.0, whiten_bias_epochs=3, translate=2,
    translate_pad="reflect", flip="alternating", tta="flip-translate", eval_every=0))

# The record script's (hiverge/cifar10-speedrun, commit 5cd49b1): airbench94_muon's route with the
# values it retuned and the techniques it added, in its units.
SPEEDRUN_BATCH = 1536
SPEEDRUN: Mapping[str, Any] = MappingProxyType(dict(
    AIRBENCH94_MUON, epochs=8, muon_lr=0.205, muon_momentum=0.655, momentum=0.825,
    **airbench_muon_sgd(head_lr=0.5415, bias_lr=0.0573, weight_decay=1.0418e-6, batch_size=SPEEDRUN_BATCH),
    muon_weight_decay=1.0418e-6 * SPEEDRUN_BATCH, muon_coefficients="speedrun", muon_renorm_every=2,
    muon_renorm_growth=15.0, label_smoothing=0.09, whiten_bias_epochs=0.19, whitening_images=960,
    activation="silu", bn_momentum=round(1 - 0.5566, 12), brightness=0.1399, contrast=0.1308, tta="selective",
    tta_fraction=0.25))

RECIPES: dict[str, Recipe] = {
    "seed": Recipe(
        summary="SGD momentum 0.9, weight decay 1e-4, batch 256, lr 0.1 divided by 10 when the loss plateaus "
                "(validation loss with --val-size, else training loss), 200 epochs, crop + flip",
        source="this trainer's defaults",
        values={},
    ),
    "paper": Recipe(
        summary="He et al. 2015 sec. 4.2: batch 128, lr 0.1 divided by 10 at 32k and 48k iterations, stop at 64k, "
                "weight decay 1e-4, momentum 0.9, crop + flip; resnet110/1202 warm up at lr 0.01 for 400 iterations",
        source="He et al. 2015, sec. 4.2 (ResNet-20: 91.25% on the official data)",
        values=dict(batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=False, scheduler="multistep",
                    milestones=(32_000, 48_000), milestone_unit="steps", gamma=0.1, iterations=64_000),
        per_model={name: dict(warmup_steps=400, warmup_style="constant") for name in ("resnet110", "resnet1202")},
        models=PAPER_MODELS,
    ),
    "standard": Recipe(
        summary="the popular repos' ResNet-18 recipe: 200 epochs, cosine from lr 0.1, weight decay 5e-4, batch 128, "
                "momentum 0.9, crop + flip",
        source="kuangliu/pytorch-cifar and the repositories that follow it",
        values=dict(epochs=200, scheduler="cosine", lr=0.1, weight_decay=5e-4, momentum=0.9, batch_size=128),
    ),
    "fast": Recipe(
        summary="short runs: Nesterov SGD, weight decay 5e-4, batch 500, triangular lr peaking at 0.4 at 20% of "
                "training (0.2 for runs of the 6n+2 nets of 6 epochs or fewer), crop (reflect pad 4) + flip, "
                "Cutout 12 (not for the 6n+2 nets), flip + translate TTA, evaluated after the last epoch only; "
                "26 epochs (resnet18), 30 (others)",
        source="the published fast ResNet-18 route, its ResNet-20 values measured on the JPEG copy (docs/recipes.md)",
        # Evaluated after the last epoch only: flip-translate TTA is 6 passes over the test set, a third
        # of a resnet20 epoch's time on a CPU (bench/README.md). Per-epoch curves need --eval-every 1.
        values=dict(epochs=30, batch_size=500, lr=0.4, momentum=0.9, nesterov=True, weight_decay=5e-4,
                    scheduler="triangular", translate_pad="reflect", cutout=12, tta="flip-translate", eval_every=0),
        # No Cutout for the 6n+2 nets: it cost resnet20 points at short lengths (bench/README.md).
        per_model={"resnet18": dict(epochs=26), **{name: dict(cutout=0) for name in PAPER_MODELS}},
        # The lower peak wins short runs and loses long ones; 6 epochs stays short of where the measured
        # advantage crosses zero (docs/recipes.md, "Peak lr").
        short_run=ShortRun(6, dict(lr=0.2), PAPER_MODELS,
                           why="measured on resnet20: +3.7 points at 3 epochs, +1.2 at 4; 0.4 wins at 9"),
    ),
    "resnet9": Recipe(
        summary="Page's DAWNBench route for ResNet-9: Nesterov SGD (momentum 0.9), weight decay 5e-4, batch 512, "
                "lr linear from 0 to 0.4 at epoch 5, then to 0 at epoch 24 (the same shape for any length), "
                "label smoothing 0.2, crop (reflect "
                "pad 4) + flip + Cutout 8, flip TTA, evaluated after the last epoch only",
        source="David Page, How to train your ResNet, 2018; davidcpage/cifar10-fast (94.08% in 24 epochs on the "
               "official data)",
        # Page sums the loss over the batch and uses lr 0.4 / 512 and weight decay 5e-4 x 512: with
        # this trainer's mean loss the same update is lr 0.4 and weight decay 5e-4.
        values=dict(epochs=24, batch_size=512, lr=0.4, momentum=0.9, nesterov=True, weight_decay=5e-4,
                    scheduler="triangular", triangular_peak=5 / 24, triangular_start=0.0, label_smoothing=0.2,
                    translate_pad="reflect", cutout=8, tta="flip", eval_every=0),
        models=("resnet9",),
    ),
    "airbench94": Recipe(
        summary="Jordan's airbench94 route: batch 1024, Nesterov SGD (momentum 0.85), lr 1.5 and weight decay "
                "0.00133 (airbench's 11.5 and 0.0153 per 1024 examples), BatchNorm biases at 64x the lr, lr from "
                "0.2x to its peak at 23% of the run then down to 0.07x, lookahead, label smoothing 0.2, crop "
                "(reflect pad 2) + alternating flip, whitening bias frozen after 3 epochs, 9.9 epochs, "
                "flip-translate TTA",
        source="Keller Jordan, airbench94 (arXiv 2404.00498; KellerJordan/cifar10-airbench): 94.01% in 9.9 epochs on "
               "the official data",
        values=dict(AIRBENCH94),
        length_epochs=9.9,
        model="airbench94",
    ),
    "airbench94-muon": Recipe(
        summary="Jordan's airbench94_muon route: airbench94's net and augmentation with Muon (lr 0.24, momentum 0.6, "
                "3 Newton-Schulz steps) on the convolution filters and Nesterov SGD (momentum 0.85) on the rest, "
                "batch 2000, lr falling linearly from its peak to 0, no lookahead, label smoothing 0.2, whitening "
                "bias's lr falling to 0 over 3 epochs, 8 epochs, flip-translate TTA",
        source="Keller Jordan, airbench94_muon.py (KellerJordan/cifar10-airbench): 94.01% in 8 epochs on the "
               "official data",
        values=dict(AIRBENCH94_MUON),
        model="airbench94",
    ),
    "airbench94-muon-cpu": Recipe(
        summary="airbench94-muon for a CPU: batch 1024 and the head's lr halved with it (0.848), 7.5 epochs; "
                "measured on 2 CPU cores to reach the published airbench94 script's accuracy in 0.78x its time",
        source="airbench94_muon.py's recipe at the batch that runs fastest on a CPU, measured with this trainer",
        # Batches of 2000 run slower than 1024 on a CPU (the activations outgrow the caches), and twice
        # as many steps an epoch let fewer epochs do as much (docs/results.md). Muon's lr is a step's
        # size and stays 0.24; the SGD groups keep their per-example step at the new batch.
        values={**AIRBENCH94_MUON, **airbench_muon_sgd(head_lr=0.67, bias_lr=0.053, weight_decay=2e-6,
                                                       batch_size=1024)},
        length_epochs=7.5,
        model="airbench94",
    ),
    "speedrun": Recipe(
        summary="the record script's route (hiverge/cifar10-speedrun): airbench94-muon with SiLU in the groups, "
                "batch 1536, Muon lr 0.205, momentum 0.655, the record's Newton-Schulz coefficients, decoupled weight "
                "decay and renormalisation every 2 + int(15 x progress) steps; SGD momentum 0.825; label smoothing "
                "0.09; BatchNorm momentum 0.4434; whitening from 960 images, its bias learning for 0.19 epochs; "
                "brightness +-0.14 and contrast x(1 +- 0.13) jitter; 7.59 epochs; selective TTA on the least confident "
                "quarter of the images",
        source="hiverge/cifar10-speedrun, cifar10_speedrun.py at commit 5cd49b1: 94.01% in 7.59 epochs on the "
               "official data (mean of 200 runs)",
        values=dict(SPEEDRUN),
        models=AIRBENCH_MODELS,
        length_epochs=7.59,
        model="airbench94",
    ),
    "airbench95": Recipe(
        summary="Jordan's airbench95 route: airbench94's with lr 10 (per 1024 examples) and 15 epochs, for the "
                "airbench95 net (128/384/384 wide)",
        source="Keller Jordan, legacy/airbench95.py (KellerJordan/cifar10-airbench): 95.01% in 15 epochs on the "
               "official data",
        values=dict(AIRBENCH94, epochs=15, **airbench_sgd(lr=10.0, weight_decay=0.0153, momentum=0.85)),
        model="airbench95",
    ),
    "airbench96": Recipe(
        summary="Jordan's airbench96 route: lr 9 and weight decay 0.012 (per 1024 examples), lr from 0.2x to its "
                "peak at 10% of the run then to 0, crop (reflect pad 4) + alternating flip + Cutout 12 inside the "
                "image, lookahead, label smoothing 0.2, 37 epochs, for the airbench96 net",
        source="Keller Jordan, legacy/airbench96.py (KellerJordan/cifar10-airbench): 96.03% in 37 epochs on the "
               "official data",
        values=dict(AIRBENCH94, epochs=37, **airbench_sgd(lr=9.0, weight_decay=0.012, momentum=0.85),
                    triangular_peak=0.1, triangular_end=0.0, translate=4, cutout=12, cutout_inside=True),
        model="airbench96",
    ),
    "wrn": Recipe(
        summary="Zagoruyko & Komodakis 2016 for the wide nets: Nesterov SGD (momentum 0.9), weight decay 5e-4, "
                "batch 128, lr 0.1 multiplied by 0.2 at epochs 60, 120 and 160, 200 epochs, dropout 0.3, "
                "crop (reflect pad 4) + flip",
        source="Zagoruyko & Komodakis 2016 (WRN-28-10: 96.11% on the official data)",
        values=dict(epochs=200, batch_size=128, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                    scheduler="multistep", milestones=(60, 120, 160), gamma=0.2,
                    dropout=0.3, translate_pad="reflect"),
        models=WIDE_MODELS,
    ),
    "resnext": Recipe(
        summary="Xie et al. 2017 for ResNeXt-29, as the authors' code trains it: Nesterov SGD (momentum 0.9), "
                "weight decay 5e-4, batch 128, lr 0.1 divided by 10 at epochs 150 and 225, 300 epochs, crop + flip",
        source="Xie et al. 2017 and facebookresearch/ResNeXt (8x64d: 96.35% on the official data)",
        # facebookresearch/ResNeXt: train.lua (Nesterov; the drops past 49% and 74% of the epochs, the
        # paper's 150 and 225 of 300), opts.lua (300 epochs), the README's CIFAR command (wd 5e-4, batch 128).
        values=dict(epochs=300, batch_size=128, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                    scheduler="multistep", milestones=(150, 225), gamma=0.1),
        models=RESNEXT_MODELS,
    ),
}
RECIPE_NAMES = tuple(RECIPES)
