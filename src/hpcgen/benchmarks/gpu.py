"""GPU suite: training images/s per GPU for the DDPM and the GAN at 64 and 256 px (bf16 under
DeepSpeed ZeRO-2, the training step of launch/train.py on device-resident batches), each step's
model FLOPs utilisation (FLOPs of the real step counted by torch's FlopCounterMode, the GAN's
lazy regularisers amortised, over the dense matmul rate of the same GPU measured in this run:
benchmarks/utilisation.py), and the data stream's headroom (its
images/s over what training consumes). Sized to finish in under 5 minutes on an H200; on a CPU
it runs whatever small `cases` it is given (that is how the tests run it)."""

from __future__ import annotations

from pathlib import Path

import torch

from hpcgen.benchmarks.common import device, measure
from hpcgen.benchmarks.utilisation import peak_rates, step_utilisation
from hpcgen.config import DataConfig, TrainConfig
from hpcgen.data.shards import ensure_shards, shard_paths
from hpcgen.data.stream import ShardStream
from hpcgen.engine.distributed import detect_layout, init_distributed
from hpcgen.engine.tasks import build_task

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _config(model: str, preset: str, resolution: int, batch: int, precision: str) -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "model": {"name": model, "preset": preset},
            "data": {"resolution": resolution},
            "trainer": {"batch_per_gpu": batch},
            "deepspeed": {"zero_stage": 2, "precision": precision},
        }
    )


def training_case(spec: str, precision: str, repeats: int, peak: float) -> dict:
    model, preset, resolution, batch = spec.split(":")
    resolution, batch = int(resolution), int(batch)
    cfg = _config(model, preset, resolution, batch, precision)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        task = build_task(cfg, 0, 1)
    row = step_utilisation(task, batch, resolution, peak, repeats, warmup=3)
    config = {"model": model, "preset": preset, "resolution": resolution,
              "batch_per_gpu": batch, "precision": precision}  # fmt: skip
    return {"config": config, **row}


def loader_rate(workdir: Path, resolution: int, images: int, batch: int, workers: int) -> float:
    cfg = DataConfig(root=str(workdir / f"gpu-shards-{resolution}"), resolution=resolution,
                     num_samples=images, samples_per_shard=max(images // 16, 1))  # fmt: skip
    root, manifest = ensure_shards(cfg)
    stream = ShardStream(shard_paths(root, manifest), batch, num_workers=workers, hflip=True)
    n_batches = max(images // batch, 4)
    timing = measure(stream.next_batch, n_batches, warmup=4)
    stream.close()
    return batch / timing["median"]


def run(
    workdir: Path,
    cases: list[str],
    precision: str,
    repeats: int,
    matmul_size: int,
    loader_images: int,
    loader_workers: int,
) -> dict:
    init_distributed(detect_layout())
    dev = device()
    peak = peak_rates(dev, matmul_size, repeats, DTYPES[precision])
    result: dict = {
        "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
        "config": {
            "precision": precision,
            "matmul_size": matmul_size,
            "loader_workers": loader_workers,
        },  # fmt: skip
        "peak": peak,
    }
    for spec in cases:
        case = training_case(spec, precision, repeats, peak["matmul"]["flops_per_s"])
        resolution, batch = case["config"]["resolution"], case["config"]["batch_per_gpu"]
        stream = loader_rate(workdir, resolution, loader_images, batch, loader_workers)
        case |= {"stream_images_per_s": stream, "loader_headroom": stream / case["images_per_s"]}
        result[spec] = case
    result["targets"] = {
        "loader_headroom": ">= 2.0 (the stream delivers twice what training consumes)",
        "utilisation": ">= 0.40 of the matmul rate for the U-Net at 256 px (ddpm:lsun256)",
    }
    return result
