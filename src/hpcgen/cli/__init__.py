"""The bodies of the launch/ entry points, their preflight and the Hydra callbacks: with
engine/ the only code that touches Hydra. One module per launch/ script."""
