"""Exponential moving average of a model's weights (float copies of every parameter and buffer)."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """``ema <- d ema + (1 - d) w`` with ``d = min(decay, (1 + step) / (10 + step))``.

    The warm-up of ``d`` keeps early averages from being dominated by the random init,
    which matters for the short runs of tiny models. Buffers (e.g. codebook usage counts)
    are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        params = dict(model.named_parameters())
        for k, v in model.state_dict().items():
            if k in params and v.is_floating_point():
                self.state[k].lerp_(v.detach(), 1 - d)
            else:
                self.state[k].copy_(v)
