"""trainer.*, deepspeed.*, logger.*, eval.*: how a training job runs, whichever the model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hpcgen.config.checks import ConfigError, check_choice, check_positive
from hpcgen.engine.choices import LR_SCHEDULES, OPTIMIZERS, PRECISIONS, ZERO_STAGES


@dataclass
class TrainerConfig:
    """The loop's schedule, in steps (one step = one optimizer update of every network)."""

    max_steps: int = 300
    batch_per_gpu: int = 16
    global_batch: int | None = None  # when set, batch_per_gpu is derived from the ranks
    log_every_steps: int = 25
    ckpt_every_steps: int = 100
    sample_every_steps: int = 100
    keep_last_ckpts: int = 3
    ckpt_milestone_every_steps: int = 0  # also keep every M-th step for evaluation (0: none)
    # ranks agree on a scheduler signal (SIGUSR2/SIGTERM) this often: one all-reduce
    preempt_check_every_steps: int = 1
    # checkpoints exist but none verifies: stop (false), or start over (true)
    allow_fresh_start_on_corrupt: bool = False
    # rank 0 renews <run>/.lease.json this often (a second launch into the run is refused); a
    # holder elsewhere counts as dead after 4 missed renewals
    lease_heartbeat_s: float = 30.0
    # a rank silent this long (SIGSTOP, a wedged host, a cut link) ends the job, named, instead
    # of holding every node in torch's 30-minute collective timeout
    peer_timeout_s: float = 300.0
    # torch.compile the networks (inductor) for training and sampling; the first steps compile
    # (minutes for a large U-Net), then run faster. Penalties that differentiate twice (R1,
    # WGAN-GP, path length) run their forward uncompiled
    compile: bool = False

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_per_gpu", "log_every_steps", "ckpt_every_steps"):
            check_positive(f"trainer.{name}", getattr(self, name))
        check_positive("trainer.sample_every_steps", self.sample_every_steps)
        check_positive("trainer.keep_last_ckpts", self.keep_last_ckpts)
        check_positive(
            "trainer.ckpt_milestone_every_steps", self.ckpt_milestone_every_steps, allow_zero=True
        )
        check_positive("trainer.preempt_check_every_steps", self.preempt_check_every_steps)
        check_positive("trainer.lease_heartbeat_s", self.lease_heartbeat_s)
        check_positive("trainer.peer_timeout_s", self.peer_timeout_s)
        if self.global_batch is not None:
            check_positive("trainer.global_batch", self.global_batch)

    def resolve_batch(self, world_size: int, grad_accum_steps: int) -> int:
        """batch_per_gpu x grad_accum_steps x world_size = global batch; sets batch_per_gpu."""
        if self.global_batch is not None:
            per_step = world_size * grad_accum_steps
            if self.global_batch % per_step:
                raise ConfigError(
                    f"trainer.global_batch={self.global_batch} does not divide over {world_size} "
                    f"rank(s) x {grad_accum_steps} accumulation step(s): use a multiple of "
                    f"{per_step}, or set trainer.batch_per_gpu instead"
                )
            self.batch_per_gpu = self.global_batch // per_step
        return self.batch_per_gpu


@dataclass
class DeepSpeedConfig:
    """The parts of a DeepSpeed config that hpcgen exposes; engine/ builds the JSON."""

    zero_stage: int = 2  # deepspeed=zero1|zero2|zero3 set it
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 needs a GPU)
    grad_accum_steps: int = 1
    grad_clip: float = 0.0  # 0 disables clipping
    optimizer: str = "adamw"  # adamw | adam (torch's; the models' betas and weight decay)
    warmup_steps: int = 0  # linear learning-rate warm-up over this many optimizer steps
    lr_schedule: str = "constant"  # constant | cosine (half-cosine after the warm-up)
    min_lr_ratio: float = 0.0  # cosine: the learning rate at the end, as a fraction of the peak
    decay_steps: int | None = None  # cosine: reaches min_lr_ratio here (default trainer.max_steps)
    # one rank shards nothing: a fresh run there takes DeepSpeed's stage 0 (no flat partitions,
    # no gradient all-reduce; logged) whatever zero_stage says; a resume keeps its checkpoint's
    # stage. false: always zero_stage (e.g. to test ZeRO itself on one rank)
    unsharded_at_one_rank: bool = True

    def __post_init__(self) -> None:
        check_choice("deepspeed.zero_stage", self.zero_stage, ZERO_STAGES)
        check_choice("deepspeed.optimizer", self.optimizer, OPTIMIZERS)
        check_positive("deepspeed.warmup_steps", self.warmup_steps, allow_zero=True)
        check_choice("deepspeed.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(
                f"deepspeed.min_lr_ratio={self.min_lr_ratio} must be in [0, 1] "
                "(the final learning rate as a fraction of the peak, e.g. 0.1)"
            )
        if self.decay_steps is not None and self.decay_steps <= self.warmup_steps:
            raise ConfigError(
                f"deepspeed.decay_steps={self.decay_steps} must exceed deepspeed.warmup_steps="
                f"{self.warmup_steps}: the cosine decay starts after the warm-up"
            )
        check_choice("deepspeed.precision", self.precision, PRECISIONS)
        check_positive("deepspeed.grad_accum_steps", self.grad_accum_steps)
        check_positive("deepspeed.grad_clip", self.grad_clip, allow_zero=True)


@dataclass
class LoggerConfig:
    """Where rank 0 reports besides metrics.jsonl and the console."""

    tensorboard: bool = False  # scalars and sample grids under <run>/tensorboard (--logdir)


@dataclass
class EvalDuringTrainingConfig:
    """Evaluation while the run trains (engine/eval_queue.py): each milestone checkpoint, and
    the run's last one, is evaluated as its own job when it commits; training never waits.
    README: "Evaluation while training runs"."""

    during_training: bool = False
    partition: str | None = None  # SLURM: where the evaluation jobs run (null: the default)
    gpus: int = 0  # SLURM: GPUs per evaluation job
    cpus_per_task: int = 4
    mem_gb: int | None = None
    time_min: int = 240
    sbatch_args: list[str] = field(default_factory=list)  # e.g. [--account=x, --qos=y]
    # eval.* of configs/evaluate.yaml for these evaluations, e.g. {num_samples: 10000} (null:
    # evaluate.yaml's own): a mapping or null, checked below. Any, not dict[str, Any] | None, for
    # OmegaConf 2.3: it cannot merge an override's mapping into a typed Optional[Dict] that is null
    settings: Any = None

    def __post_init__(self) -> None:
        check_positive("eval.gpus", self.gpus, allow_zero=True)
        check_positive("eval.cpus_per_task", self.cpus_per_task)
        check_positive("eval.time_min", self.time_min)
        if self.mem_gb is not None:
            check_positive("eval.mem_gb", self.mem_gb)
        self.settings = {} if self.settings is None else self.settings
        if not isinstance(self.settings, dict):
            raise ConfigError(
                f"eval.settings={self.settings!r} must be a mapping of configs/evaluate.yaml's "
                "eval fields, e.g. 'eval.settings={num_samples:10000,extractor:inception}'"
            )
