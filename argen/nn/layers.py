"""Small layers shared by several families."""

from __future__ import annotations

import torch
from torch import nn

from argen.nn import shard


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability p (training only)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = (shard.rand(x.shape[0], *(1,) * (x.ndim - 1), device=x.device) >= self.p).to(x.dtype)
        return x * keep / (1 - self.p)
