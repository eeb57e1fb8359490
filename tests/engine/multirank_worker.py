"""One rank of the multi-rank equivalence test (python -m tests.engine.multirank_worker).

Every rank draws the same global batch (real images from the smoke shards, and the timesteps,
noise or latents from one generator seeded alike everywhere) and trains on its strided share
x[rank::world], as the stream splits samples when there are fewer shards than readers. The
strided split also keeps the discriminator's minibatch-stddev groups the same at 1 and 2 ranks.
Rank 0 writes the final weights.
"""

from __future__ import annotations

import sys

import torch

from hpcgen.cli.compose import to_train_config
from hpcgen.data.shards import ensure_shards
from hpcgen.data.stream import to_unit_range
from hpcgen.diffusion.gaussian import Diffusion, training_losses
from hpcgen.engine.deepspeed_engine import make_engine
from hpcgen.engine.distributed import average_over_ranks_, detect_layout, init_distributed
from hpcgen.eval.reference import real_images
from hpcgen.gan.losses import d_loss, g_loss, r1_penalty
from hpcgen.models.unet import build_unet
from hpcgen.networks import gan_networks
from tests.conftest import compose_train


def main(model: str, stage: int, global_batch: int, steps: int, out: str) -> None:
    layout = detect_layout()
    init_distributed(layout)
    rank, world = layout.rank, layout.world_size
    cfg = to_train_config(compose_train([f"model={model}", "experiment=smoke"]))
    cfg.deepspeed.zero_stage = stage
    root, manifest = ensure_shards(cfg.data)
    images = to_unit_range(real_images(root, manifest, global_batch * steps))
    mine = slice(rank, None, world)
    batch = global_batch // world
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if model == "ddpm":
            nets = {"unet": build_unet(cfg.model.preset, 6, cfg.data.resolution)}
        else:
            g, d = gan_networks(cfg.model, cfg.data.resolution, cuda=False)
            nets = {"g": g, "d": d}
    engines = {
        k: make_engine(net, 1e-3, (0.0, 0.99), 0.0, cfg.deepspeed, batch, world)
        for k, net in nets.items()
    }
    draw = torch.Generator().manual_seed(1)  # the global batch's randomness, alike on all ranks
    diffusion = Diffusion.from_schedule("cosine", 1000)
    for step in range(steps):
        x = images[step * global_batch : (step + 1) * global_batch]  # (G, 3, H, W)
        if model == "ddpm":
            t = torch.randint(0, 1000, (global_batch,), generator=draw)
            noise = torch.randn(x.shape, generator=draw)
            unet = engines["unet"]
            terms = training_losses(
                diffusion,
                unet,
                x[mine],
                t[mine],
                noise[mine],
                "eps",
                "learned_range",
                "hybrid",
                1e-3,
            )
            unet.backward(terms["loss"].mean())
            unet.step()
            continue
        g, d = engines["g"], engines["d"]
        z = torch.randn(global_batch, g.module.z_dim, generator=draw)[mine]
        with torch.no_grad():
            fake = g.module(z, noise_mode="const")
        real = x[mine].detach().requires_grad_(True)  # R1 through the bare module, as the task
        loss = d_loss("nonsaturating", d(real), d(fake)) + 0.5 * r1_penalty(d.module(real), real)
        d.backward(loss)
        d.step()
        d.module.requires_grad_(False)
        g.backward(g_loss("nonsaturating", d.module(g(z, noise_mode="const"))))
        g.step()
        d.module.requires_grad_(True)
        with torch.no_grad():
            average_over_ranks_(g.module.mapping.w_avg)
    if rank == 0:
        weights = {
            f"{k}.{name}": v.detach().float().clone()
            for k, e in engines.items()
            for name, v in e.module.state_dict().items()
        }
        torch.save(weights, out)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
