"""Which t each training example gets: uniform, or Improved DDPM's loss-aware importance
sampling, whose history is training state (checkpointed, identical on every rank)."""

from __future__ import annotations

from typing import Any

import torch


# Improved DDPM, sec. 3.3 eq. 18: p_t proportional to sqrt(E[L_t^2]), from the last 10 L_t of
# each t, uniform until every t has 10; the loss is weighted by 1 / (T p_t) to stay unbiased
class LossAwareSampler:
    def __init__(self, T: int, history: int = 10, uniform_prob: float = 0.001) -> None:  # noqa: N803
        self.T, self.history_len, self.uniform_prob = T, history, uniform_prob
        self.history = torch.zeros(T, history, dtype=torch.float64)
        self.counts = torch.zeros(T, dtype=torch.long)

    @property
    def warm(self) -> bool:
        return bool((self.counts == self.history_len).all())

    def probabilities(self) -> torch.Tensor:
        if not self.warm:
            return torch.full((self.T,), 1.0 / self.T, dtype=torch.float64)
        w = self.history.square().mean(dim=1).sqrt()
        p = w / w.sum()
        return p * (1 - self.uniform_prob) + self.uniform_prob / self.T

    def sample(
        self, batch: int, generator: torch.Generator, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, weights), both (batch,), on the generator's device."""
        p = self.probabilities().to(device)
        t = torch.multinomial(p, batch, replacement=True, generator=generator)
        return t, (1.0 / (self.T * p[t])).float()

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record per-example losses; give every rank the same (gathered) t and losses."""
        for ti, li in zip(t.tolist(), losses.detach().double().cpu().tolist(), strict=True):
            if self.counts[ti] == self.history_len:
                self.history[ti, :-1] = self.history[ti, 1:].clone()
                self.history[ti, -1] = li
            else:
                self.history[ti, self.counts[ti]] = li
                self.counts[ti] += 1

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history, self.counts = state["history"].clone(), state["counts"].clone()
