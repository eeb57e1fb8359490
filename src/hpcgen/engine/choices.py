"""The names of engine/'s options that config/ checks, kept free of torch so that
`import hpcgen.config` stays light: deepspeed_engine.py and tasks.py implement them from these.

A leaf: it imports nothing of hpcgen, so config/ (which engine/ imports) may import it.
"""

ZERO_STAGES = (0, 1, 2, 3)  # DeepSpeed's; configs/deepspeed/zero1|2|3.yaml, 0 is what one rank runs
# deepspeed.precision -> the torch dtype the engine computes in (deepspeed_engine.compute_dtype)
PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# deepspeed.optimizer -> its torch.optim class (deepspeed_engine.make_engine)
OPTIMIZERS = {"adamw": "AdamW", "adam": "Adam"}
LR_SCHEDULES = ("constant", "cosine")  # after the warm-up (deepspeed_engine.lr_factor)
# model.timestep_sampler: uniform, or Improved DDPM's importance sampling (tasks.DDPMTask)
TIMESTEP_SAMPLERS = ("uniform", "loss_aware")
