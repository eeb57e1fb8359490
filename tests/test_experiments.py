"""The one-word experiments compose into their published recipes: networks of the published
parameter counts, and a global batch that divides over 1, 8 and 32 GPUs or says why not."""

from __future__ import annotations

import pytest
import torch

from hpcgen.cli.compose import to_train_config
from hpcgen.config import ConfigError, TrainConfig
from hpcgen.models.unet import PRESETS, UNet, build_unet
from hpcgen.plan import parameter_counts
from tests.conftest import REPO, compose_train


def gan(generator: int, discriminator: int) -> dict[str, int]:
    return {"generator": generator, "discriminator": discriminator}


# experiment: (model, preset, resolution, global batch, parameter counts of the reference code:
# diffusers' UNet2DModel, improved-diffusion's / guided-diffusion's UNetModel and
# stylegan2-ada-pytorch's networks, built with the recipe's arguments)
EXPERIMENTS = {
    "report_gan": ("gan", "stylegan2", 64, 32, gan(22_243_608, 23_407_361)),
    "report_ddpm": ("ddpm", "hf64", 64, 16, {"unet": 113_673_219}),
    "lsun64_ddpm": ("ddpm", "iddpm_lsun64", 64, 128, {"unet": 82_962_438}),
    "lsun256_ddpm": ("ddpm", "adm_lsun256", 256, 256, {"unet": 552_814_086}),  # ADM: "552M"
    "lsun256_stylegan2": ("gan", "paper256", 256, 64, gan(24_767_458, 24_001_089)),
}


def experiment(name: str) -> TrainConfig:
    return to_train_config(compose_train([f"experiment={name}"]))


SOURCES = {
    "report_gan": 'stylegan2-ada-pytorch (NVlabs) train.py, cfg_specs["auto"]',
    "report_ddpm": "examples/unconditional_image_generation/train_unconditional.py",
    "lsun64_ddpm": "improved-diffusion's README",
    "lsun256_ddpm": "guided-diffusion's README",
    "lsun256_stylegan2": 'stylegan2-ada-pytorch (NVlabs)\n# train.py cfg_specs["paper256"]',
}


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_is_a_global_delta_citing_its_source(name):
    text = (REPO / "configs" / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    assert SOURCES[name] in text


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_composes_with_its_published_network_size(name):
    model, preset, resolution, batch, counts = EXPERIMENTS[name]
    cfg = experiment(name)
    assert (cfg.model.name, cfg.model.preset) == (model, preset)
    assert (cfg.data.name, cfg.data.resolution) == ("lsun_bedroom", resolution)
    assert cfg.trainer.global_batch == batch
    assert parameter_counts(cfg) == counts


def test_report_gan_keeps_a_milestone_every_ten_epochs_of_1024_images():
    assert experiment("report_gan").data.max_images == 1024  # the epoch below is that subset
    assert experiment("report_ddpm").data.max_images == 151_652  # 5% of 3,033,042
    t = experiment("report_gan").trainer
    steps_per_epoch = 1024 // t.global_batch
    assert t.ckpt_milestone_every_steps == 10 * steps_per_epoch
    assert t.max_steps == 300 * steps_per_epoch
    assert t.max_steps // t.ckpt_milestone_every_steps == 30  # 30 FID points


def test_hf64_preset_has_the_parameter_count_of_diffusers_unet2dmodel():
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        reference = diffusers.UNet2DModel(
            sample_size=64,
            in_channels=3,
            out_channels=3,
            layers_per_block=2,
            block_out_channels=(128, 128, 256, 256, 512, 512),
            down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
        )
        ours = build_unet("hf64", 3, 64)
    count = sum(p.numel() for p in reference.parameters())
    assert sum(p.numel() for p in ours.parameters()) == count == 113_673_219


def test_improved_ddpm_lsun256_preset_has_the_reference_count():
    # improved-diffusion's UNetModel with its README's LSUN bedroom flags at 256 px (6 outputs)
    with torch.device("meta"):
        net = build_unet("iddpm_lsun256", 6, 256)
    assert sum(p.numel() for p in net.parameters()) == 113_676_678


def test_new_unet_options_run_forward_and_keep_the_shape():
    # hf64/iddpm/adm options on a tiny network: embedding bias, conv after up-sampling,
    # resampling residual blocks, heads from head channels
    import dataclasses

    preset = dataclasses.replace(
        PRESETS["tiny"], head_channels=8, scale_shift=False, upsample_conv=True
    )
    for p in (preset, dataclasses.replace(preset, scale_shift=True, resblock_updown=True)):
        out = UNet(p, 16, 6)(torch.randn(2, 3, 16, 16), torch.tensor([0, 999]))
        assert out.shape == (2, 6, 16, 16)


# published global batch over 1, 8 and 32 GPUs (one accumulation step): batch per GPU, or
# None where it does not divide
PER_GPU = {
    "report_gan": {1: 32, 8: 4, 32: 1},
    "report_ddpm": {1: 16, 8: 2, 32: None},
    "lsun64_ddpm": {1: 128, 8: 16, 32: 4},
    "lsun256_ddpm": {1: 256, 8: 32, 32: 8},
    "lsun256_stylegan2": {1: 64, 8: 8, 32: 2},
}


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
@pytest.mark.parametrize("world", [1, 8, 32])
def test_global_batch_divides_over_gpus_or_says_what_would(name, world):
    trainer = experiment(name).trainer
    expected = PER_GPU[name][world]
    if expected is None:
        with pytest.raises(ConfigError, match=rf"global_batch={trainer.global_batch} does not"):
            trainer.resolve_batch(world, 1)
        return
    assert trainer.resolve_batch(world, 1) == expected
    assert trainer.batch_per_gpu * 1 * world == trainer.global_batch


@pytest.mark.parametrize("name", ["report_gan", "lsun256_stylegan2"])
def test_gan_batch_per_gpu_fills_the_minibatch_stddev_group_up_to_8_gpus(name):
    cfg = experiment(name)
    for world in (1, 8):
        assert cfg.trainer.resolve_batch(world, 1) >= cfg.model.mbstd_group
    assert cfg.trainer.resolve_batch(32, 1) < cfg.model.mbstd_group  # said in the YAML
