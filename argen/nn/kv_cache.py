"""A static, preallocated KV cache (gpt-fast style).

Buffers have a fixed shape (B, H, L_max, D) for the whole sampling run, so no
tensor changes size while decoding: the cache suits ``torch.compile`` and CUDA
graphs, and nothing is re-allocated per step. Writes go to ``[start, start + l)``;
reads return the filled prefix ``[:start + l]``. ``start`` is a Python int that is
fixed per decoding step (per token, or per scale for VAR).
"""

from __future__ import annotations

import torch
from torch import nn


class KVCache(nn.Module):
    def __init__(self, batch: int, heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        super().__init__()
        shape = (batch, heads, max_len, head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, start: int, k_BHlD: torch.Tensor, v_BHlD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = start + k_BHlD.shape[2]
        self.k_cache[:, :, start:end] = k_BHlD
        self.v_cache[:, :, start:end] = v_BHlD
        return self.k_cache[:, :, :end], self.v_cache[:, :, :end]
