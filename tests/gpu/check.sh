#!/usr/bin/env bash
# GPU check for a lent device machine (never run by CI). Parts, in order (CHECK_PARTS picks;
# default all three):
#   train  each model at its real size in bf16 (DDPM: the lsun64 U-Net at 64 px under
#          deepspeed.precision=bf16; GAN: the report's StyleGAN2 at 64 px, its top 4
#          resolutions in bf16 as configured, path length on under ZeRO-2), through DeepSpeed
#          ZeRO-2 and ZeRO-3 with NCCL at one rank (unsharded_at_one_rank=false: really
#          sharded): 2 steps straight, and 1 step resumed to 2, compared bitwise
#          (tests/gpu/same_checkpoint.py); then generate from each ZeRO-2 run
#   eval   launch/evaluate.py on each ZeRO-2 run, 1,000 samples (the staged Inception if it
#          is here, else tiny-test, said so), its wall time and the 50k extrapolation; the
#          feature extractor's images/s (tests/gpu/feature_rate.py)
#   bench  launch/bench.py suite=gpu: img/s per GPU, utilisation against the bf16 matmul rate
#          measured in the same run, the data stream's headroom
# Exits non-zero when any step fails (each is still run and reported first). Logs and grids in
# $OUT (default /tmp/hpcgen-gpu). Usage (repo root): tests/gpu/check.sh
#   CHECK_PARTS="train eval" tests/gpu/check.sh      # a part at a time, if time is short
#   HPCGEN_GPU_CHECK_ON_CPU=1 tests/gpu/check.sh     # the same steps at tiny sizes on a CPU
#                                                    # (DeepSpeed's CPU accelerator, gloo)
# Wheels in .whl/ are installed to /tmp/site first.
set -euo pipefail
export PYTHONPATH=$PWD/src:$PWD PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
python=${PYTHON:-python3}
out=${OUT:-/tmp/hpcgen-gpu}
mkdir -p "$out"
runs=$(mktemp -d /tmp/hpcgen-gpu-runs.XXXXXX)
export HPCGEN_DATA_DIR=${HPCGEN_DATA_DIR:-/tmp/hpcgen-data} HPCGEN_OUTPUT_DIR=$runs
trap 'rm -rf "$runs"' EXIT
parts=${CHECK_PARTS:-train eval bench}
want() { [[ " $parts " == *" $1 "* ]]; }
failed=()

if [ -n "${HPCGEN_GPU_CHECK_ON_CPU:-}" ]; then
  export DS_ACCELERATOR=cpu
  res=16 prec=fp32
  ddpm=(model=ddpm model.preset=tiny trainer.batch_per_gpu=4 data.num_samples=256)
  gan=(model=gan model.preset=tiny trainer.batch_per_gpu=4 data.num_samples=256)
  evals=(eval.num_samples=32 eval.ref_samples=64 eval.kid_subsets=5 eval.kid_subset_size=16
         eval.bpd_images=4 eval.batch=16)
  bench=("gpu.cases=[ddpm:tiny:16:4,gan:tiny:16:4]" gpu.precision=fp32 gpu.repeats=1
         gpu.matmul_size=256 gpu.loader_images=64 gpu.loader_workers=1)
  rate=(64 16 32 1)
else
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$python" -c "import torch, deepspeed; print('torch', torch.__version__, 'deepspeed', deepspeed.__version__, 'cuda', torch.cuda.is_available(), 'bf16', torch.cuda.is_bf16_supported())"
  "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
  res=64 prec=bf16
  ddpm=(model=ddpm model.preset=lsun64 trainer.batch_per_gpu=64)
  gan=(model=gan model.preset=stylegan2 model.reduced_precision=bf16 model.num_fp16_res=4
       trainer.batch_per_gpu=32)
  evals=(eval.num_samples=1000 eval.ref_samples=2048 eval.bpd_images=64 eval.batch=250)
  bench=()
  rate=(4096 64 256 3)
fi

