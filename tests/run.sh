#!/usr/bin/env bash
# Install what is missing, start the local SLURM cluster when we can (root + apt), run pytest.
# Extra arguments go to pytest (e.g. tests/run.sh -m "not slurm" -x).
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/setup-venv.sh
if [ "$(id -u)" = 0 ] && { command -v sinfo >/dev/null || command -v apt-get >/dev/null; }; then
  slurm/local-cluster.sh start
elif [ "${HPCGEN_REQUIRE_SLURM:-0}" = 1 ]; then
  echo "[tests] error: HPCGEN_REQUIRE_SLURM=1 but we cannot start SLURM (needs root and apt-get)" >&2
  exit 1
else
  echo "[tests] not root: SLURM tests run only if a cluster is already reachable"
fi
if [ "$(id -u)" = 0 ] && ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then
  echo "[tests] installing chromium (apt-get): the report test renders its page headless"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null
fi
export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu}
exec python -m pytest "$@"
