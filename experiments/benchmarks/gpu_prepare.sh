#!/bin/bash
# Run HERE (a machine with pip and the data), before lending time on a GPU machine that has
# PyTorch but none of our other packages and no internet (this project's `device` machines):
# fills two git-ignored folders that travel with the working tree (`carry: [".whl", ".carry"]`):
#
#   .whl/        pure-Python wheels of what the GPU image lacks: hydra-core, omegaconf, antlr4
#                (sdist-only on PyPI: built into a wheel here), hydra-joblib-launcher
#   .carry/data  MNIST/raw/*.gz and BSDS500_train_images.tar (26 MB): gpu_check.sh regenerates
#                MNIST-M from them there (Ganin's mnist_m.tar.gz, 133 MB, is over the 64 MiB a
#                working tree may carry)
#
# Usage: bash experiments/benchmarks/gpu_prepare.sh [DATA_ROOT]   (default $DANN_DATA_DIR)
# Then, on the GPU machine: bash experiments/benchmarks/gpu_check.sh "$OUT"
set -euo pipefail
cd "$(dirname "$0")/../.."
src=${1:-${DANN_DATA_DIR:?give the data root (MNIST/raw, BSDS500_train_images.tar) or set DANN_DATA_DIR}}
for f in MNIST/raw/train-images-idx3-ubyte.gz MNIST/raw/train-labels-idx1-ubyte.gz \
         MNIST/raw/t10k-images-idx3-ubyte.gz MNIST/raw/t10k-labels-idx1-ubyte.gz BSDS500_train_images.tar; do
    [ -f "$src/$f" ] || { echo "gpu_prepare: $src/$f is missing (see README 'Datasets')" >&2; exit 2; }
done
rm -rf .whl .carry.tmp && mkdir -p .whl .carry.tmp/data/MNIST/raw
cp "$src"/MNIST/raw/*-ubyte.gz .carry.tmp/data/MNIST/raw/
cp "$src"/BSDS500_train_images.tar .carry.tmp/data/
rm -rf .carry && mv .carry.tmp .carry
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation py \
    --platform any -d .whl "hydra-core==1.3.*" "omegaconf==2.3.*" "hydra-joblib-launcher==1.2.*"
python3 -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==4.9.3"
ls .whl
du -sh .whl .carry
git ls-files -z | du -ch --files0-from=- | tail -1 | sed 's/total/tracked files (the working tree also travels)/'
