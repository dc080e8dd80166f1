"""VAR: visual autoregressive modelling by next-scale prediction (Tian et al. 2024).

A class-conditional transformer predicts the whole token map of scale k+1 from
the token maps of scales 1..k. Sequence layout for scales (pn_1, ..., pn_K)::

    [ sos (pn_1^2 tokens) | scale-2 inputs (pn_2^2) | ... | scale-K inputs (pn_K^2) ]   L = sum pn_k^2

A token attends to every token of its own and earlier scales (block-causal).
The architecture and parameter names follow the official code
(FoundationVision/VAR ``models/var.py``) so that its checkpoints load by a key
map alone: AdaLN blocks whose ``ada_lin`` output splits as (gamma1, gamma2,
scale1, scale2, shift1, shift2), l2-normalised q/k with a learned per-head
scale ``scale_mul_1H11``, ``mat_qkv`` without bias plus ``q_bias``/``v_bias``.

The model knows nothing of sampling; ``argen.sampling.next_scale`` drives it
through ``cond_embed``, ``first_input``, ``embed_input`` and ``trunk``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from argen.config import Config, check
from argen.errors import ArgenError
from argen.generators.base import Generator
from argen.generators.conditions import text_conditioner
from argen.nn import shard
from argen.nn.kv_cache import KVCache
from argen.nn.layers import DropPath
from argen.registry import register_model


@dataclass(frozen=True)
class VARConfig(Config):
    ADDED: ClassVar[dict[str, Any]] = {"text": None}  # configs saved before text conditioning: classes
    RENAMED: ClassVar[dict[str, str]] = {"num_heads": "heads", "cond_drop": "label_drop"}

    vocab_size: int = 4096
    token_dim: int = 32                    # width of the tokenizer's code vectors (teacher-forcing input)
    scales: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    depth: int = 16
    width: int = 1024                      # official: 64 * depth
    heads: int = 16                        # official: depth (head dim 64); official name num_heads
    mlp_ratio: float = 4.0
    num_classes: int = 1000                # class id num_classes is the null (unconditional) class
    label_drop: float = 0.1                # label dropout for classifier-free guidance (official: cond_drop_rate)
    text: dict | None = None               # text encoder config (argen.text): captions instead of classes
    drop_path: float = 0.0667              # official: 0.1 * depth / 24, linear over blocks
    dropout: float = 0.0
    attn_l2_norm: bool = True
    norm_eps: float = 1e-6
    aln_init: float = 0.5                  # AdaLN scale/shift weight init multiplier
    aln_gamma_init: float = 1e-3           # AdaLN gamma weight init multiplier (1e-3 .. 1e-5 officially)
    head_init: float = 0.02

    def __post_init__(self):
        super().__post_init__()
        for name in ("vocab_size", "token_dim", "width", "heads"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        check(self.width % self.heads == 0, f"width {self.width} must be divisible by heads {self.heads}")
        check(len(self.scales) >= 1 and all(a < b for a, b in zip(self.scales, self.scales[1:])),
              f"scales must be strictly increasing, got {self.scales}")
        check(self.depth >= 1, f"depth must be >= 1, got {self.depth}")
        check(self.num_classes >= 1, f"num_classes must be >= 1, got {self.num_classes}")
        check(0.0 <= self.label_drop < 1.0, f"label_drop must be in [0, 1), got {self.label_drop}")
        check(0.0 <= self.drop_path < 1.0, f"drop_path must be in [0, 1), got {self.drop_path}")
        check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        check(self.mlp_ratio > 0, f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        check(self.norm_eps > 0, f"norm_eps must be > 0, got {self.norm_eps}")

    @property
    def seq_len(self) -> int:
        return sum(p * p for p in self.scales)

    @property
    def begin_ends(self) -> list[tuple[int, int]]:
        out, cur = [], 0
        for p in self.scales:
            out.append((cur, cur + p * p))
            cur += p * p
        return out


class SelfAttention(nn.Module):
    def __init__(self, c: VARConfig):
        super().__init__()
        C, H = c.width, c.heads
        self.num_heads, self.head_dim = H, C // H
        self.l2_norm = c.attn_l2_norm
        self.mat_qkv = nn.Linear(C, 3 * C, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(C))
        self.v_bias = nn.Parameter(torch.zeros(C))
        self.register_buffer("zero_k_bias", torch.zeros(C), persistent=False)
        if self.l2_norm:
            # Learned temperature on cosine attention, init 4, capped at 100 (as VAR).
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, H, 1, 1), 4.0).log())
            self.max_scale_mul = math.log(100)
        self.proj = nn.Linear(C, C)

    def forward(self, x_BLC: torch.Tensor, mask: torch.Tensor | None, start: int = 0,
                cache: KVCache | None = None) -> torch.Tensor:
        B, L, C = x_BLC.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x_BLC, self.mat_qkv.weight, bias).view(B, L, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, L, hd) each
        scale = None
        if self.l2_norm:
            q = F.normalize(q, dim=-1) * self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp()
            k = F.normalize(k, dim=-1)
            scale = 1.0
        if cache is not None:
            k, v = cache.update(start, k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))


class FFN(nn.Module):
    def __init__(self, c: VARConfig):
        super().__init__()
        hidden = round(c.width * c.mlp_ratio)
        self.fc1 = nn.Linear(c.width, hidden)
        self.fc2 = nn.Linear(hidden, c.width)
        self.drop = shard.Dropout(c.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(F.gelu(self.fc1(x), approximate="tanh")))


class CrossAttention(nn.Module):
    """Image tokens read the caption (Infinity, STAR): queries from x, keys and values from the caption
    tokens, padding masked out."""

    def __init__(self, c: VARConfig):
        super().__init__()
        self.num_heads, self.head_dim = c.heads, c.width // c.heads
        self.q = nn.Linear(c.width, c.width)
        self.kv = nn.Linear(c.width, 2 * c.width)
        self.proj = nn.Linear(c.width, c.width)

    def forward(self, x_BLC: torch.Tensor, context: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        text_BTC, mask_BT = context
        B, L, C = x_BLC.shape
        q = self.q(x_BLC).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(text_BTC).view(B, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_BT[:, None, None, :])
        return self.proj(out.transpose(1, 2).reshape(B, L, C))


class AdaLNBlock(nn.Module):
    def __init__(self, c: VARConfig, drop_path: float):
        super().__init__()
        self.width = c.width
        self.attn = SelfAttention(c)
        if getattr(c, "text", None) is not None:  # text models: self-attention, then cross-attention to the caption, then FFN
            self.ln_cross = nn.LayerNorm(c.width, eps=c.norm_eps)
            self.cross = CrossAttention(c)
        self.ffn = FFN(c)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(c.width, 6 * c.width))
        self.ln_wo_grad = nn.LayerNorm(c.width, eps=c.norm_eps, elementwise_affine=False)
        self.drop_path = DropPath(drop_path)

    def forward(self, x_BLC, cond_BC, mask, start=0, cache=None, context=None):
        # Split order as in VAR: gamma1, gamma2, scale1, scale2, shift1, shift2.
        g1, g2, s1, s2, b1, b2 = self.ada_lin(cond_BC).view(-1, 1, 6, self.width).unbind(2)
        h = self.attn(self.ln_wo_grad(x_BLC) * (1 + s1) + b1, mask, start, cache)
        x_BLC = x_BLC + self.drop_path(h * g1)
        if context is not None:
            x_BLC = x_BLC + self.drop_path(self.cross(self.ln_cross(x_BLC), context))
        h = self.ffn(self.ln_wo_grad(x_BLC) * (1 + s2) + b2)
        return x_BLC + self.drop_path(h * g2)


class AdaLNBeforeHead(nn.Module):
    def __init__(self, c: VARConfig):
        super().__init__()
        self.width = c.width
        self.ln_wo_grad = nn.LayerNorm(c.width, eps=c.norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(c.width, 2 * c.width))

    def forward(self, x_BLC, cond_BC):
        scale, shift = self.ada_lin(cond_BC).view(-1, 1, 2, self.width).unbind(2)
        return self.ln_wo_grad(x_BLC) * (1 + scale) + shift


@torch.no_grad()
def init_adaln(blocks: nn.ModuleList, head_nm: AdaLNBeforeHead, c) -> None:
    """VAR's scaling of freshly initialised AdaLN blocks: residual projections / sqrt(2 depth), AdaLN
    scales and shifts x aln_init, gates x aln_gamma_init (near-identity blocks), zero q / v biases,
    attention temperature 4. ``c``: a config with VAR's fields (VAR, HMAR, xAR)."""
    C = c.width
    head_nm.ada_lin[-1].weight.mul_(c.aln_init)
    for b in blocks:
        b.attn.proj.weight.div_(math.sqrt(2 * c.depth))
        if hasattr(b, "cross"):
            b.cross.proj.weight.div_(math.sqrt(2 * c.depth))
        b.ffn.fc2.weight.div_(math.sqrt(2 * c.depth))
        b.ada_lin[-1].weight[2 * C:].mul_(c.aln_init)
        b.ada_lin[-1].weight[:2 * C].mul_(c.aln_gamma_init)
        b.attn.q_bias.zero_()
        b.attn.v_bias.zero_()
        if c.attn_l2_norm:
            b.attn.scale_mul_1H11.fill_(math.log(4.0))


