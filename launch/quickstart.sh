#!/usr/bin/env bash
# Fresh machine to trained models: install, then train a small DDPM and a small GAN on the
# built-in synthetic "toy bedroom" data (CPU, local launcher) and print a summary table.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/setup-venv.sh
python launch/train.py -m model=ddpm,gan "$@"
