"""Mask schedules for masked generation (MaskGIT / MUSE): ``gamma(r) -> fraction still masked``.

``gamma`` maps progress ``r`` in [0, 1] to the fraction of tokens that is still masked,
with gamma(0) = 1 (everything masked) and gamma(1) = 0 (nothing). The same function
serves training (a mask ratio ``gamma(u)`` with ``u ~ U(0, 1)`` per image) and sampling
(how many tokens stay masked after each of the T steps, ``mask_counts``). MaskGIT found
concave schedules (cosine, square) best: few tokens are committed early, when the
model knows least, and many late.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from argen.errors import ConfigError

Schedule = Callable[[torch.Tensor], torch.Tensor]

MASK_SCHEDULES: dict[str, Schedule] = {
    "cosine": lambda r: torch.cos(r * (math.pi / 2)),
    "linear": lambda r: 1 - r,
    "square": lambda r: 1 - r * r,
    "sqrt": lambda r: 1 - torch.sqrt(r),
    # exp decays fast and is rescaled to hit exactly 0 at r = 1 (MaskGIT's "exp" family, convex).
    "exp": lambda r: (torch.exp(-5 * r) - math.exp(-5)) / (1 - math.exp(-5)),
}


def get_schedule(name: str) -> Schedule:
    """The schedule ``gamma`` called ``name``; a one-line ConfigError lists the names otherwise."""
    if name not in MASK_SCHEDULES:
        raise ConfigError(f"unknown mask schedule {name!r}; allowed: {', '.join(MASK_SCHEDULES)}")
    return MASK_SCHEDULES[name]


def mask_counts_batched(num_steps: int, num_tokens_B: torch.Tensor, schedule: str = "cosine") -> torch.Tensor:
    """Tokens still masked after each step, per image: (B, T) long, from (B,) counts of unknown tokens.

    ``floor(N * gamma((t + 1) / T))``, then forced to drop by at least one per step (every step
    commits a token) while leaving at least one token for each later step, so with N >= T the
    row is strictly decreasing and ends at 0 after exactly T steps. Rows with N < T (a small
    inpainting region) are clamped instead of refused: one token per step until none is left,
    then steps that commit nothing, so the sampler still makes exactly T static-shaped calls.
    """
    gamma = get_schedule(schedule)
    T = num_steps
    n_B = num_tokens_B.long()
    r = torch.arange(1, T + 1, dtype=torch.float64, device=n_B.device) / T
    # float64 and a small epsilon: gamma(1/2) * 4 must floor to 2, not 1.999...
    raw_BT = torch.floor(n_B[:, None].double() * gamma(r)[None] + 1e-9).long()
    prev_B = n_B
    out = []
    for t in range(T):  # a loop over steps (not tokens), run once before sampling
        c_B = torch.minimum(raw_BT[:, t], prev_B - 1).clamp(min=T - 1 - t)
        c_B = torch.minimum(c_B, prev_B - 1).clamp(min=0)  # binds only when N < T
        out.append(c_B)
        prev_B = c_B
    return torch.stack(out, 1)


def mask_counts(num_steps: int, num_tokens: int, schedule: str = "cosine") -> list[int]:
    """Tokens still masked after each of ``num_steps`` steps: strictly decreasing, ending at 0.

    Raises a ConfigError when ``num_steps > num_tokens``: T steps cannot each commit a token.
    """
    if num_steps < 1:
        raise ConfigError(f"steps must be >= 1, got {num_steps}")
    if num_steps > num_tokens:
        raise ConfigError(f"steps ({num_steps}) must be <= the number of tokens ({num_tokens})")
    return mask_counts_batched(num_steps, torch.tensor([num_tokens]), schedule)[0].tolist()
