"""GPU suite: training images/s per GPU for the DDPM and the GAN at 64 and 256 px (bf16 under
DeepSpeed ZeRO-2, the training step of launch/train.py on device-resident batches), the U-Net's
model FLOPs utilisation (FLOPs of one step counted by torch's FlopCounterMode, divided by the
dense matmul rate of the same GPU measured in this run), and the data stream's headroom (its
images/s over what training consumes). Sized to finish in under 5 minutes on an H200; on a CPU
it runs whatever small `cases` it is given (that is how the tests run it)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from hpcgen.benchmarks.common import device, measure
from hpcgen.config import DataConfig, TrainConfig
from hpcgen.data.shards import ensure_shards, shard_paths
from hpcgen.data.stream import ShardStream, to_unit_range
from hpcgen.engine.distributed import detect_layout, init_distributed
from hpcgen.engine.tasks import build_task
from hpcgen.networks import build_networks

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def matmul_flops_per_s(dtype: torch.dtype, n: int, repeats: int) -> dict:
    """Dense n x n matmul rate: the peak this GPU reaches in practice (2 n^3 FLOPs per call)."""
    dev = device()
    a, b = (torch.randn(n, n, device=dev, dtype=dtype) for _ in range(2))
    timing = measure(lambda: a @ b, repeats, warmup=3)
    return {**timing, "flops_per_s": 2 * n**3 / timing["median"]}


def _config(model: str, preset: str, resolution: int, batch: int, precision: str) -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "model": {"name": model, "preset": preset},
            "data": {"resolution": resolution},
            "trainer": {"batch_per_gpu": batch},
            "deepspeed": {"zero_stage": 2, "precision": precision},
        }
    )


def unet_step_flops(cfg: TrainConfig, batch: torch.Tensor, dtype: torch.dtype) -> int:
    """FLOPs of one DDPM training step's forward and backward (the optimizer is negligible),
    counted on a fresh U-Net of the same shape: the engine's has DeepSpeed's gradient hooks."""
    net = build_networks(cfg, cuda=False)["unet"]
    net = net.to(device=batch.device, dtype=dtype)
    x = to_unit_range(batch, dtype)
    t = torch.randint(0, 1000, (x.shape[0],), device=x.device)
    with FlopCounterMode(display=False) as counter:
        net(x, t).float().square().mean().backward()
    return counter.get_total_flops()


def training_case(spec: str, precision: str, repeats: int, peak: float) -> dict:
    model, preset, resolution, batch = spec.split(":")
    resolution, batch = int(resolution), int(batch)
    cfg = _config(model, preset, resolution, batch, precision)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        task = build_task(cfg, 0, 1)
    dev = next(iter(task.engines.values())).device
    images = torch.randint(0, 256, (batch, 3, resolution, resolution), dtype=torch.uint8)
    images = images.to(dev)
    timing = measure(lambda: task.train_step([images]), repeats, warmup=3)
    out = {"config": {"model": model, "preset": preset, "resolution": resolution,
                      "batch_per_gpu": batch, "precision": precision},  # fmt: skip
           "step": timing, "images_per_s": batch / timing["median"]}  # fmt: skip
    if model == "ddpm":
        flops = unet_step_flops(cfg, images, DTYPES[precision])
        out |= {"flops_per_step": flops, "mfu": flops / timing["median"] / peak}
    return out


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
    peak = matmul_flops_per_s(DTYPES[precision], matmul_size, repeats)
    result: dict = {
        "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
        "config": {
            "precision": precision,
            "matmul_size": matmul_size,
            "loader_workers": loader_workers,
        },  # fmt: skip
        "matmul": peak,
    }
    for spec in cases:
        case = training_case(spec, precision, repeats, peak["flops_per_s"])
        resolution, batch = case["config"]["resolution"], case["config"]["batch_per_gpu"]
        stream = loader_rate(workdir, resolution, loader_images, batch, loader_workers)
        case |= {"stream_images_per_s": stream, "loader_headroom": stream / case["images_per_s"]}
        result[spec] = case
    result["targets"] = {"loader_headroom": ">= 1.0 (the stream keeps up with training)"}
    return result
