"""Checkpoints are pickles, and pickles run code: nothing is unpickled before its sha256 matches
the manifest, in a training resume, in generate and (through generate's loader) in evaluate."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from hpcgen.config import ConfigError
from hpcgen.engine.generate import load_network
from hpcgen.engine.loop import train
from hpcgen.engine.run_dir import COMMIT_MANIFEST, model_states_file, rank_state_file
from tests.engine.test_train_cpu import smoke_config

pytestmark = pytest.mark.slow


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant_same_size_exploit(path, marker) -> None:
    """Replace `path` by a pickle that runs a command, padded to the file's size: a size check
    passes, torch.load(weights_only=False) (what DeepSpeed does) would run it."""
    size = path.stat().st_size
    payload = pickle.dumps(_Exploit(str(marker)), protocol=2)
    path.write_bytes(payload + b"\0" * (size - len(payload)))
    assert path.stat().st_size == size


def test_a_tampered_deepspeed_file_of_the_same_size_is_never_unpickled(tmp_path, capsys):
    args = ["trainer.max_steps=10", "trainer.ckpt_every_steps=5", "trainer.log_every_steps=1"]
    run, marker = tmp_path / "run", tmp_path / "EXPLOITED"
    train(smoke_config("ddpm", *args), run)
    newest = run / "checkpoints" / "step_00000010"
    plant_same_size_exploit(newest / model_states_file("unet"), marker)
    plant_same_size_exploit(newest / rank_state_file(0), marker)
    evil = (newest / model_states_file("unet")).read_bytes()

    with pytest.raises(ConfigError, match="does not match its sha256 .* refusing to load it"):
        load_network(newest, torch.device("cpu"))  # launch/generate.py and evaluate's loader
    assert not marker.exists()

    capsys.readouterr()
    result = train(smoke_config("ddpm", *args[1:], "trainer.max_steps=12"), run)
    out = capsys.readouterr().out
    assert f"WARNING: skipping checkpoint {newest}" in out and "sha256" in out
    assert "resumed from" in out and "step_00000005 at step 5" in out
    assert result["step"] == 12 and not marker.exists()

    assert (newest / COMMIT_MANIFEST).is_file()  # step 10 saved again by the resumed run
    (tmp_path / "evil.pt").write_bytes(evil)  # what the check prevents: unpickling runs it
    with pytest.raises(RuntimeError, match="Invalid magic number"):  # after running it
        torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()
