"""Logit processors shared by every sampler, and a sync-free categorical draw.

A processor is a callable ``(logits_..V, state) -> logits_..V``; ``state`` is a
dict the sampler fills (e.g. ``{"step": k, "num_steps": K}``) so that
schedule-dependent processors need no extra plumbing. ``build_processors``
turns the usual knobs into a list; ``apply`` runs the list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from argen.config import check

Processor = Callable[[torch.Tensor, dict], torch.Tensor]


@dataclass(frozen=True)
class Temperature:
    t: float

    def __call__(self, logits: torch.Tensor, state: dict) -> torch.Tensor:
        return logits / self.t


@dataclass(frozen=True)
class TopK:
    """Keep the k largest logits (ties at the k-th value are kept too)."""

    k: int

    def __call__(self, logits: torch.Tensor, state: dict) -> torch.Tensor:
        k = min(self.k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth, float("-inf"))


@dataclass(frozen=True)
class TopP:
    """Nucleus: keep the smallest set of most likely tokens whose mass reaches p; the top token always stays."""

    p: float

    def __call__(self, logits: torch.Tensor, state: dict) -> torch.Tensor:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the mass *before* it already reaches p.
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= self.p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        return logits.masked_fill(drop, float("-inf"))


CFG_SCHEDULES = ("constant", "linear")


def check_knobs(config) -> None:
    """Validate the knobs every sampler config shares (temperature, top_k, top_p, cfg): one-line errors."""
    check(config.temperature > 0, f"temperature must be > 0, got {config.temperature}")
    check(config.top_k >= 0, f"top_k must be >= 0 (0 = off), got {config.top_k}")
    check(0 < config.top_p <= 1, f"top_p must be in (0, 1], got {config.top_p}")
    check(config.cfg >= 0, f"cfg must be >= 0 (0 = off), got {config.cfg}")
    if hasattr(config, "cfg_schedule"):
        check(config.cfg_schedule in CFG_SCHEDULES, f"cfg_schedule must be one of {CFG_SCHEDULES}")


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


def apply(logits: torch.Tensor, processors: list[Processor], state: dict | None = None) -> torch.Tensor:
    state = state or {}
    for p in processors:
        logits = p(logits, state)
    return logits


def guide(logits_2B: torch.Tensor, weight: float | torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance on a batch stacked as [cond; uncond]: cond + w (cond - uncond).

    ``w = 0`` is the conditional model alone (VAR's convention: logits = (1 + w) cond - w uncond)."""
    cond, uncond = logits_2B.chunk(2, dim=0)
    return cond + weight * (cond - uncond)


def sample_categorical(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one index per row of softmax(logits) without a host sync (exponential race, as gpt-fast).

    argmax(p_i / E_i) with E_i ~ Exp(1) is distributed as Categorical(p)."""
    probs = torch.softmax(logits.float(), dim=-1)
    # An exact-zero draw (odds ~2^-53) would make 0/0 = NaN on a masked token: clamp it away.
    e = torch.empty_like(probs).exponential_(1, generator=generator).clamp_(min=1e-30)
    return (probs / e).argmax(-1)
