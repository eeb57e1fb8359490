"""Unrolled GAN (Metz et al. 2017): G's loss taken through K look-ahead updates of D.

The report names unrolling as a mitigation of mode collapse. G minimises the surrogate
f_K(theta_G, theta_D) = f(theta_G, theta_D^K(theta_G, theta_D)) (eq. 7), where theta_D^K follows K
gradient steps of D's loss from D's current weights (eq. 5-6). The steps run on a functional copy
of D's weights (torch.func.functional_call), so D's own weights and optimizer state are untouched,
and they keep their graph, so G's gradient includes how D would react to G's samples (eq. 8, the
term that plain alternating updates drop). The look-ahead uses plain gradient steps of size
`lr`, as Metz et al.'s eq. 6 writes them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call

Params = dict[str, torch.Tensor]


def detached_parameters(module: nn.Module) -> Params:
    """A copy of module's weights that the look-ahead may differentiate without touching them."""
    return {name: p.detach().requires_grad_(True) for name, p in module.named_parameters()}


# Metz et al. 2017, eq. 5-6: theta_D^{k+1} = theta_D^k + eta df/dtheta_D^k, kept differentiable
def lookahead(
    disc: nn.Module,
    params: Params,
    d_loss_of_logits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    steps: int,
    lr: float,
) -> Params:
    """D's weights after `steps` gradient steps on its loss (D minimises d_loss), as functions
    of `fake` (and so of G) and of `params`: (B, C, H, W) real and fake batches."""
    for _ in range(steps):
        loss = d_loss_of_logits(
            functional_call(disc, params, (real,)), functional_call(disc, params, (fake,))
        )
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        params = {name: p - lr * g for (name, p), g in zip(params.items(), grads, strict=True)}
    return params


def unrolled_logits(
    disc: nn.Module,
    d_loss_of_logits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    steps: int,
    lr: float,
) -> torch.Tensor:
    """D^K(fake): the logits G's loss is taken on; steps = 0 is D(fake) itself."""
    if steps == 0:
        return disc(fake)
    params = lookahead(disc, detached_parameters(disc), d_loss_of_logits, real, fake, steps, lr)
    return functional_call(disc, params, (fake,))
