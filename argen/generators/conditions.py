"""Captions as conditions, behind the class-id interface every sampler already speaks.

Samplers and losses pass condition ids (B,) everywhere, the null id ``num_classes`` being the
unconditional row of classifier-free guidance. A class-conditional generator looks ids up in a
learned table. A text-conditional one owns a ``TextConditioner``: ``with generator.text.captions(prompts)
as ids_B:`` encodes the prompts once, and inside the block id i stands for prompt i and the null id for
a learned null caption (LlamaGen's ``uncond_embedding``). So every sampler of a family, the fast ones
too, classifier-free guidance and label dropout work for text models unchanged.

A text model's ``num_classes`` is therefore the most prompts one call may hold (``MAX_PROMPTS``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from argen.errors import ArgenError

MAX_PROMPTS = 4096  # a text model's num_classes: prompts per sampling call or training micro-batch


@dataclass(frozen=True)
class Caption:
    """A caption batch at the generator's width."""

    tokens_BLC: torch.Tensor  # per-token features
    mask_BL: torch.Tensor     # bool, True = a real token (the null caption is all real)
    pooled_BC: torch.Tensor | None  # one vector per caption (adaptive norms), for conditioners with ``pooled``


def text_conditioner(text: dict | None, width: int, positions: int | None = None,
                     pooled: bool = False) -> TextConditioner | None:
    """The conditioner a generator config's ``text`` field (an ``argen.text`` encoder config) asks for, or
    None for a class-conditional model. ``positions``: caption tokens the architecture takes (the prefix
    length), which must be the encoder's; ``pooled``: whether it also reads the pooled caption."""
    if text is None:
        return None
    from argen.text import build_text_encoder

    cond = TextConditioner(build_text_encoder(**text), width, pooled)
    if positions is not None and positions != cond.max_tokens:
        raise ArgenError(f"the text encoder gives {cond.max_tokens} caption tokens but the model has {positions} "
                         "condition positions (cls_token_num); make them equal")
    return cond


class TextConditioner(nn.Module):
    """A text encoder's outputs (dim D) projected to the generator's ``width``, with a learned null caption.

    The projections are LlamaGen's ``CaptionEmbedder`` (Linear-GELU-Linear); the null caption is
    a (L, D) token table and a (D,) pooled vector at N(0, 1 / D), as LlamaGen's. ``encoder`` is any
    module with ``dim``, ``max_tokens`` and ``encode(prompts) -> (tokens_BLD, pooled_BD, mask_BL)``
    (``argen.text``); it trains with the generator unless frozen by its own ``requires_grad``. ``pooled``:
    also project the pooled caption (only parameters that every step uses exist: DDP requires it)."""

    def __init__(self, encoder: nn.Module, width: int, pooled: bool = False):
        super().__init__()
        self.encoder = encoder
        D, L = encoder.dim, encoder.max_tokens
        self.token_proj = nn.Sequential(nn.Linear(D, width), nn.GELU(approximate="tanh"), nn.Linear(width, width))
        self.null_tokens_LD = nn.Parameter(torch.randn(L, D) / D ** 0.5)
        if pooled:
            self.pooled_proj = nn.Sequential(nn.Linear(D, width), nn.GELU(approximate="tanh"), nn.Linear(width, width))
            self.null_pooled_D = nn.Parameter(torch.randn(D) / D ** 0.5)
        self.pooled = pooled
        self._prompts: tuple | None = None  # (tokens_PLD, pooled_PD, mask_PL) of the current call

    @property
    def max_tokens(self) -> int:
        return self.encoder.max_tokens

    @contextlib.contextmanager
    def captions(self, prompts: Sequence[str]):
        """Within this block, condition id i is ``prompts[i]``; yields the ids (P,)."""
        prompts = list(prompts)
        if not 1 <= len(prompts) <= MAX_PROMPTS:
            raise ArgenError(f"prompts: give 1 to {MAX_PROMPTS} prompts per call, got {len(prompts)}")
        out = self.encoder.encode(prompts)
        previous, self._prompts = self._prompts, (out.tokens_BLD, out.pooled_BD, out.mask_BL)
        try:
            yield torch.arange(len(prompts), device=out.pooled_BD.device)
        finally:
            self._prompts = previous

    def forward(self, ids_B: torch.Tensor) -> Caption:
        """Caption features of condition ids (``MAX_PROMPTS`` = the null caption)."""
        if self._prompts is None:
            raise ArgenError("a text-conditioned generator needs its prompts: call it inside "
                             "`with model.text.captions(prompts) as ids:` (Pipeline and the trainer do)")
        tokens_PLD, pooled_PD, mask_PL = self._prompts
        null_B = ids_B == MAX_PROMPTS
        if bool((ids_B[~null_B] >= len(pooled_PD)).any()) or bool((ids_B < 0).any()):
            raise ArgenError(f"condition ids must be in [0, {len(pooled_PD)}) or {MAX_PROMPTS} (null) for "
                             f"{len(pooled_PD)} prompts")
        idx_B = ids_B.masked_fill(null_B, 0)
        tokens = torch.where(null_B[:, None, None], self.null_tokens_LD.to(tokens_PLD.dtype), tokens_PLD[idx_B])
        mask = mask_PL[idx_B] | null_B[:, None]
        pooled = None
        if self.pooled:
            pooled = self.pooled_proj(torch.where(null_B[:, None], self.null_pooled_D.to(pooled_PD.dtype),
                                                  pooled_PD[idx_B]))
        return Caption(self.token_proj(tokens), mask, pooled)
