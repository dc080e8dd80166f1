"""Neighbouring autoregressive decoding: one KV-cached pass per anti-diagonal (``argen.generators.nar``).

Pass 0 (the prefill) feeds the condition and draws token (0, 0); pass d feeds diagonal d - 1 and
draws every token of diagonal d from its neighbours' outputs, so an h x w map takes h + w - 1 passes.
Each token is drawn from its exact conditional (guidance and processors as the raster sampler
applies them), so the samples follow the model's own distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from argen.sampling.autoregressive import check_known, draw_token
from argen.sampling.base import DiscreteSamplerConfig, check_inputs, register_sampler
from argen.sampling.guidance import double, with_null
from argen.sampling.processors import exponential_noise


@dataclass(frozen=True)
class NARSamplerConfig(DiscreteSamplerConfig):
    """``cfg_schedule="linear"``: w times the fraction of tokens drawn before the diagonal."""

    def passes(self, model) -> int:
        return sum(model.config.grid) - 1  # h + w - 1 diagonals


@register_sampler("nar", family="nar", config=NARSamplerConfig)
@torch.no_grad()
def sample(model, tokenizer, labels_B: torch.Tensor, config: NARSamplerConfig = NARSamplerConfig(),
           generator: torch.Generator | None = None,
           known: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Diagonal by diagonal decoding: token maps (B, h, w) for class ids ``labels_B`` (num_classes = unconditional).

    ``known``: optional (idx, mask), each (B, N) or (B, h, w): tokens forced where mask is true; the others
    are drawn given them wherever they lie on earlier diagonals (inpainting, outpainting)."""
    check_inputs(model, tokenizer, labels_B)
    known = check_known(model, labels_B, known)
    c = model.config
    B, N, V, cls = labels_B.shape[0], c.seq_len, c.vocab_size, c.cls_token_num
    device, use_cfg, procs = labels_B.device, config.use_cfg, config.processors()
    labels = with_null(labels_B, c.num_classes, use_cfg)
    out_BN = torch.zeros(B, N, dtype=torch.long, device=device)  # raster layout
    caches = model.new_caches(labels.shape[0])
    for d, (s, e) in enumerate(model.diagonals):
        if d == 0:  # the prefill: the condition positions, whose last one predicts token (0, 0)
            first = 0
            x_BLC = model.cond_tokens(labels)
        else:  # feed diagonal d - 1 at its sequence positions
            ps, pe = model.diagonals[d - 1]
            first = cls + ps
            x_BLC = model.tok_embeddings(double(out_BN[:, model.order[ps:pe]], use_cfg))
        pos = torch.arange(first, first + x_BLC.shape[1], device=device)
        feats = model.features(x_BLC, pos, caches)
        logits = model.diagonal_logits(feats, d, first)                     # (B or 2B, n_d, V)
        n = e - s
        w = config.weight(s / N, ramp=s / N)
        noise = exponential_noise((B * n, V), generator, device)
        tok = draw_token(logits.flatten(0, 1), w, use_cfg, procs, noise).view(B, n)  # cond rows first, then uncond
        cells = model.order[s:e]
        if known is not None:
            tok = torch.where(known[1][:, cells], known[0][:, cells], tok)
        out_BN[:, cells] = tok
    return out_BN.view(B, *c.grid)

