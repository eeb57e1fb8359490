"""Diffusion maths: pure tensor functions (no I/O, no DeepSpeed) in gaussian.py and
timesteps.py; figures.py draws them into PNGs (the one module here that writes files)."""
