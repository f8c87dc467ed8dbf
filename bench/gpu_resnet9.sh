#!/usr/bin/env bash
# ResNet-9 against the fast ResNet-18 on one GPU, in about 12 minutes: time to
# 91% and to 93% on the JPEG copy, wall time and training time, three seeds each where they fit.
# `--recipe resnet9 --model resnet9` (24 epochs, Page's route) first, then `--recipe fast --model
# resnet18` (26 epochs), each through bench/gpu_time_to_accuracy.sh with its own time limit.
#
#   bash bench/gpu_resnet9.sh CIFAR10_TARBALL_OR_FOLDER OUT_DIR
#
# OUT_DIR/resnet9/ and OUT_DIR/resnet18-fast/ get what gpu_time_to_accuracy.sh writes (tta_table.md).
# CPU dry run on the tests' synthetic batches (one epoch a run):
#   R9_LADDER="1:0" R18_LADDER="1:0" MAIN_ARGS="--device cpu --batch-size 64" EACH_S=240 \
#   bash bench/gpu_resnet9.sh DATA_FOLDER OUT
set -uo pipefail
source=${1:?usage: bench/gpu_resnet9.sh CIFAR10_TARBALL_OR_FOLDER OUT_DIR}
out=${2:?usage: bench/gpu_resnet9.sh CIFAR10_TARBALL_OR_FOLDER OUT_DIR}
each_s=${EACH_S:-350}   # seconds for each model's ladder (an H200: ~20 s a 24-epoch run, start-up included)
cd "$(dirname "$0")/.."
MODEL=resnet9 RECIPE=resnet9 TARGETS="0.91 0.93" LADDER="${R9_LADDER:-24:0 24:1 24:2}" ABLATION=0 END_S=$each_s \
  bash bench/gpu_time_to_accuracy.sh "$source" "$out/resnet9"
MODEL=resnet18 RECIPE=fast TARGETS="0.91 0.93" LADDER="${R18_LADDER:-26:0 26:1 26:2}" ABLATION=0 END_S=$each_s \
  bash bench/gpu_time_to_accuracy.sh "$source" "$out/resnet18-fast"
