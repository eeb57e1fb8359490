"""Every config group composes into a valid TrainConfig; bad input fails before launch."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import pytest
import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from hpcgen.cli.compose import compose_jobs, expand_sweep, resolve_plain, to_train_config
from hpcgen.cli.preflight import preflight
from hpcgen.config import (
    ConfigError,
    DDPMConfig,
    DeepSpeedConfig,
    GANConfig,
    LoggerConfig,
    TrainConfig,
    TrainerConfig,
)
from hpcgen.config.store import SCHEMAS
from hpcgen.gan.augment import AUGMENTATIONS
from tests.conftest import REPO, compose_train, run_train


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "configs" / group).glob("*.yaml"))


def pinned_model(experiment: str | None) -> str | None:
    """The model an experiment selects (`- override /model: gan`), or None."""
    path = REPO / "configs" / "experiment" / f"{experiment}.yaml"
    for line in path.read_text().splitlines() if experiment else []:
        if line.strip().startswith("- override /model:"):
            return line.split(":", 1)[1].strip()
    return None


@pytest.mark.parametrize(
    "model,data,zero,launcher,experiment",
    [
        combo
        for combo in itertools.product(
            options("model"),
            options("data"),
            options("deepspeed"),
            options("hydra/launcher"),
            [None, *options("experiment")],
        )
        if pinned_model(combo[-1]) in (None, combo[0])  # the others: tests/test_experiments.py
    ],
)
def test_every_config_group_composes(model, data, zero, launcher, experiment, tmp_path):
    overrides = [f"model={model}", f"data={data}", f"deepspeed={zero}"]
    overrides += [f"hydra/launcher={launcher}"]
    overrides += [f"experiment={experiment}"] if experiment else []
    overrides += [f"data.source={tmp_path}"] if data == "folder" else []
    cfg = compose_train(overrides)
    if zero == "zero3" and cfg.model.get("pl_weight", 0) > 0:  # the StyleGAN2-ADA recipes
        with pytest.raises(ConfigError, match="model.pl_weight>0 with deepspeed=zero3"):
            to_train_config(cfg)
        return
    train_cfg = to_train_config(cfg)
    assert train_cfg.model.name == model
    assert train_cfg.data.name == data
    assert train_cfg.deepspeed.zero_stage == int(zero[-1])
    expected_launcher = {"slurm": "SlurmLauncher", "local": "BasicLauncher"}[launcher]
    assert cfg.hydra.launcher._target_.endswith(expected_launcher)
    if experiment == "smoke":
        assert train_cfg.model.preset == "tiny" and train_cfg.trainer.max_steps == 20


def test_slurm_launcher_takes_cluster_settings_from_environment(monkeypatch):
    monkeypatch.setenv("HPCGEN_SLURM_PARTITION", "gpu-long")
    monkeypatch.setenv("HPCGEN_SLURM_ACCOUNT", "proj42")
    monkeypatch.setenv("HPCGEN_SLURM_GPUS_PER_NODE", "4")
    monkeypatch.setenv("HPCGEN_SLURM_TIME_MIN", "720")
    launcher = compose_train(["hydra/launcher=slurm"]).hydra.launcher
    assert launcher.partition == "gpu-long" and launcher.account == "proj42"
    assert launcher.gpus_per_node == 4 and launcher.tasks_per_node == 4
    assert launcher.timeout_min == 720 and launcher.qos is None


# group: the schema its options start from (None: each its own, model/<option>_schema); and the
# keys an option may restate at their default (zero2.yaml's stage is what the option means)
GROUP_SCHEMAS = {"model": None, "data": "data_schema", "deepspeed": "deepspeed_schema"}
RESTATED = {"deepspeed": {"zero_stage"}}


@pytest.mark.parametrize("group,name,schema", SCHEMAS)
def test_every_schema_is_in_hydras_config_store(group, name, schema):
    stored = ConfigStore.instance().load(f"{group}/{name}.yaml" if group else f"{name}.yaml")
    assert OmegaConf.get_type(stored.node) is schema


@pytest.mark.parametrize(
    "path", sorted(str(p.relative_to(REPO / "configs")) for g in GROUP_SCHEMAS
                   for p in (REPO / "configs" / g).glob("*.yaml"))
)  # fmt: skip
def test_group_options_start_from_their_schema_and_set_only_what_differs(path):
    group, option = path.removesuffix(".yaml").split("/")
    text = yaml.safe_load((REPO / "configs" / path).read_text()) or {}
    schema = GROUP_SCHEMAS[group] or f"{option}_schema"
    assert text.pop("defaults") == [schema, "_self_"]
    defaults = OmegaConf.to_container(ConfigStore.instance().load(f"{group}/{schema}.yaml").node)
    same = {k for k, v in text.items() if defaults[k] == v} - RESTATED.get(group, set())
    assert not same, f"configs/{path} restates the dataclass default of {sorted(same)}"


def test_train_yaml_leaves_every_section_default_to_the_dataclasses():
    text = yaml.safe_load((REPO / "configs" / "train.yaml").read_text())
    assert text["defaults"][0] == "train_schema"
    assert set(text) == {"defaults", "hydra"}


@pytest.mark.parametrize("model,schema", [("ddpm", DDPMConfig), ("gan", GANConfig)])
def test_composed_defaults_are_the_dataclass_defaults(model, schema):
    composed = resolve_plain(compose_train([f"model={model}"]))
    plain = {k: list(v) if isinstance(v, tuple) else v
             for k, v in dataclasses.asdict(schema()).items()}  # fmt: skip
    assert composed["model"] == plain
    assert composed["trainer"] == dataclasses.asdict(TrainerConfig())
    assert composed["deepspeed"] == dataclasses.asdict(DeepSpeedConfig())
    assert composed["logger"] == dataclasses.asdict(LoggerConfig())
    assert composed["eval"]["settings"] is None and composed["seed"] == 0
    if model == "gan":
        assert composed["model"]["augment"] == list(AUGMENTATIONS)


def test_synthetic_root_follows_the_data_dir_the_resolution_and_the_set_size(monkeypatch):
    monkeypatch.setenv("HPCGEN_DATA_DIR", "/data/here")
    cfg = to_train_config(compose_train(["data.resolution=16", "data.num_samples=64"]))
    assert cfg.data.root == "/data/here/toy_bedroom_16px_64"
    monkeypatch.delenv("HPCGEN_DATA_DIR")
    cfg = to_train_config(compose_train([]))
    assert cfg.data.root == "~/.cache/hpcgen/data/toy_bedroom_32px_2048"


@pytest.mark.parametrize("zero", [1, 2, 3])
def test_each_zero_option_sets_its_stage_and_nothing_else(zero):
    ds = OmegaConf.to_container(compose_train([f"deepspeed=zero{zero}"]).deepspeed)
    assert ds == dataclasses.asdict(DeepSpeedConfig(zero_stage=zero))


def test_the_schemas_accept_what_users_pass_on_the_command_line():
    cfg = to_train_config(compose_train([
        "model=gan", "model.ada_target=null", "model.conv_clamp=null", "model.augment=[]",
        "model.betas=[0.5,0.9]", "model.unrolled_lr=0.01", "trainer.global_batch=null",
        "data.max_images=null", "eval.settings={num_samples:10,extractor:tiny-test}",
        "eval.sbatch_args=['--qos=low']", "deepspeed.decay_steps=null", "dry_run=yes",
    ]))  # fmt: skip
    assert cfg.model.ada_target is None and cfg.model.conv_clamp is None
    assert cfg.model.augment == [] and cfg.model.betas == (0.5, 0.9)
    assert cfg.eval.settings == {"num_samples": 10, "extractor": "tiny-test"}
    assert cfg.eval.sbatch_args == ["--qos=low"]
    assert to_train_config(compose_train(["eval.settings=null"])).eval.settings == {}


def test_a_value_of_the_wrong_type_fails_at_composition_naming_the_field():
    with pytest.raises(ConfigError, match="trainer.max_steps=many.*trainer.max_steps"):
        compose_jobs(["trainer.max_steps=many"], "train")


def test_evaluate_yaml_holds_no_default_and_composes_to_the_dataclass_defaults():
    from hpcgen.cli.evaluate import EvaluateSchema  # registers evaluate_schema
    from hpcgen.eval.evaluate import EvalConfig

    text = yaml.safe_load((REPO / "configs" / "evaluate.yaml").read_text())
    assert text["defaults"][0] == "evaluate_schema" and set(text) == {"defaults", "hydra"}
    composed = resolve_plain(compose_jobs(["run=/r"], "evaluate")[0])
    assert composed.pop("eval") == dataclasses.asdict(EvalConfig())
    own = {f.name: f.default for f in dataclasses.fields(EvaluateSchema) if f.name != "eval"}
    assert composed == {**own, "run": "/r"}


@pytest.mark.parametrize(
    "arg,message",
    [("eval.batch=many", "eval.batch=many.*eval.batch"), ("eval.extractor=x", "extractor='x'")],
)
def test_evaluate_rejects_bad_input_in_one_line_with_status_2(arg, message, tmp_path):
    import re
    import subprocess
    import sys

    cmd = [sys.executable, str(REPO / "launch" / "evaluate.py"), f"run={tmp_path}", arg]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("hpcgen: error: ") and re.search(message, lines[0]), lines[0]


def test_sweep_expands_to_cartesian_product():
    combos = expand_sweep(["model=ddpm,gan", "seed=1,2", "trainer.max_steps=5"])
    assert len(combos) == 4
    assert ["model=gan", "seed=2", "trainer.max_steps=5"] in combos


@pytest.mark.parametrize(
    "tree,message",
    [
        ({"model": {"name": "vae"}}, "model='vae' is not a known model: choose one of ddpm, gan"),
        ({"model": {"name": "ddpm", "lr": -1.0}}, "model.lr=-1.0"),
        ({"model": {"name": "ddpm", "presett": "tiny"}}, "unknown key model.presett"),
        ({"model": {"name": "gan", "preset": "huge"}}, "choose one of tiny, small"),
        ({"model": {"name": "ddpm"}, "data": {"resolution": 48}}, "power of two"),
        ({"model": {"name": "ddpm"}, "trainer": {"max_steps": "10"}}, "expected int"),
        ({"model": {"name": "ddpm"}, "deepspeed": {"zero_stage": 4}}, "deepspeed.zero_stage=4"),
        ({"model": {"name": "ddpm"}, "data": {"name": "folder"}}, "data.source"),
        ({"model": {"name": "ddpm", "variance": "learned_range"}}, "needs model.loss=hybrid"),
        ({"model": {"name": "ddpm", "sampler": "ddim2000"}}, "asks for 2000 steps"),
        ({"model": {"name": "ddpm", "sampler": "euler"}}, "use ddpm, ddpmN or ddimN"),
        ({"model": {"name": "ddpm", "parameterisation": "v"}}, "choose one of eps, x0, mu"),
        ({"model": {"name": "ddpm", "clip_x0": "yes"}}, "recompute, clip, none"),
        ({"model": {"name": "gan", "loss": "hinge"}}, "nonsaturating, minimax, wgan_gp"),
        ({"model": {"name": "gan", "augment": ["xflip", "cutout"]}}, "unknown augmentation"),
        ({"model": {"name": "gan", "augment": "xflip"}}, "model.augment='xflip' must be a list"),
        ({"model": {"name": "gan", "ada_target": 1.5}}, "null for a fixed model.augment_p"),
        ({"model": {"name": "gan", "reduced_precision": "fp8"}}, "auto, none, bf16, fp16"),
        ({"model": {"name": "ddpm", "diffusion_steps": 10}}, "betas up to 2.00 (0.02 x 1000/T)"),
        (
            {"model": {"name": "gan", "unrolled_steps": 2}, "trainer": {"compile": True}},
            "trainer.compile=true with model.unrolled_steps=2",
        ),
        ({"model": {"name": "ddpm"}, "deepspeed": {"lr_schedule": "step"}}, "constant, cosine"),
        ({"model": {"name": "ddpm"}, "deepspeed": {"min_lr_ratio": 2.0}}, "in [0, 1]"),
        (
            {"model": {"name": "ddpm"}, "deepspeed": {"warmup_steps": 50, "decay_steps": 50}},
            "must exceed deepspeed.warmup_steps=50",
        ),
        (
            {"model": {"name": "gan", "pl_weight": 2.0}, "deepspeed": {"zero_stage": 3}},
            "use deepspeed=zero2",
        ),
    ],
)
def test_bad_values_name_the_field_and_the_fix(tree, message):
    with pytest.raises(ConfigError, match=None) as err:
        TrainConfig.from_dict(tree)
    assert message in str(err.value)


def test_defaults_build_typed_configs():
    cfg = TrainConfig.from_dict({"model": {"name": "gan", "betas": [0.0, 0.99]}})
    assert isinstance(cfg.model, GANConfig) and cfg.model.betas == (0.0, 0.99)
    assert isinstance(TrainConfig.from_dict({"model": {"name": "ddpm"}}).model, DDPMConfig)


def test_global_batch_must_divide_over_ranks():
    cfg = TrainConfig.from_dict({"model": {"name": "ddpm"}, "trainer": {"global_batch": 64}})
    assert cfg.trainer.resolve_batch(world_size=4, grad_accum_steps=2) == 8
    with pytest.raises(ConfigError, match="does not divide over 3 rank"):
        cfg.trainer.resolve_batch(world_size=3, grad_accum_steps=1)


def test_preflight_rejects_a_global_batch_that_does_not_divide_over_slurm_ranks(slurm_cluster):
    with pytest.raises(ConfigError, match="trainer.global_batch=10 does not divide over 4"):
        preflight(
            ["hydra/launcher=slurm", "hydra.launcher.tasks_per_node=4", "trainer.global_batch=10"]
        )


@pytest.mark.parametrize(
    "args,message",
    [
        (["model=vae"], "unknown model 'vae': choose one of ddpm, gan"),
        (["-m", "model=ddpm,gan", "data=nope"], "unknown data 'nope'"),
        (["data=lsun_bedroom", "data.root=/no/such/shards"], "data.root=/no/such/shards"),
        (["data=folder", "data.source=/no/such/images"], "data.source=/no/such/images"),
        (["data=folder"], "data=folder needs data.source=<folder or zip of images>"),
        (
            ["trainer.global_batch=10", "hydra/launcher=slurm", "hydra.launcher.tasks_per_node=3"],
            None,
        ),
        (["trainer.bacth_per_gpu=4"], "Could not override 'trainer.bacth_per_gpu'"),
    ],
)
def test_train_rejects_bad_input_in_one_line_with_status_2(args, message, tmp_path):
    result = run_train(args, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpcgen: error: "), result.stderr
    if message:
        assert message in lines[0]
    assert not any(tmp_path.iterdir()), "nothing may be written before preflight passes"


def test_slurm_launcher_without_slurm_says_how_to_start_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "missing-slurm.conf"))
    result = run_train(["-m", "model=ddpm,gan", "hydra/launcher=slurm"], cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert "SLURM is not reachable" in result.stderr
    assert "slurm/local-cluster.sh start" in result.stderr


def test_manifest_of_lsun_root_is_checked(tmp_path):
    (tmp_path / "manifest.json").write_text(
        json.dumps({"shards": [{"name": "shard-000000.tar", "count": 1, "bytes": 10}]})
    )
    cfg = compose_train(["data=lsun_bedroom", f"data.root={tmp_path}"])
    from hpcgen.data.shards import read_manifest

    with pytest.raises(ConfigError, match="shard-000000.tar is missing"):
        read_manifest(Path(to_train_config(cfg).data.root))


@pytest.mark.parametrize("data", options("data"))
def test_prepare_config_composes_for_every_data_source(data, tmp_path):
    from hpcgen.cli.compose import compose_jobs, to_prepare_config

    (cfg,) = compose_jobs(
        [f"data={data}", f"data.source={tmp_path}", "num_tasks=4", "task_index=3"], "prepare"
    )
    data_cfg, task_index, num_tasks = to_prepare_config(cfg)
    assert data_cfg.name == data and (task_index, num_tasks) == (3, 4)


def test_prepare_on_slurm_becomes_an_array_of_shard_ranges():
    from hpcgen.cli.prepare import prepare_array_argv

    assert prepare_array_argv(["data=folder", "hydra/launcher=slurm", "num_tasks=3"]) == [
        "-m",
        "data=folder",
        "hydra/launcher=slurm",
        "num_tasks=3",
        "task_index=range(3)",
    ]
    assert prepare_array_argv(["hydra/launcher=slurm"])[-2:] == [
        "task_index=range(8)",
        "num_tasks=8",
    ]
    assert prepare_array_argv(["data=folder"]) == ["data=folder"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["data=folder", "data.source=/no/such/images"], "data.source=/no/such/images"),
        (["data=lsun_bedroom"], "needs data.source"),
        (["data.format=gif", "data.source=/tmp"], "data.format='gif' is not valid"),
        (["num_tasks=2", "task_index=2", "data.source=/tmp"], "task_index=2 num_tasks=2"),
    ],
)
def test_prepare_rejects_bad_input_in_one_line_with_status_2(args, message, tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, str(REPO / "launch" / "prepare.py"), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_train_names_a_damaged_shard_before_starting(tmp_path):
    from hpcgen.config import DataConfig
    from hpcgen.data.shards import prepare

    root = tmp_path / "shards"
    prepare(
        DataConfig(root=str(root), resolution=8, num_samples=20, samples_per_shard=10),
        log=lambda *_: None,
    )
    (root / "shard-000001.tar").write_bytes(b"")
    result = run_train(
        ["experiment=smoke", "data.resolution=8", "data.num_samples=20", f"data.root={root}"],
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    assert "shard-000001.tar is missing or has the wrong size" in result.stderr


def test_a_job_that_fails_on_the_node_names_its_number_and_overrides(tmp_path):
    # fp16 needs a GPU: found where the job runs, after preflight
    result = run_train(
        ["-m", "model=gan", "experiment=smoke", "deepspeed.precision=fp16",
         f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        "hpcgen: error: job 0 (model=gan experiment=smoke deepspeed.precision=fp16): "
        "deepspeed.precision=fp16 needs a GPU" in result.stderr
    )


def test_the_readme_setup_override_composes_and_keeps_the_kill_on_bad_exit_line():
    import re

    readme = (REPO / "README.md").read_text()
    override = re.search(r"`'(hydra\.launcher\.setup=\[.*?\])'`", readme, re.S).group(1)
    setup = list(compose_train(["hydra/launcher=slurm", override]).hydra.launcher.setup)
    assert setup == ["export SLURM_KILL_BAD_EXIT=1", "module load cuda/12.4"]
    assert list(compose_train(["hydra/launcher=slurm"]).hydra.launcher.setup) == setup[:1]
