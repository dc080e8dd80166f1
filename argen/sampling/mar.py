"""MAR sampling: continuous tokens in a random order, a few per step, each drawn by the head.

Per step t of T (``ar_steps``):
  1. the body runs once on the current tokens with the still-masked ones dropped (2B rows with CFG);
  2. the head (``argen.sampling.head``) draws the tokens of this step for every image together,
     guided with weight w_t (MAR's linear ramp: w_t = cfg * tokens known after the step / N);
  3. they become known; the rest stays masked.
How many stay masked after each step follows the mask schedule (``argen.schedulers.masking``),
over a random order of each image's unknown positions.

Head-step annealing (DiSA, Zhao et al. 2025): tokens drawn late, with most of the image known,
are well predicted, so the head may take fewer steps there. AR step t of T runs
``head_step_counts(config, T)[t]`` head steps, going from ``head_steps`` at the first step to
``head_steps_end`` at the last along ``head_schedule``; ``head_steps_end = 0`` (the default) keeps
``head_steps`` at every step, the constant sampler, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from argen.config import check
from argen.errors import ArgenError, ConfigError
from argen.sampling.base import check_inputs, knob, register_sampler
from argen.sampling.guidance import double, with_null
from argen.sampling.head import HEAD_SCHEDULES, HeadSamplerConfig, head_step_counts, sample_head  # noqa: F401
from argen.schedulers.masking import MASK_SCHEDULES, mask_counts


@dataclass(frozen=True)
class MARSamplerConfig(HeadSamplerConfig):
    ar_steps: int = 64             # body calls per image (each batched 2B with cfg > 0)
    head_steps: int = 100          # diffusion steps (respaced) or flow steps per AR step (the first, if annealed)
    schedule: str = knob("cosine", "AR-step mask schedule, the fraction of tokens still masked after "
                                   "progress r: " + ", ".join(MASK_SCHEDULES))
    cfg_schedule: str = "linear"   # "linear" (MAR): w_t = cfg * (tokens known after step t) / N

    def __post_init__(self):
        super().__post_init__()
        check(self.ar_steps >= 1, f"ar_steps must be >= 1, got {self.ar_steps}")
        check(self.schedule in MASK_SCHEDULES,
              f"schedule must be one of {', '.join(MASK_SCHEDULES)}, got {self.schedule!r}")

    def passes(self, model) -> int:
        return min(self.ar_steps, math.prod(model.config.grid))  # editing: at most one step per unknown token


@register_sampler("mar", family="mar", config=MARSamplerConfig)
@torch.no_grad()
def sample(model, tokenizer, labels_B: torch.Tensor, config: MARSamplerConfig = MARSamplerConfig(),
           generator: torch.Generator | None = None,
           known: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Sample continuous token maps for class ids ``labels_B``: (B, C, h, w), ready for ``tokenizer.decode``.

    Each image gets a random order over its unknown positions; after step t of T the first
    ``mask_counts[t]`` of that order are still masked, so step t predicts the tokens ranked in
    [counts[t], counts[t-1]). Per step the body runs once (2B rows with CFG) and the head runs
    once on the to-be-predicted tokens of every image together (2M rows with CFG), so an image
    costs ``ar_steps`` body rows and ``ar_steps * head_steps`` head evaluations, or
    ``sum(head_step_counts(config, ar_steps))`` when annealed (an inpainting region of
    U < ar_steps tokens takes U steps, one token each, and the head steps follow those U steps).

    ``known = (tokens, known_mask)``: tokens (B, C, h, w) or (B, N, C), mask (B, N) or (B, h, w);
    known tokens are kept exactly and only the rest is sampled. Every image of the batch must
    have the same number of unknown tokens (the body drops masked tokens, as MAE does).
    """
    check_inputs(model, tokenizer, labels_B)
    c = model.config
    (h, w), B, T, C = c.grid, labels_B.shape[0], config.ar_steps, c.token_dim
    N, device = h * w, labels_B.device
    tokens_BNC = torch.zeros(B, N, C, device=device)
    known_BN = torch.zeros(B, N, dtype=torch.bool, device=device)
    if known is not None:
        given, mask = known
        if given.dim() == 4:  # (B, C, h, w) -> (B, N, C)
            given = given.flatten(2).transpose(1, 2)
        if given.shape != (B, N, C) or mask.numel() != B * N:
            raise ArgenError(f"known: expected tokens ({B}, {C}, {h}, {w}) and a mask ({B}, {h}, {w}), got "
                             f"{tuple(known[0].shape)} and {tuple(mask.shape)}")
        known_BN = mask.reshape(B, N).bool()
        tokens_BNC = torch.where(known_BN[..., None], given.to(tokens_BNC.dtype), tokens_BNC)
    n_unknown = (~known_BN).sum(1)
    if bool((n_unknown != n_unknown[0]).any()):
        raise ArgenError("known: every image of a batch must have the same number of unknown tokens")
    U = int(n_unknown[0])
    if known is None and T > N:
        raise ConfigError(f"ar_steps ({T}) must be <= the number of tokens ({N} = {h}x{w})")
    if U == 0:
        return tokens_BNC.transpose(1, 2).reshape(B, C, h, w)
    counts = [U] + mask_counts(min(T, U), U, config.schedule)  # still masked before / after each step
    # A random rank among the unknown positions (known ones rank last and are never masked).
    noise_BN = torch.rand(B, N, generator=generator, device=device).masked_fill(known_BN, 2.0)
    rank_BN = noise_BN.argsort(1).argsort(1)

    use_cfg = config.use_cfg
    labels = with_null(labels_B, c.num_classes, use_cfg)
    head_kw = {"solver": config.solver} if c.head == "flow" else {}
    head_steps = head_step_counts(config, len(counts) - 1)
    for t in range(len(counts) - 1):
        mask_BN = rank_BN < counts[t]
        pred_BN = mask_BN & ~(rank_BN < counts[t + 1])
        z_BND = model(double(tokens_BNC, use_cfg), double(mask_BN, use_cfg), labels)
        w_t = config.weight((N - counts[t]) / N, ramp=(N - counts[t + 1]) / N)
        # Rows of the head batch: the predicted tokens of every image, then (CFG) the same ones unconditioned.
        cond_MD = torch.cat([z_BND[:B][pred_BN], z_BND[B:][pred_BN]]) if use_cfg else z_BND[pred_BN]
        x_MC = sample_head(model.diffloss, cond_MD, steps=head_steps[t], temperature=config.temperature,
                           cfg=w_t, generator=generator, guided=use_cfg, **head_kw)
        tokens_BNC[pred_BN] = x_MC.to(tokens_BNC.dtype)
    return tokens_BNC.transpose(1, 2).reshape(B, C, h, w)
