"""HMAR sampling: scale by scale, each scale from the reconstruction so far, in one shot or a few masked steps.

Per scale k: its input is VAR's (the tokenizer's cumulative reconstruction of scales < k resized to
scale k's grid); the block runs alone (no KV cache: HMAR's attention stays inside a scale), first
with every token masked. ``refine_steps`` T > 1 then commits the most confident tokens step by step
as MaskGIT does (``argen.sampling.maskgit.commit_step``, the ``schedule`` over the scale's unknown
tokens), so scale k takes min(T, pn_k^2) passes; T = 1 is one-shot next-scale prediction, whose
samples follow the model's own product of per-token conditionals.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from argen.config import check
from argen.sampling.base import check_inputs, knob, register_sampler
from argen.sampling.guidance import double, guide, with_null
from argen.sampling.maskgit import commit_step
from argen.sampling.next_scale import Known, VARSamplerConfig
from argen.schedulers.masking import MASK_SCHEDULES, mask_counts_batched


@dataclass(frozen=True)
class HMARSamplerConfig(VARSamplerConfig):
    refine_steps: int = knob(1, "hmar: masked steps per scale (1 = one-shot next-scale prediction); a scale of "
                                "n tokens takes min(steps, n) passes")
    schedule: str = knob("cosine", "hmar: mask schedule of the steps inside a scale: " + ", ".join(MASK_SCHEDULES))
    choice_temperature: float = 4.5  # Gumbel noise on confidences at a scale's first step, annealed to 0

    def __post_init__(self):
        super().__post_init__()
        check(self.refine_steps >= 1, f"refine_steps must be >= 1, got {self.refine_steps}")
        check(self.schedule in MASK_SCHEDULES,
              f"schedule must be one of {', '.join(MASK_SCHEDULES)}, got {self.schedule!r}")
        check(self.choice_temperature >= 0, f"choice_temperature must be >= 0, got {self.choice_temperature}")

    def passes(self, model) -> int:
        return sum(min(self.refine_steps, p * p) for p in model.config.scales)


@register_sampler("hmar", family="hmar", config=HMARSamplerConfig)
@torch.no_grad()
def sample(model, tokenizer, labels_B: torch.Tensor, config: HMARSamplerConfig = HMARSamplerConfig(),
           generator: torch.Generator | None = None, known: Known | None = None) -> list[torch.Tensor]:
    """Token maps for class ids ``labels_B``: one (B, pn, pn) index map per scale.

    ``tokenizer`` (required) turns each scale's tokens into the next scale's input. ``known = (idx per
    scale, known mask per scale)``, each (B, pn, pn): known tokens enter their scale's input from the
    first step, so the others are drawn given them (editing), and are never redrawn."""
    check_inputs(model, tokenizer, labels_B)
    c = model.config
    K, B, device = len(c.scales), labels_B.shape[0], labels_B.device
    guided = config.guided_scales(K)
    procs = config.processors()
    cond = model.cond_embed(with_null(labels_B, c.num_classes, guided > 0))  # (B or 2B, C)
    base = model.first_input(cond)
    f_hat = torch.zeros(B, tokenizer.token_dim, *tokenizer.grid, device=device)
    out = []
    for si, pn in enumerate(c.scales):
        if si == guided and guided > 0:  # guidance ends: keep the conditional rows
            cond, base = cond[:B], base[:B]
        use_cfg = si < guided
        idx = torch.full((B, pn * pn), model.mask_id, dtype=torch.long, device=device)
        if known is not None:
            idx = torch.where(known[1][si].reshape(B, -1), known[0][si].reshape(B, -1), idx)
        T = min(config.refine_steps, pn * pn)
        counts = mask_counts_batched(T, (idx == model.mask_id).sum(1), config.schedule)  # (B, T) still masked
        for t in range(T):
            logits = model.scale_logits(base, double(idx, use_cfg), cond)
            if use_cfg:
                done = c.begin_ends[si][0] / c.seq_len
                logits = guide(logits, config.weight(done, ramp=si / (K - 1) if K > 1 else 1.0))
            idx = commit_step(logits, idx, model.mask_id, counts[:, t], config.choice_temperature * (1 - (t + 1) / T),
                              procs, generator)
        out.append(idx.view(B, pn, pn))
        if si < K - 1:
            f_hat = f_hat + tokenizer.quantize.embed_scale(out[-1], si)
            base = double(model.embed_input(tokenizer.next_scale_input(f_hat, si), si + 1), si + 1 < guided)
    return out
