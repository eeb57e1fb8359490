"""hpcgen: DDPM and GAN training as SLURM batch jobs."""

__version__ = "0.1.0"