step() {  # step NAME COMMAND...: its output in $out/NAME.log, one result line, never exits
  local name=$1 start rc=0
  shift
  start=$(date +%s)
  "$@" >"$out/$name.log" 2>&1 || rc=$?
  echo "== $name rc=$rc wall=$(($(date +%s) - start))s"
  grep -E "^\[(hpcgen|check|evaluate)\]|Error|error:" "$out/$name.log" | tail -n 5 || true
  if [ "$rc" -ne 0 ]; then failed+=("$name"); fi
}

train() {  # train RUN_DIR MAX_STEPS OVERRIDES...
  local dir=$1 steps=$2
  shift 2
  "$python" launch/train.py "$@" data.resolution=$res trainer.max_steps="$steps" \
    trainer.log_every_steps=1 trainer.ckpt_every_steps=1 trainer.sample_every_steps=2 \
    deepspeed.unsharded_at_one_rank=false hydra.run.dir="$dir"
}

extractor=inception  # the staged one (python launch/stage_weights.py needs a package registry)
if ! "$python" -c "from hpcgen.eval.inception import CONVERTED, weights_dir; import sys; sys.exit(not (weights_dir() / CONVERTED).exists())"; then
  extractor=tiny-test
  echo "[check] no staged Inception here: evaluation and feature rate use tiny-test (not comparable)"
fi

for model in ddpm gan; do
  if [ "$model" = ddpm ]; then
    overrides=("${ddpm[@]}" deepspeed.precision=$prec)
  else
    overrides=("${gan[@]}")  # fp32 masters; the blocks in model.reduced_precision
  fi
  for zero in zero2 zero3; do
    name=$model-$zero
    extra=()
    if [ "$model" = gan ] && [ "$zero" = zero2 ]; then extra=(model.pl_weight=2); fi
    if want train; then
      args=("${overrides[@]}" "${extra[@]}" deepspeed=$zero)
      step "$name-2-steps" train "$runs/$name" 2 "${args[@]}"
      step "$name-1-step" train "$runs/$name-resumed" 1 "${args[@]}"
      step "$name-resumed-to-2" train "$runs/$name-resumed" 2 "${args[@]}"
      step "$name-bitwise" "$python" tests/gpu/same_checkpoint.py \
        "$runs/$name" "$runs/$name-resumed" 2
    fi
  done
  name=$model-zero2
  if want train; then
    step "$name-generate" "$python" launch/generate.py ckpt="$runs/$name/checkpoints/step_00000002" \
      n=16 out="$out/$name-generated"
    cp "$runs/$name/samples/step_00000002.png" "$out/$name-samples.png" || failed+=("$name grid")
  fi
  if want eval; then
    if [ ! -d "$runs/$name/checkpoints" ]; then
      step "$name-train-for-eval" train "$runs/$name" 2 "${overrides[@]}" deepspeed=zero2
    fi
    start=$(date +%s)
    step "$name-evaluate" "$python" launch/evaluate.py run="$runs/$name" select=latest \
      eval.extractor=$extractor "${evals[@]}"
    took=$(($(date +%s) - start))
    cp -r "$runs/$name/eval" "$out/$name-eval" 2>/dev/null || true
    n=$(printf '%s\n' "${evals[@]}" | sed -n 's/^eval.num_samples=//p')
    echo "[check] $model: evaluation of $n samples ($extractor) took ${took}s in all; 50k samples: about $((took * 50000 / n))s (an upper bound: the reference statistics are computed once)"
  fi
done
if want eval; then
  step feature-rate "$python" tests/gpu/feature_rate.py $extractor "${rate[@]}"
fi

if want bench; then
  step bench-gpu "$python" launch/bench.py suite=gpu workdir="$runs/bench" \
    hydra.run.dir="$out/bench-gpu" "${bench[@]}"
  grep -E "images_per_s|utilisation|headroom|flops_per_s" "$out/bench-gpu.log" | tail -n 30 || true
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "all GPU checks passed ($parts)"
