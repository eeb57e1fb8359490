#!/usr/bin/env bash
# GPU check for a lent device machine (never run by CI): the CUDA + NCCL path of the real
# entry point, fp32 / bf16 / fp16 under DeepSpeed ZeRO-2, images/s of each, then the bench gpu
# suite. Exits non-zero when any step fails (each is still run and reported first).
# Usage (repo root): tests/gpu/check.sh   — wheels in .whl/ are installed to /tmp/site first.
set -euo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
out=${OUT:-/tmp/hpcgen-gpu}
export HPCGEN_DATA_DIR=/tmp/hpcgen-data HPCGEN_OUTPUT_DIR=$out/runs
trap 'rm -rf "$HPCGEN_OUTPUT_DIR"' EXIT
failed=()
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, deepspeed; print('torch', torch.__version__, 'deepspeed', deepspeed.__version__, 'cuda', torch.cuda.is_available(), 'bf16', torch.cuda.is_bf16_supported())"
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
for run in ddpm:fp32 ddpm:bf16 ddpm:fp16 gan:fp32 gan:bf16; do
  model=${run%:*} prec=${run#*:}
  start=$(date +%s)
  rc=0
  python3 launch/train.py model="$model" deepspeed.precision="$prec" data.resolution=32 \
    trainer.max_steps=300 trainer.batch_per_gpu=128 trainer.log_every_steps=100 \
    trainer.sample_every_steps=300 trainer.ckpt_every_steps=300 \
    hydra.run.dir="$HPCGEN_OUTPUT_DIR/$model-$prec" >"$out/$model-$prec.log" 2>&1 || rc=$?
  echo "== $model $prec rc=$rc wall=$(( $(date +%s) - start ))s"
  grep -E "^\[hpcgen\]|Error|error:" "$out/$model-$prec.log" | tail -n 6 || true
  if [ "$rc" -ne 0 ]; then failed+=("train $model $prec"); fi
done
for grid in ddpm-bf16 gan-bf16; do
  cp "$HPCGEN_OUTPUT_DIR/$grid/samples/step_00000300.png" "$out/$grid.png" \
    || failed+=("sample grid $grid")
done
start=$(date +%s)
rc=0
python3 launch/bench.py suite=gpu workdir=/tmp/hpcgen-bench hydra.run.dir="$out/bench-gpu" \
  >"$out/bench-gpu.log" 2>&1 || rc=$?
echo "== bench suite=gpu rc=$rc wall=$(( $(date +%s) - start ))s (JSON: bench-gpu/bench/gpu.json)"
grep -E "images_per_s|utilisation|headroom|flops_per_s|Error" "$out/bench-gpu.log" | tail -n 30 || true
if [ "$rc" -ne 0 ]; then failed+=("bench suite=gpu"); fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "all GPU checks passed"
