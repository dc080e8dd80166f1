"""Classifier-free guidance, written once for every sampler.

The batch is doubled once as ``[cond; uncond]`` (the uncond half carries the null class
``num_classes``), the network runs on both halves in one call, and ``guide`` mixes them:
``cond + w (cond - uncond)``, so ``w = 0`` is the conditional model alone (VAR's and MAR's
convention; LlamaGen's and MAR's scale s is 1 + w).

The weight of a step comes from ``GuidanceConfig.weight``: a constant, a linear ramp over
the family's own progress measure (as the official VAR, MAR and MaskGIT code ramp it), and
an interval of generation progress outside which guidance is off (Kynkaanniemi et al. 2024;
LlamaGen's ``cfg_interval``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from argen.config import Config, check

CFG_SCHEDULES = ("constant", "linear")


@dataclass(frozen=True)
class GuidanceConfig(Config):
    """The guidance fields every sampler config shares (subclasses may change the defaults)."""

    cfg: float = 0.0                # guidance weight w: cond + w (cond - uncond); 0: off
    cfg_schedule: str = "constant"  # "linear": w times the family's ramp (0 -> 1 over the steps)
    cfg_interval: tuple[float, float] = (0.0, 1.0)  # guided iff start <= done < end (see ``weight``)

    def __post_init__(self):
        super().__post_init__()
        check(math.isfinite(self.cfg) and self.cfg >= 0, f"cfg must be a finite number >= 0 (0 = off), got {self.cfg}")
        check(self.cfg_schedule in CFG_SCHEDULES,
              f"cfg_schedule must be one of {', '.join(CFG_SCHEDULES)}, got {self.cfg_schedule!r}")
        check(len(self.cfg_interval) == 2 and 0 <= self.cfg_interval[0] <= self.cfg_interval[1] <= 1,
              f"cfg_interval must be (start, end) with 0 <= start <= end <= 1, got {self.cfg_interval}")

    def passes(self, model) -> int | None:
        """Generator calls one batch takes (a progress bar's total); None where it is not known ahead."""
        return None

    @property
    def use_cfg(self) -> bool:
        """Whether the batch is doubled at all (a zero weight inside the run still runs the uncond half)."""
        return self.cfg > 0

    def weight(self, done: float, ramp: float = 1.0) -> float:
        """Guidance weight of a step that starts with fraction ``done`` of the run behind it.

        ``done``: the fraction of tokens generated before the step (raster, VAR, MAR), or of steps
        (MaskGIT, whose per-image token counts differ when editing). ``ramp``: the family's linear
        ramp (raster: i / N; VAR: k / (K - 1); MaskGIT: (t + 1) / T; MAR: the fraction of tokens
        known after the step), used when ``cfg_schedule == "linear"``."""
        start, end = self.cfg_interval
        if not start <= done < end:
            return 0.0
        return self.cfg * ramp if self.cfg_schedule == "linear" else self.cfg


def with_null(labels_B: torch.Tensor, null_class: int, use_cfg: bool) -> torch.Tensor:
    """(B,) class ids -> (2B,) ``[labels; null]`` under guidance, else the labels unchanged."""
    return torch.cat([labels_B, torch.full_like(labels_B, null_class)]) if use_cfg else labels_B


def double(x: torch.Tensor, use_cfg: bool) -> torch.Tensor:
    """Both halves of a guided batch see the same input: (B, ...) -> (2B, ...)."""
    return torch.cat([x, x]) if use_cfg else x


def guide(out_2B: torch.Tensor, weight: float | torch.Tensor) -> torch.Tensor:
    """``[cond; uncond]`` stacked on dim 0 -> cond + w (cond - uncond), (B, ...)."""
    cond, uncond = out_2B.chunk(2, dim=0)
    return cond + weight * (cond - uncond)
