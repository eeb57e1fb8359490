"""Reduced precision under DeepSpeed's CPU accelerator: bf16 trains both models and resumes bit
for bit; fp16, which DeepSpeed refuses on a CPU without fp16 kernels, is refused by hpcgen first
with the fix named."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hpcgen.config import ConfigError, DeepSpeedConfig
from hpcgen.engine.deepspeed_engine import make_engine
from hpcgen.engine.distributed import detect_layout, init_distributed
from hpcgen.engine.loop import train
from hpcgen.engine.run_dir import checkpoint_dir, checkpoint_path, rank_state_file
from tests.engine.test_train_cpu import smoke_config, weights

pytestmark = pytest.mark.slow
NETWORKS = {"ddpm": ["unet"], "gan": ["generator", "discriminator"]}


def cpu_has_fp16_kernels() -> bool:
    """What DeepSpeed's CPU accelerator asks (is_fp16_supported): oneDNN's fp16 kernels, which
    need AVX512-FP16 or AMX-FP16."""
    return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())


@pytest.mark.parametrize("model", ["ddpm", "gan"])
def test_bf16_trains_with_finite_losses_and_resumes_bit_for_bit(model, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    bf16 = ["deepspeed.precision=bf16", "trainer.log_every_steps=1"]
    result = train(smoke_config(model, *bf16), straight)
    assert result["step"] == 20
    lines = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    losses = [v for line in lines for k, v in line.items() if k.startswith("loss")]
    assert len(lines) == 20 and losses and all(math.isfinite(v) for v in losses), lines[-1]
    print("bf16 losses at steps 1 and 20:", {k: v for k, v in lines[0].items() if "loss" in k},
          {k: v for k, v in lines[-1].items() if "loss" in k})  # fmt: skip
    for engine in NETWORKS[model]:  # the engines really hold bf16 weights
        saved = weights(straight, 20, engine)
        assert {t.dtype for t in saved.values() if t.is_floating_point()} == {torch.bfloat16}
    train(smoke_config(model, *bf16, "trainer.max_steps=10"), split)
    train(smoke_config(model, *bf16), split)  # resumes from step 10
    state = torch.load(
        checkpoint_path(checkpoint_dir(split), 20) / rank_state_file(0), weights_only=False
    )
    assert state["step"] == 20
    events = [e["event"] for e in json.loads((split / "run.json").read_text())["events"]]
    assert events == ["started", "completed", "resumed", "completed"]
    for engine in NETWORKS[model]:
        a, b = weights(straight, 20, engine), weights(split, 20, engine)
        for name in a:
            assert torch.equal(a[name], b[name]), f"{engine}.{name} differs after resume"


@pytest.mark.parametrize("model", ["ddpm", "gan"])
def test_fp16_on_the_cpu_is_refused_naming_the_fix(model, tmp_path):
    with pytest.raises(ConfigError) as refused:
        train(smoke_config(model, "deepspeed.precision=fp16"), tmp_path)
    message = str(refused.value)
    assert message.startswith("deepspeed.precision=fp16 needs a GPU"), message
    assert "use deepspeed.precision=fp32 or bf16 on the CPU" in message
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.skipif(cpu_has_fp16_kernels(), reason="this CPU has oneDNN fp16 kernels")
def test_deepspeed_itself_refuses_fp16_on_a_cpu_without_fp16_kernels():
    # why hpcgen refuses before DeepSpeed does: its own error names neither the field nor the fix
    init_distributed(detect_layout())  # reuses an earlier test's process group
    net = torch.nn.Linear(4, 4)
    with pytest.raises(ValueError, match="Type fp16 is not supported on your device"):
        make_engine(net, 1e-3, (0.9, 0.99), 0.0, DeepSpeedConfig(precision="fp16"), 2, 1)
