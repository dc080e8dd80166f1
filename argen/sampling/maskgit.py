"""MaskGIT sampling: T parallel steps, each commits the most confident of the masked tokens.

Per step t of T:
  1. one transformer call on the current map (with CFG: [cond; uncond] stacked as one 2B batch);
  2. CFG, then temperature / top-k / top-p; draw a token for every position at once;
  3. confidence of each drawn token = log p(token) + choice_temperature * (1 - (t + 1) / T) * Gumbel
     (the annealed noise of google-research/maskgit: explore early, be greedy late); tokens that
     were already committed, or given in ``known``, get +inf so they are never re-masked;
  4. keep everything except the ``mask_counts[t]`` least confident positions, which go back to [MASK].
The number still masked follows the schedule ``gamma`` over the *unknown* positions only, and
reaches 0 at step T, so exactly T forward calls are made and none synchronises with the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from argen.config import check
from argen.errors import ArgenError, ConfigError
from argen.sampling.base import DiscreteSamplerConfig, check_inputs, knob, register_sampler
from argen.sampling.guidance import double, guide, with_null
from argen.sampling.processors import apply, sample_categorical
from argen.schedulers.masking import MASK_SCHEDULES, mask_counts_batched


@dataclass(frozen=True)
class MaskGITSamplerConfig(DiscreteSamplerConfig):
    """``cfg_schedule="linear"``: w_t = cfg * (t + 1) / T."""

    steps: int = 8                 # T: forward calls per image (batched 2B with cfg > 0)
    schedule: str = knob("cosine", "maskgit: mask schedule gamma, the fraction still masked after progress r: "
                                   + ", ".join(MASK_SCHEDULES))
    choice_temperature: float = 4.5  # scale of the Gumbel noise on confidences at step 0 (annealed to 0)

    def __post_init__(self):
        super().__post_init__()
        check(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        check(self.schedule in MASK_SCHEDULES,
              f"schedule must be one of {', '.join(MASK_SCHEDULES)}, got {self.schedule!r}")
        check(self.choice_temperature >= 0, f"choice_temperature must be >= 0, got {self.choice_temperature}")

    def passes(self, model) -> int:
        return self.steps


def _gumbel(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    # -log(-log U); U is kept away from 0 so that 0 * noise (the last step) is never 0 * inf = NaN.
    u = torch.rand(shape, generator=generator, device=device).clamp_(min=1e-20)
    return -torch.log(-torch.log(u))


@register_sampler("maskgit", family="maskgit", config=MaskGITSamplerConfig)
@torch.no_grad()
def sample(model, tokenizer, labels_B: torch.Tensor, config: MaskGITSamplerConfig = MaskGITSamplerConfig(),
           generator: torch.Generator | None = None,
           known: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """MaskGIT decoding: ``steps`` parallel steps, each commits the most confident masked tokens.

    Token maps for class ids ``labels_B``: (B, h, w) long, every id < vocab_size.

    ``known = (idx, known_mask)``, each (B, h*w) or (B, h, w): positions where ``known_mask`` is
    true start with ``idx``'s token and are never resampled or re-masked (inpainting,
    outpainting); the schedule then runs over the unknown positions. Without ``known``,
    ``steps`` must be <= h*w; an unknown region smaller than ``steps`` commits one token per
    step and then nothing (the call count stays T). ``tokenizer`` is only checked to fit the generator.
    """
    check_inputs(model, tokenizer, labels_B)
    c = model.config
    (h, w), B, T = c.grid, labels_B.shape[0], config.steps
    N, mask_id, device = h * w, c.vocab_size, labels_B.device
    if known is None:
        if T > N:
            raise ConfigError(f"steps ({T}) must be <= the number of tokens ({N} = {h}x{w})")
        idx_BN = torch.full((B, N), mask_id, dtype=torch.long, device=device)
    else:
        if known[0].numel() != B * N or known[1].numel() != B * N:
            raise ArgenError(f"known: expected (idx, mask) of shape ({B}, {N}) or ({B}, {h}, {w}) each, got "
                             f"{tuple(known[0].shape)} and {tuple(known[1].shape)}")
        given_BN, known_BN = known[0].reshape(B, N).long(), known[1].reshape(B, N).bool()
        idx_BN = torch.where(known_BN, given_BN, mask_id)
    counts_BT = mask_counts_batched(T, (idx_BN == mask_id).sum(1), config.schedule)  # (B, T)

    use_cfg = config.use_cfg
    labels = with_null(labels_B, c.num_classes, use_cfg)
    procs = config.processors()
    for t in range(T):
        logits_BNV = model(double(idx_BN, use_cfg), labels).float()
        if use_cfg:
            logits_BNV = guide(logits_BNV, config.weight(t / T, ramp=(t + 1) / T))
        idx_BN = commit_step(logits_BNV, idx_BN, mask_id, counts_BT[:, t], config.choice_temperature * (1 - (t + 1) / T),
                             procs, generator)
    return idx_BN.view(B, h, w)


def commit_step(logits_BNV: torch.Tensor, idx_BN: torch.Tensor, mask_id: int, still_masked_B: torch.Tensor,
                noise_scale: float, procs, generator: torch.Generator | None) -> torch.Tensor:
    """One MaskGIT step (steps 2-4 of the module doc) on guided logits: draw every masked position, then
    put the ``still_masked_B`` least confident of them back to ``mask_id``. Returns the new (B, N) map."""
    # Confidence comes from the guided logits before truncation: under top_k=1 every kept
    # token would have p = 1 and the order in which positions are committed would be lost.
    logp_BNV = torch.log_softmax(logits_BNV, -1)
    drawn_BN = sample_categorical(apply(logits_BNV, procs), generator)
    masked_BN = idx_BN == mask_id
    drawn_BN = torch.where(masked_BN, drawn_BN, idx_BN)  # committed and known tokens stay
    conf_BN = logp_BNV.gather(-1, drawn_BN[..., None])[..., 0]
    conf_BN = conf_BN + noise_scale * _gumbel(idx_BN.shape, generator, idx_BN.device)
    conf_BN = conf_BN.masked_fill(~masked_BN, float("inf"))
    # Re-mask the still_masked_B least confident positions: a rank (stable on ties) rather
    # than a threshold, so that exactly that many go back even when confidences tie.
    rank_BN = conf_BN.argsort(dim=-1, stable=True).argsort(-1)
    return torch.where(rank_BN < still_masked_B[:, None], mask_id, drawn_BN)
