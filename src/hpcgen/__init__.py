"""hpcgen: DDPM and GAN training as SLURM batch jobs."""

from pathlib import Path

__version__ = "0.1.0"
# the checkout is the install (pip install -e .): configs/, launch/ and slurm/ sit beside src/
CHECKOUT = Path(__file__).resolve().parents[2]
