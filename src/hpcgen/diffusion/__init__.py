"""Diffusion maths: pure tensor functions (no I/O, no DeepSpeed)."""