@register_model
class VAR(Generator):
    config_class = VARConfig
    family = "var"
    consumes = "multiscale"
    likelihood = True  # loss: exact cross-entropy of every scale given the coarser ones
    counted: ClassVar[dict[str, str]] = {"forward_calls": "blocks.0"}

    def __init__(self, config: VARConfig):
        super().__init__()
        self.config = c = config
        C, L, first_l = c.width, c.seq_len, c.scales[0] ** 2
        self.first_l = first_l
        self.word_embed = nn.Linear(c.token_dim, C)
        # Captions: the pooled caption where VAR puts the class vector (start tokens, AdaLN), and the
        # caption tokens for every block's cross-attention (Infinity, STAR).
        self.text = text_conditioner(c.text, C, pooled=True)
        self.class_emb = nn.Embedding(c.num_classes + 1, C) if self.text is None else None
        self._context: tuple[torch.Tensor, torch.Tensor] | None = None  # caption of the last cond_embed call
        self.pos_start = nn.Parameter(torch.empty(1, first_l, C))
        self.pos_1LC = nn.Parameter(torch.empty(1, L, C))
        self.lvl_embed = nn.Embedding(len(c.scales), C)
        dpr = [c.drop_path * i / max(c.depth - 1, 1) for i in range(c.depth)]
        self.blocks = nn.ModuleList(AdaLNBlock(c, dpr[i]) for i in range(c.depth))
        self.head_nm = AdaLNBeforeHead(c)
        self.head = nn.Linear(C, c.vocab_size)

        lvl = torch.cat([torch.full((p * p,), i) for i, p in enumerate(c.scales)])
        self.register_buffer("lvl_1L", lvl.view(1, L), persistent=False)
        # Block-causal additive mask: a token sees its own and all earlier scales.
        mask = torch.where(lvl.view(L, 1) >= lvl.view(1, L), 0.0, float("-inf"))
        self.register_buffer("attn_bias_for_masking", mask.view(1, 1, L, L), persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        c, C = self.config, self.config.width
        std = math.sqrt(1 / C / 3)
        encoder = set(self.text.encoder.modules()) if self.text is not None else set()  # it has its own init
        for m in self.modules():
            if m in encoder:
                continue
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=std)
        nn.init.trunc_normal_(self.pos_start, std=std)
        nn.init.trunc_normal_(self.pos_1LC, std=std)
        self.head.weight.mul_(c.head_init)
        init_adaln(self.blocks, self.head_nm, c)

    # ---- pieces the sampler calls ----------------------------------------------------------------
    def cond_embed(self, labels_B: torch.Tensor) -> torch.Tensor:
        """(B,) condition ids, ``num_classes`` = null -> (B, C): the class vector, or the pooled caption of
        a text model, whose caption tokens the following ``trunk`` calls then attend to (samplers call
        ``cond_embed`` once per batch, on the batch that ``trunk`` then runs on)."""
        if self.text is None:
            return self.class_emb(labels_B)
        caption = self.text(labels_B)
        self._context = (caption.tokens_BLC, caption.mask_BL)
        return caption.pooled_BC

    def first_input(self, cond_BC: torch.Tensor) -> torch.Tensor:
        """Input of the first scale: class embedding + start position + level/position embeddings."""
        B = cond_BC.shape[0]
        sos = cond_BC.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start
        return sos + self.lvl_embed(self.lvl_1L[:, :self.first_l]) + self.pos_1LC[:, :self.first_l]

    def embed_input(self, x_BlCv: torch.Tensor, si: int) -> torch.Tensor:
        """Teacher-forcing vectors of scale ``si`` (B, pn^2, token_dim) -> transformer input (B, pn^2, C)."""
        b, e = self.config.begin_ends[si]
        return self.word_embed(x_BlCv) + self.lvl_embed(self.lvl_1L[:, b:e]) + self.pos_1LC[:, b:e]

    def trunk(self, x_BlC: torch.Tensor, cond_BC: torch.Tensor, start: int = 0,
              caches: list[KVCache] | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Blocks + AdaLN head on tokens at positions [start, start + l): logits (B, l, V).

        With ``caches`` the tokens attend to everything cached before ``start`` (no mask is
        needed: the cache only ever holds earlier and current scales)."""
        context = self._context if self.text is not None else None
        if context is not None and context[0].shape[0] != x_BlC.shape[0]:
            raise ArgenError("trunk: call cond_embed on this batch's condition ids first (its captions)")
        for i, block in enumerate(self.blocks):
            x_BlC = block(x_BlC, cond_BC, mask, start, caches[i] if caches is not None else None, context)
        return self.head(self.head_nm(x_BlC, cond_BC))

    def new_caches(self, batch: int, dtype: torch.dtype | None = None, device=None) -> list[KVCache]:
        c = self.config
        p = self.pos_1LC
        return [KVCache(batch, c.heads, c.seq_len, c.width // c.heads, dtype or p.dtype, device or p.device)
                for _ in range(c.depth)]

    # ---- training ---------------------------------------------------------------------------------
    def forward(self, labels_B: torch.Tensor, x_BLCv_wo_first_l: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits for all L tokens: (B, L, V). Labels equal to num_classes are unconditional."""
        cond = self.cond_embed(labels_B)
        L = self.config.seq_len
        return self.trunk(self.teacher_inputs(cond, x_BLCv_wo_first_l), cond,
                          mask=self.attn_bias_for_masking[:, :, :L, :L])

    def teacher_inputs(self, cond_BC: torch.Tensor, x_BLCv_wo_first_l: torch.Tensor) -> torch.Tensor:
        """The transformer input (B, L, C) of every scale at once: scale 0's start tokens, then the
        tokenizer's teacher-forcing vectors of scales 1..K-1 (``tokens_from_images``) embedded."""
        return torch.cat([self.first_input(cond_BC),
                          self.word_embed(x_BLCv_wo_first_l) + self.lvl_embed(self.lvl_1L[:, self.first_l:])
                          + self.pos_1LC[:, self.first_l:]], 1)

    @staticmethod
    def tokens_from_images(tokenizer, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """What training needs from a frozen multi-scale tokenizer: targets and teacher-forcing inputs."""
        idx_list = tokenizer.encode_scales(images)
        return {"target_BL": torch.cat([i.flatten(1) for i in idx_list], 1),
                "x_BLCv_wo_first_l": tokenizer.teacher_forcing_input(idx_list)}

    def loss(self, tokens: dict[str, torch.Tensor], labels_B: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        labels_B = self.drop_labels(labels_B)
        logits = self(labels_B, tokens["x_BLCv_wo_first_l"])
        target = tokens["target_BL"]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), target.flatten())
        b, e = self.config.begin_ends[-1]
        with torch.no_grad():
            acc_last = (logits[:, b:e].argmax(-1) == target[:, b:e]).float().mean()
        return loss, {"ce": float(loss.detach()), "acc_last_scale": float(acc_last)}
