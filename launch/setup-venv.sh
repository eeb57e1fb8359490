#!/usr/bin/env bash
# Create .venv and install hpcgen into it (editable, with dev and bench tools) when missing or stale.
# Sourced by launch/quickstart.sh and tests/run.sh; leaves the venv activated.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${HPCGEN_VENV:-$repo/.venv}
python=${PYTHON:-python3}
stamp=$venv/.hpcgen-installed
constraints=$repo/constraints.txt  # the exact versions CI uses (pyproject.toml: the ranges)
want=$(cat "$repo/pyproject.toml" "$constraints" | sha256sum | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv"
  "$python" -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing hpcgen[dev,bench] with the versions of $constraints into $venv (minutes on first run)"
  "$venv/bin/pip" install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  "$venv/bin/pip" install -q -c "$constraints" torch torchvision 2>&1 | grep -v "^WARNING: Location" || true
  "$venv/bin/pip" install -q -c "$constraints" -e "$repo[dev,bench]" 2>&1 | grep -v "^WARNING: Location" || true
  "$venv/bin/python" -c "import hpcgen, torch, torchcodec, deepspeed, submitit, webdataset, hydra, torch_fidelity, rich" \
    || { echo "[setup] error: the install did not complete; see pip's messages above" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"
