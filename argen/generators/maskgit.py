"""MaskGIT: masked generative image transformer (Chang et al. 2022; MUSE, Meissonic follow it).

A bidirectional transformer sees a token map in which some tokens are replaced by a
[MASK] token and predicts every position's token. Sequence layout::

    [ class token | h*w image tokens (some = MASK) ]   N + 1 positions, learned position embeddings

Training masks a random fraction ``gamma(u)``, ``u ~ U(0, 1)``, of each image's tokens
(``mask_schedule``, cosine by default) and takes the cross-entropy on the masked
positions only: the visible tokens are inputs, not targets. Sampling
(``argen.sampling.masked``) starts from an all-[MASK] map and commits the most
confident predictions over a few parallel steps.

Token ids 0..V-1 are codebook entries and id V is [MASK]; the head predicts only the
V real tokens, so a sample can never contain the mask id. Class id ``num_classes`` is
the null class for classifier-free guidance (class dropout in training).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from argen.config import Config, check
from argen.generators.base import Generator
from argen.generators.conditions import text_conditioner
from argen.nn import shard
from argen.nn.layers import EncoderBlock
from argen.registry import register_model
from argen.schedulers.masking import MASK_SCHEDULES, get_schedule


@dataclass(frozen=True)
class MaskGITConfig(Config):
    ADDED: ClassVar[dict[str, Any]] = {"text": None}  # configs saved before text conditioning: classes
    RENAMED: ClassVar[dict[str, str]] = {"dim": "width", "num_heads": "heads", "class_dropout_prob": "label_drop"}

    vocab_size: int = 1024                 # codebook size V; id V is the [MASK] token
    grid: tuple[int, int] = (16, 16)       # token map (h, w)
    num_classes: int = 1000                # class id num_classes is the null (unconditional) class
    width: int = 768
    depth: int = 24
    heads: int = 16
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    label_drop: float = 0.1                # label dropout for classifier-free guidance
    text: dict | None = None               # text encoder config (argen.text): captions instead of classes
    label_smoothing: float = 0.1           # as the MaskGIT recipe
    norm_eps: float = 1e-6
    mask_schedule: str = "cosine"          # training mask-ratio distribution: ratio = gamma(u), u ~ U(0, 1)

    def __post_init__(self):
        super().__post_init__()
        for name in ("vocab_size", "num_classes", "width", "depth", "heads"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        check(len(self.grid) == 2 and min(self.grid) >= 1, f"grid must be two positive ints (h, w), got {self.grid}")
        check(self.width % self.heads == 0, f"width {self.width} must be divisible by heads {self.heads}")
        check(self.mlp_ratio > 0, f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        check(0.0 <= self.label_drop < 1.0, f"label_drop must be in [0, 1), got {self.label_drop}")
        check(0.0 <= self.label_smoothing < 1.0, f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        check(self.mask_schedule in MASK_SCHEDULES,
              f"mask_schedule must be one of {', '.join(MASK_SCHEDULES)}, got {self.mask_schedule!r}")

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]


@register_model
class MaskGIT(Generator):
    config_class = MaskGITConfig
    family = "maskgit"
    consumes = "discrete"
    counted: ClassVar[dict[str, str]] = {"forward_calls": "blocks.0"}

    def __init__(self, config: MaskGITConfig):
        super().__init__()
        self.config = c = config
        self.mask_token_id = c.vocab_size
        self.tok_emb = nn.Embedding(c.vocab_size + 1, c.width)     # + 1: the [MASK] token
        # The condition leads the sequence: one class vector, or the projected caption tokens (MUSE-style
        # prefix; attention is bidirectional, so every image token reads every caption token).
        self.text = text_conditioner(c.text, c.width)
        self.class_emb = nn.Embedding(c.num_classes + 1, c.width) if self.text is None else None  # + 1: null
        self.prefix = 1 if self.text is None else self.text.max_tokens
        self.pos_emb = nn.Parameter(torch.zeros(1, self.prefix + c.num_tokens, c.width))
        self.drop = shard.Dropout(c.dropout)
        self.blocks = nn.ModuleList(EncoderBlock(c.width, c.heads, c.mlp_ratio, c.norm_eps, c.dropout) for _ in range(c.depth))
        self.ln_f = nn.LayerNorm(c.width, eps=c.norm_eps)
        self.head = nn.Linear(c.width, c.vocab_size)               # never predicts the mask id
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # BERT/GPT-2 init: N(0, 0.02) everywhere, residual output projections scaled by 1/sqrt(2 depth)
        # so that the residual stream does not grow with depth.
        encoder = set(self.text.encoder.modules()) if self.text is not None else set()  # it has its own init
        for m in self.modules():
            if m in encoder:
                continue
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.zero_()
        nn.init.trunc_normal_(self.pos_emb, std=0.02)
        for b in self.blocks:
            b.attn.proj.weight.div_(math.sqrt(2 * self.config.depth))
            b.mlp[-1].weight.div_(math.sqrt(2 * self.config.depth))

    def forward(self, idx_BN: torch.Tensor, labels_B: torch.Tensor) -> torch.Tensor:
        """Token ids (B, N), ``vocab_size`` = [MASK], and condition ids (B,) -> logits (B, N, vocab_size)."""
        cond_BPC = self.text(labels_B).tokens_BLC if self.text is not None else self.class_emb(labels_B)[:, None]
        x_BLC = torch.cat([cond_BPC, self.tok_emb(idx_BN)], 1) + self.pos_emb
        x_BLC = self.drop(x_BLC)
        for block in self.blocks:
            x_BLC = block(x_BLC)
        return self.head(self.ln_f(x_BLC[:, self.prefix:]))  # the condition positions predict nothing

    # ---- training ---------------------------------------------------------------------------------
    @staticmethod
    def tokens_from_images(tokenizer, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """What training needs from a frozen single-scale tokenizer: the flattened token map (B, h*w)."""
        return {"idx_BN": tokenizer.encode(images).flatten(1)}

    def draw_mask(self, B: int, N: int, device: torch.device | str) -> torch.Tensor:
        """Training mask bool, per image ceil(gamma(u) * N) random positions, at least one; drawn for the
        whole global batch of which ``B`` rows are this shard's (``shard.local`` keeps them), so that
        the loss can divide by the global number of masked tokens."""
        ratio_B = get_schedule(self.config.mask_schedule)(shard.rand(B, device=device, whole=True))
        n_mask_B = torch.ceil(ratio_B * N).long().clamp(1, N)
        # A uniformly random subset of size n: the n positions with the smallest random scores.
        rank_BN = shard.rand(B, N, device=device, whole=True).argsort(-1).argsort(-1)
        return rank_BN < n_mask_B[:, None]

    def loss(self, tokens: dict[str, torch.Tensor], labels_B: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        idx_BN = tokens["idx_BN"]
        mask_all = self.draw_mask(*idx_BN.shape, idx_BN.device)
        mask_BN = shard.local(mask_all)
        labels_B = self.drop_labels(labels_B)
        logits_BNV = self(idx_BN.masked_fill(mask_BN, self.mask_token_id), labels_B)
        # Visible tokens are copied from the input; only the masked ones are something to learn.
        logits_MV, target_M = logits_BNV[mask_BN].float(), idx_BN[mask_BN]
        ce_sum = F.cross_entropy(logits_MV, target_M, label_smoothing=c.label_smoothing, reduction="sum")
        loss = shard.mean(ce_sum, mask_all.sum())
        with torch.no_grad():
            acc = (logits_MV.argmax(-1) == target_M).float().mean()
            nll = F.cross_entropy(logits_MV, target_M) if c.label_smoothing > 0 else loss.detach()
        return loss, {"ce": float(nll), "acc_masked": float(acc), "mask_ratio": float(mask_BN.float().mean())}
