"""Logit processors shared by every sampler, and a sync-free categorical draw.

A processor is a callable ``logits_..V -> logits_..V``; ``build_processors`` turns the usual
knobs into a list (``DiscreteSamplerConfig.processors``), ``apply`` runs the list. They are
frozen dataclasses, so ``torch.compile`` treats them as constants inside a traced step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Processor = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Temperature:
    t: float

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits / self.t


@dataclass(frozen=True)
class TopK:
    """Keep the k largest logits (ties at the k-th value are kept too)."""

    k: int

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        k = min(self.k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth, float("-inf"))


@dataclass(frozen=True)
class TopP:
    """Nucleus: keep the smallest set of most likely tokens whose mass reaches p; the top token always stays."""

    p: float

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the mass *before* it already reaches p.
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= self.p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        return logits.masked_fill(drop, float("-inf"))


def build_processors(temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> list[Processor]:
    """Temperature, then top-k, then top-p: the order of VAR, LlamaGen and transformers."""
    procs: list[Processor] = []
    if temperature != 1.0:
        procs.append(Temperature(temperature))
    if top_k > 0:
        procs.append(TopK(top_k))
    if top_p < 1.0:
        procs.append(TopP(top_p))
    return procs


def apply(logits: torch.Tensor, processors: list[Processor]) -> torch.Tensor:
    for p in processors:
        logits = p(logits)
    return logits


def exponential_noise(shape: tuple[int, ...], generator: torch.Generator | None, device) -> torch.Tensor:
    """E ~ Exp(1) of ``shape`` (float32), the randomness of one categorical draw per row.

    Clamped away from 0: an exact-zero draw (odds ~2^-53) would make 0/0 = NaN on a masked token."""
    return torch.empty(shape, dtype=torch.float32, device=device).exponential_(1, generator=generator).clamp_(min=1e-30)


def categorical_from_noise(logits: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """argmax(p_i / E_i) with E_i ~ Exp(1) is distributed as Categorical(p): the exponential race of gpt-fast,
    with no host sync (no ``torch.multinomial``)."""
    return (torch.softmax(logits.float(), dim=-1) / noise).argmax(-1)


def sample_categorical(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one index per row of softmax(logits)."""
    return categorical_from_noise(logits, exponential_noise(logits.shape, generator, logits.device))
