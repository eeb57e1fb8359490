"""StyleGAN2 networks: the report's parameter counts, shapes, truncation, mixing, precision."""

from __future__ import annotations

import pytest
import torch

from hpcgen.config import GANConfig
from hpcgen.engine.gan_task import layer_tables
from hpcgen.models import stylegan
from hpcgen.models.stylegan import build_gan, mix_styles
from hpcgen.models.stylegan_layers import Conv2dLayer, downsample2d, lowpass_filter, upsample2d
from hpcgen.networks import gan_networks

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
    generator, discriminator = gan_networks(cfg, 16, cuda=False)
    tables = layer_tables(generator, discriminator)
    dtypes = {r.name: r.dtype for r in tables["generator"] + tables["discriminator"]}
    assert (
        dtypes["synthesis.b16.conv1"] == "bfloat16" and dtypes["synthesis.b8.conv1"] == "bfloat16"
    )
    assert dtypes["synthesis.b4.conv1"] == "float32"
    assert dtypes["b16.conv1"] == "bfloat16" and dtypes["b4.fc"] == "float32"
    assert generator(torch.randn(2, generator.z_dim)).dtype == torch.float32


def test_auto_precision_is_fp32_on_the_cpu():
    generator, _ = gan_networks(GANConfig(preset="tiny"), 16, cuda=False)
    assert generator.synthesis.b16.reduced_precision is False


def test_lowpass_resampling_keeps_a_constant_image_constant():
    f = lowpass_filter()
    x = torch.full((1, 2, 8, 8), 3.0)
    up, down = upsample2d(x, f), downsample2d(x, f)
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    assert torch.allclose(up[:, :, 2:-2, 2:-2], torch.tensor(3.0))  # unit DC gain inside
    assert torch.allclose(down[:, :, 1:-1, 1:-1], torch.tensor(3.0))


def _down_conv_with_centre_tap(channels: int = 1) -> Conv2dLayer:
    """A 3x3 down-sampling conv whose kernel is a unit centre tap (weight gain undone)."""
    layer = Conv2dLayer(channels, channels, 3, "linear", bias=False, down=True)
    with torch.no_grad():
        layer.weight.zero_()
        for c in range(channels):
            layer.weight[c, c, 1, 1] = 1 / layer.weight_gain
    return layer


def test_down_conv_impulse_response_is_the_references_1_3_3_9():
    # StyleGAN2-ADA blurs with padding (2, 2) and runs the stride-2 conv unpadded: an impulse
    # at (8, 8) lands on output pixels 3..4 with taps (1, 3 / 3, 9) / 64; one pixel off gave
    # (9, 3 / 3, 1)
    layer = _down_conv_with_centre_tap()
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 8, 8] = 1.0
    y = layer(x)[0, 0] * 64  # (8, 8)
    expected = torch.zeros(8, 8)
    expected[3:5, 3:5] = torch.tensor([[1.0, 3.0], [3.0, 9.0]])
    assert torch.allclose(y, expected, atol=1e-5), y[2:6, 2:6]


def test_down_conv_equals_a_dense_conv_then_blur_and_subsample_like_the_skip_branch():
    # blur-then-strided-conv is the dense 3x3 conv followed by downsample2d (the 1x1 skip's
    # resampling): the two residual branches sample the same positions, away from the border
    torch.manual_seed(0)
    layer = Conv2dLayer(3, 5, 3, "linear", bias=False, down=True)
    x = torch.randn(2, 3, 16, 16)
    w = layer.weight * layer.weight_gain
    dense = torch.nn.functional.conv2d(x, w, padding=1)  # (2, 5, 16, 16)
    reference = downsample2d(dense, lowpass_filter())  # (2, 5, 8, 8)
    ours = layer(x)
    assert ours.shape == reference.shape == (2, 5, 8, 8)
    assert torch.allclose(ours[:, :, 1:-1, 1:-1], reference[:, :, 1:-1, 1:-1], atol=1e-5)
    # the 1x1 skip path: an impulse reaches the same two output pixels, with taps 3/4 and 1/4
    skip = Conv2dLayer(1, 1, 1, "linear", bias=False, down=True)
    with torch.no_grad():
        skip.weight.fill_(1 / skip.weight_gain)
    impulse = torch.zeros(1, 1, 16, 16)
    impulse[0, 0, 8, 8] = 1.0
    support_skip = skip(impulse)[0, 0].abs() > 1e-6
    support_conv = _down_conv_with_centre_tap()(impulse)[0, 0].abs() > 1e-6
    assert torch.equal(support_skip, support_conv)


@pytest.mark.parametrize("num_fp16_res", [0, 4])
def test_conv_clamp_bounds_every_conv_layer_in_fp32_blocks_too(num_fp16_res):
    # the reference clamps every layer when conv_clamp is set, whatever the block's precision;
    # reduced blocks run in fp32 here (as the reference's check on the CPU does)
    torch.manual_seed(0)
    generator, discriminator = build_gan("tiny", 32, num_fp16_res=num_fp16_res, conv_clamp=4.0)
    with torch.no_grad():
        for net in (generator.synthesis, discriminator):
            for name, p in net.named_parameters():
                if name.endswith("bias") and "affine" not in name:
                    p.add_(50.0)  # push every activation far beyond the clamp
    peaks: dict[str, float] = {}
    clamped = (stylegan.SynthesisLayer, stylegan.ToRGB, Conv2dLayer)
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, n=n: peaks.__setitem__(n, out.abs().max()))
        for net in (generator, discriminator)
        for n, m in net.named_modules()
        if isinstance(m, clamped) and not n.endswith("skip")
    ]
    with torch.no_grad():
        discriminator(generator(torch.randn(4, generator.z_dim), noise_mode="const"))
    for h in hooks:
        h.remove()
    assert {"synthesis.b4.conv1", "synthesis.b4.torgb", "b32.fromrgb", "b4.conv"} <= set(peaks)
    over = {n: float(v) for n, v in peaks.items() if v > 4.0 + 1e-5}
    assert not over, f"layers above conv_clamp=4: {over}"
    assert max(peaks.values()) == pytest.approx(4.0)  # the push reached the clamp
