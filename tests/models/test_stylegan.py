"""StyleGAN2 networks: the report's parameter counts, shapes, truncation, mixing, precision."""

from __future__ import annotations

import pytest
import torch

from hpcgen.config import GANConfig
from hpcgen.engine.gan_task import build_networks, layer_tables
from hpcgen.models.stylegan import build_gan, mix_styles
from hpcgen.models.stylegan_layers import downsample2d, lowpass_filter, upsample2d

# The report's Figures 5 and 6 (StyleGAN2-ADA at 64x64, z = w = 512, two mapping layers)
REPORT_G = {
    "mapping.fc0": 262_656,
    "mapping.fc1": 262_656,
    "synthesis.b4.conv1": 2_622_465,
    "synthesis.b4.torgb": 264_195,
    "synthesis.b4": 8_192,  # the learned 4x4 constant
    **{f"synthesis.b{r}.conv{i}": 2_622_465 for r in (8, 16, 32) for i in (0, 1)},
    **{f"synthesis.b{r}.torgb": 264_195 for r in (8, 16, 32)},
    "synthesis.b64.conv0": 1_442_561,
    "synthesis.b64.conv1": 721_409,
    "synthesis.b64.torgb": 132_099,
}
REPORT_D = {
    "b64.fromrgb": 1_024,
    "b64.conv0": 590_080,
    "b64.conv1": 1_180_160,
    "b64.skip": 131_072,
    **{f"b{r}.conv{i}": 2_359_808 for r in (32, 16, 8) for i in (0, 1)},
    **{f"b{r}.skip": 262_144 for r in (32, 16, 8)},
    "b4.mbstd": 0,
    "b4.conv": 2_364_416,
    "b4.fc": 4_194_816,
    "b4.out": 513,
}


def test_stylegan2_preset_has_the_reports_parameter_counts_per_layer():
    generator, discriminator = build_gan("stylegan2", 64)
    assert sum(p.numel() for p in generator.parameters()) == 22_243_608
    assert sum(p.numel() for p in discriminator.parameters()) == 23_407_361
    tables = layer_tables(generator, discriminator)
    counts_g = {r.name: r.parameters for r in tables["generator"] if r.parameters}
    counts_d = {r.name: r.parameters for r in tables["discriminator"]}
    assert counts_g == REPORT_G
    assert {k: counts_d[k] for k in REPORT_D} == REPORT_D
    assert sum(counts_g.values()) == 22_243_608 and sum(counts_d.values()) == 23_407_361
    shapes = {r.name: r.output_shape for r in tables["generator"]}
    assert shapes["synthesis.b64.torgb"] == "[2, 3, 64, 64]"


@pytest.mark.parametrize("resolution", [8, 16, 32])
def test_generator_and_discriminator_shapes(resolution):
    generator, discriminator = build_gan("tiny", resolution)
    img = generator(torch.randn(4, generator.z_dim))
    assert img.shape == (4, 3, resolution, resolution) and img.dtype == torch.float32
    logits = discriminator(img)
    assert logits.shape == (4,) and torch.isfinite(logits).all()
    assert generator.num_ws == 2 * (resolution.bit_length() - 3) + 2


def test_truncation_psi_zero_maps_every_z_to_w_avg():
    generator, _ = build_gan("tiny", 16)
    generator.mapping.w_avg.copy_(torch.randn(generator.w_dim))
    ws = generator.mapping(torch.randn(5, generator.z_dim), psi=0.0)
    assert torch.allclose(ws, generator.mapping.w_avg.expand_as(ws))
    ws_half = generator.mapping(torch.randn(5, generator.z_dim), psi=0.5, truncation_cutoff=2)
    assert not torch.allclose(ws_half[:, 2:], generator.mapping.w_avg.expand_as(ws_half[:, 2:]))


def test_w_avg_tracks_mapped_latents_in_training_only():
    generator, _ = build_gan("tiny", 16)
    generator.eval()
    generator(torch.randn(4, generator.z_dim))
    assert torch.count_nonzero(generator.mapping.w_avg) == 0
    generator.train()
    generator(torch.randn(4, generator.z_dim))
    assert torch.count_nonzero(generator.mapping.w_avg) > 0


def test_style_mixing_changes_the_output_only_from_the_crossover_layer_on():
    generator, _ = build_gan("tiny", 16)
    generator.eval()
    # which w each layer reads: b4 conv1 0, torgb 1; b8 conv0 1, conv1 2, torgb 3; b16 3, 4, 5
    w_index = {
        "b4.conv1": 0,
        "b4.torgb": 1,
        "b8.conv0": 1,
        "b8.conv1": 2,
        "b8.torgb": 3,
        "b16.conv0": 3,
        "b16.conv1": 4,
        "b16.torgb": 5,
    }
    outputs: dict[str, list[torch.Tensor]] = {k: [] for k in w_index}
    hooks = [
        generator.synthesis.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: outputs[name].append(out)
        )
        for name in w_index
    ]
    ws_a = generator.mapping(torch.randn(2, generator.z_dim))
    ws_b = generator.mapping(torch.randn(2, generator.z_dim))
    cutoff = 3
    with torch.no_grad():
        generator.synthesis(ws_a, "const")
        generator.synthesis(mix_styles(ws_a, ws_b, cutoff), "const")
    for h in hooks:
        h.remove()
    for name, index in w_index.items():
        same = torch.equal(outputs[name][0], outputs[name][1])
        assert same == (index < cutoff), f"{name} (w {index}) with crossover at {cutoff}"


def test_reduced_precision_runs_the_top_blocks_in_bf16_and_returns_fp32():
    cfg = GANConfig(preset="tiny", reduced_precision="bf16", num_fp16_res=2)
    generator, discriminator = build_networks(cfg, 16, cuda=False)
    tables = layer_tables(generator, discriminator)
    dtypes = {r.name: r.dtype for r in tables["generator"] + tables["discriminator"]}
    assert (
        dtypes["synthesis.b16.conv1"] == "bfloat16" and dtypes["synthesis.b8.conv1"] == "bfloat16"
    )
    assert dtypes["synthesis.b4.conv1"] == "float32"
    assert dtypes["b16.conv1"] == "bfloat16" and dtypes["b4.fc"] == "float32"
    assert generator(torch.randn(2, generator.z_dim)).dtype == torch.float32


def test_auto_precision_is_fp32_on_the_cpu():
    generator, _ = build_networks(GANConfig(preset="tiny"), 16, cuda=False)
    assert generator.synthesis.b16.reduced_precision is False


def test_lowpass_resampling_keeps_a_constant_image_constant():
    f = lowpass_filter()
    x = torch.full((1, 2, 8, 8), 3.0)
    up, down = upsample2d(x, f), downsample2d(x, f)
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    assert torch.allclose(up[:, :, 2:-2, 2:-2], torch.tensor(3.0))  # unit DC gain inside
    assert torch.allclose(down[:, :, 1:-1, 1:-1], torch.tensor(3.0))
