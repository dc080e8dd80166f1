"""Convolutional encoder / decoder shared by every tokenizer (LDM / taming layout).

Parameter names follow the LDM autoencoder used by VAR, MAR and LlamaGen
(``conv_in``, ``down.{i}.block.{j}``, ``mid.attn_1``, ``up.{i}.upsample``, ...),
so official VQVAE weights map onto these modules by renaming alone. Tiny
presets use the same code with few channels and no attention.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from argen.nn import shard


def _norm(ch: int, groups: int) -> nn.GroupNorm:
    # gcd: the largest group count <= groups that divides ch (= groups for the official 32-multiples)
    return nn.GroupNorm(math.gcd(groups, ch), ch, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = _norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = _norm(cout, groups)
        self.dropout = shard.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x_BCHW)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x_BCHW) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over pixels; one fused 1x1 ``qkv`` conv as in VAR's VQVAE."""

    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.norm = _norm(ch, groups)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x_BCHW.shape
        q, k, v = self.qkv(self.norm(x_BCHW)).reshape(B, 3, C, H * W).transpose(-1, -2).unbind(1)  # (B, HW, C) each
        h = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)
        return x_BCHW + self.proj_out(h.transpose(1, 2).reshape(B, C, H, W))


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad, as LDM: keeps H/2 exactly


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: ``block`` (ResnetBlocks), ``attn`` (AttnBlocks) and a resampler."""

    def __init__(self, cin, cout, n_blocks, groups, dropout, use_attn):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(cin if i == 0 else cout, cout, groups, dropout) for i in range(n_blocks))
        self.attn = nn.ModuleList(AttnBlock(cout, groups) for _ in range(n_blocks)) if use_attn else nn.ModuleList()

    def run(self, h: torch.Tensor) -> torch.Tensor:
        for i, blk in enumerate(self.block):
            h = blk(h)
            if len(self.attn):
                h = self.attn[i](h)
        return h


class _Mid(nn.Module):
    def __init__(self, ch, groups, dropout, use_attn):
        super().__init__()
        self.block_1 = ResnetBlock(ch, ch, groups, dropout)
        self.attn_1 = AttnBlock(ch, groups) if use_attn else nn.Identity()
        self.block_2 = ResnetBlock(ch, ch, groups, dropout)

    def forward(self, h):
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    """(B, in_ch, H, W) -> (B, z_ch, H / 2^(len(ch_mult)-1), W / ...)."""

    def __init__(self, *, in_ch: int, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, z_ch: int,
                 groups: int = 32, dropout: float = 0.0, attn_lowest: bool = True):
        super().__init__()
        self.conv_in = nn.Conv2d(in_ch, ch, 3, padding=1)
        self.down = nn.ModuleList()
        cin = ch
        last = len(ch_mult) - 1
        for i, m in enumerate(ch_mult):
            lvl = _Level(cin, ch * m, num_res_blocks, groups, dropout, attn_lowest and i == last)
            if i != last:
                lvl.downsample = Downsample(ch * m)
            self.down.append(lvl)
            cin = ch * m
        self.mid = _Mid(cin, groups, dropout, attn_lowest)
        self.norm_out = _norm(cin, groups)
        self.conv_out = nn.Conv2d(cin, z_ch, 3, padding=1)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x_BCHW)
        for lvl in self.down:
            h = lvl.run(h)
            if hasattr(lvl, "downsample"):
                h = lvl.downsample(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    """(B, z_ch, h, w) -> (B, out_ch, h * 2^(len(ch_mult)-1), ...); ``up`` is indexed like LDM (0 = finest).

    ``attn_lowest`` puts attention in the middle block and after every res block of the lowest
    level; ``level_attn=False`` keeps the middle one only (the decoder of MAR's KL-16).
    """

    def __init__(self, *, out_ch: int, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, z_ch: int,
                 groups: int = 32, dropout: float = 0.0, attn_lowest: bool = True, level_attn: bool = True):
        super().__init__()
        last = len(ch_mult) - 1
        cin = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_ch, cin, 3, padding=1)
        self.mid = _Mid(cin, groups, dropout, attn_lowest)
        up = [None] * len(ch_mult)
        for i in reversed(range(len(ch_mult))):
            use_attn = attn_lowest and level_attn and i == last
            lvl = _Level(cin, ch * ch_mult[i], num_res_blocks + 1, groups, dropout, use_attn)
            if i != 0:
                lvl.upsample = Upsample(ch * ch_mult[i])
            up[i] = lvl
            cin = ch * ch_mult[i]
        self.up = nn.ModuleList(up)
        self.norm_out = _norm(cin, groups)
        self.conv_out = nn.Conv2d(cin, out_ch, 3, padding=1)

    def forward(self, z_BCHW: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z_BCHW))
        for lvl in reversed(self.up):
            h = lvl.run(h)
            if hasattr(lvl, "upsample"):
                h = lvl.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))
