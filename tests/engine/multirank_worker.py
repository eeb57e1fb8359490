"""One rank of the multi-rank equivalence test (python -m tests.engine.multirank_worker).

The real tasks train here (engine/tasks.py's DDPMTask, engine/gan_task.py's GANTask: their
train_step with its losses, R1, engines, EMA and cross-rank averaging), built as the loop
builds them. Only their draws of randomness are replaced: every rank draws the whole global
batch's timesteps and noise (DDPM) or latents (GAN) from one generator seeded alike
everywhere and keeps its strided share x[rank::world], as the stream splits samples when
there are fewer shards than readers; the real images are split the same way. The strided
split also keeps the discriminator's minibatch-stddev groups the same at 1 and 2 ranks.
Augmentation, style mixing, path length and G's noise inputs, which draw from per-rank
generators, are off (noise_mode const).
Rank 0 writes the final weights.
"""

from __future__ import annotations

import sys
from functools import partial

import torch

from hpcgen.cli.compose import to_train_config
from hpcgen.data.shards import ensure_shards
from hpcgen.data.stream import real_images
from hpcgen.engine.distributed import detect_layout, init_distributed
from hpcgen.engine.tasks import DDPMTask, build_task
from hpcgen.seeds import network_seed
from tests.conftest import compose_train

OVERRIDES = {
    "ddpm": [
        "model.variance=learned_range",
        "model.loss=hybrid",
        "model.lr=1e-3",
        "model.betas=[0.0,0.99]",
        "model.schedule=cosine",  # linear's L_vlb at small t amplifies float reordering 20x
    ],
    "gan": [
        "model.augment=[]",
        "model.ada_target=null",
        "model.style_mixing_prob=0",
        "model.pl_weight=0",
        "model.lr_g=1e-3",
        "model.lr_d=1e-3",
    ],
}


def shared_draws(task, rank: int, world: int) -> None:
    """The task's random draws, made for the global batch alike on every rank, then split."""
    draw = torch.Generator(device=task.engines[next(iter(task.engines))].device).manual_seed(1)
    mine = slice(rank, None, world)
    if isinstance(task, DDPMTask):

        def _draw(x0: torch.Tensor):
            n = x0.shape[0] * world
            t = torch.randint(0, task.diffusion.T, (n,), generator=draw, device=x0.device)
            noise = torch.randn((n, *x0.shape[1:]), generator=draw, device=x0.device)
            return t[mine], None, noise[mine].to(x0.dtype)

        task._draw = _draw
    else:
        task._latents = lambda n: torch.randn(
            n * world, task.z_dim, generator=draw, device=task.device
        )[mine]
        # the synthesis layers' noise inputs come from each rank's global RNG: constant here
        task.g.module.forward = partial(task.g.module.forward, noise_mode="const")


def main(model: str, stage: int, global_batch: int, steps: int, out: str) -> None:
    layout = detect_layout()
    init_distributed(layout)
    rank, world = layout.rank, layout.world_size
    batch = global_batch // world
    overrides = [f"model={model}", "experiment=smoke", f"trainer.batch_per_gpu={batch}"]
    cfg = to_train_config(compose_train([*overrides, *OVERRIDES[model]]))
    cfg.deepspeed.zero_stage = stage
    root, manifest = ensure_shards(cfg.data)
    images = real_images(root, manifest, global_batch * steps)  # uint8, as the stream gives
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(network_seed(cfg.seed))  # as the loop builds it
        task = build_task(cfg, rank, world)
    shared_draws(task, rank, world)
    for step in range(steps):
        x = images[step * global_batch : (step + 1) * global_batch]  # (G, 3, H, W)
        task.train_step([x[rank::world]])
    if rank == 0:
        weights = {
            f"{k}.{name}": v.detach().float().clone()
            for k, e in task.engines.items()
            for name, v in e.module.state_dict().items()
        }
        torch.save(weights, out)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
