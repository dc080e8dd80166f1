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


class SelfAttention(nn.Module):
    """Bidirectional multi-head self-attention; ``keys_B11L`` (True = attend) hides padded keys when given."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.dropout = dropout

    def forward(self, x_BLC: torch.Tensor, keys_B11L: torch.Tensor | None = None) -> torch.Tensor:
        B, L, C = x_BLC.shape
        q, k, v = self.qkv(x_BLC).view(B, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = shard.attention(q, k, v, attn_mask=keys_B11L, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))  # (B, L, C)


class EncoderBlock(nn.Module):
    """Pre-norm bidirectional transformer block: x + attn(ln(x)), then x + mlp(ln(x)) (MaskGIT, text encoder)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, norm_eps: float, dropout: float = 0.0):
        super().__init__()
        hidden = round(width * mlp_ratio)
        self.ln1 = nn.LayerNorm(width, eps=norm_eps)
        self.attn = SelfAttention(width, heads, dropout)
        self.ln2 = nn.LayerNorm(width, eps=norm_eps)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.drop = shard.Dropout(dropout)

    def forward(self, x_BLC: torch.Tensor, keys_B11L: torch.Tensor | None = None) -> torch.Tensor:
        x_BLC = x_BLC + self.drop(self.attn(self.ln1(x_BLC), keys_B11L))
        return x_BLC + self.drop(self.mlp(self.ln2(x_BLC)))
