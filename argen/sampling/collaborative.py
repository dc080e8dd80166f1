"""Collaborative decoding (CoDe, Chen et al. 2024) for VAR: a large model drafts, a small one refines.

The coarse scales of a VAR hold few tokens but decide the image's layout; the fine scales hold most
of the tokens and mostly add detail. CoDe lets the large VAR draw scales 0..J-1 (``switch_scale = J``)
and a small VAR on the same multi-scale tokenizer (``refiner``) draw scales J..K-1::

    large:    s0 s1 .. s(J-1)
    refiner:  [teacher-forced s0 .. s(J-1) | s(J)] s(J+1) .. s(K-1)

The refiner continues from the large model's token maps: one block-causal call re-encodes the
coarse scales into its own KV cache (their inputs are the tokenizer's, exactly those the large
model saw) and gives scale J's logits; the finer scales then run one cached call each, as in the
plain sampler. Guidance, temperature, top-k and top-p are the large model's settings throughout,
with each scale's guidance weight as in ``sampling.next_scale`` (``cfg_scales`` ends guidance on
either model). ``switch_scale = K`` is the large model alone, the plain sampler's tokens exactly.

The mixture is not the large model's distribution: with a refiner that draws at least one scale the
config is ``lossy``. The paper's refiner is fine-tuned on the fine scales; here it is any VAR that
fits the tokenizer and the classes (e.g. the preset ``var-fmnist-small`` for ``var-fmnist``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from argen.config import check
from argen.errors import ArgenError
from argen.sampling.base import check_inputs, knob, register_sampler
from argen.sampling.next_scale import Known, NextScaleRun, VARSamplerConfig, draw_scale, drop_uncond, prefill
from argen.tokens import check_fit


@dataclass(frozen=True)
class CoDeSamplerConfig(VARSamplerConfig):
    refiner: str = knob("", "code: checkpoint folder of the small VAR that draws the fine scales (same tokenizer)")
    # default 2: in range for every VAR of two or more scales; the best switch depends on the models (see
    # docs/var-code.md), so set it per model
    switch_scale: int = knob(2, "code: scales 0..J-1 by the large model, J.. by --refiner; the number of scales "
                                "= the large model alone")

    def __post_init__(self):
        super().__post_init__()
        check(self.switch_scale >= 0, f"switch_scale must be >= 0, got {self.switch_scale}")

    @property
    def lossy(self) -> bool:
        """Conservative: the config does not know the model's scale count, so a set refiner counts."""
        return bool(self.refiner)


def check_refiner(model, tokenizer, refiner, config: CoDeSamplerConfig) -> int:
    """One-line errors for the refiner and the switch; returns the switch scale J."""
    K = len(model.config.scales)
    if not 0 <= config.switch_scale <= K:
        raise ArgenError(f"--switch-scale must be in 0..{K} (this model has {K} scales; {K} = the large model "
                         f"alone), got {config.switch_scale}")
    if config.switch_scale == K:
        return K
    if refiner is None:
        raise ArgenError(f"--sampler code with --switch-scale {config.switch_scale} needs --refiner DIR, a small "
                         f"VAR checkpoint on the same tokenizer (or --switch-scale {K}: the large model alone)")
    if getattr(refiner, "family", None) != "var":
        raise ArgenError(f"--refiner must be a VAR generator, got a {type(refiner).__name__}")
    check_fit(tokenizer.token_spec, refiner.token_spec, f"tokenizer {type(tokenizer).__name__}",
              f"refiner {type(refiner).__name__}")
    if refiner.config.num_classes != model.config.num_classes:
        raise ArgenError(f"--refiner has {refiner.config.num_classes} classes, the large model "
                         f"{model.config.num_classes}; they must agree")
    return config.switch_scale


@register_sampler("code", family="var", config=CoDeSamplerConfig, models=("refiner",))
@torch.no_grad()
def sample(model, tokenizer, labels_B: torch.Tensor, config: CoDeSamplerConfig = CoDeSamplerConfig(),
           generator: torch.Generator | None = None, known: Known | None = None,
           refiner=None) -> list[torch.Tensor]:
    """Token maps (one (B, pn, pn) per scale): scales < ``switch_scale`` by ``model``, the rest by
    ``refiner`` (see the module doc). ``known`` forces tokens at every scale, as in the VAR sampler."""
    check_inputs(model, tokenizer, labels_B)
    J = check_refiner(model, tokenizer, refiner, config)
    K = len(model.config.scales)
    guided = config.guided_scales(K)
    procs = config.processors()
    f_hat = torch.zeros(labels_B.shape[0], tokenizer.token_dim, *tokenizer.grid, device=labels_B.device)
    out, inputs = [], []  # inputs[k]: the tokenizer's input vectors of scale k + 1

    run = NextScaleRun.start(model, labels_B, guided > 0) if J > 0 else None
    for si in range(K):
        if si == J:  # hand over: the refiner re-encodes scales 0..J-1 and gives scale J's logits
            run = NextScaleRun.start(refiner, labels_B, guided > J)
            idx = draw_scale(run, si, config, procs, generator, known, logits=prefill(run, inputs, si))
        else:
            if si == guided:
                drop_uncond(run)
            idx = draw_scale(run, si, config, procs, generator, known)
        out.append(idx)
        if si < K - 1:
            f_hat = f_hat + tokenizer.quantize.embed_scale(idx, si)
            inputs.append(tokenizer.next_scale_input(f_hat, si))
            if si + 1 != J:
                run.set_input(inputs[-1], si + 1)
    return out
