"""Next-scale sampling for VAR: one transformer call per scale, coarse to fine.

Per scale k of K:
  1. run the transformer on scale k's input; earlier scales come from the KV cache;
  2. classifier-free guidance, by default with a weight ramped linearly over scales
     (w_k = cfg * k / (K - 1), as the official ``autoregressive_infer_cfg``); then
     temperature, top-k, top-p;
  3. draw scale k's token map, add its contribution to f_hat through the tokenizer,
     and build scale k+1's input from f_hat.
Both CFG halves share the sampled tokens, so the batch is doubled once and stays so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from argen.sampling.base import DiscreteSamplerConfig, check_inputs, register_sampler
from argen.sampling.guidance import double, guide, with_null
from argen.sampling.processors import apply, sample_categorical


@dataclass(frozen=True)
class VARSamplerConfig(DiscreteSamplerConfig):
    DROPPED: ClassVar[dict[str, object]] = {"use_cache": True}  # the uncached reference lives in the tests

    cfg_schedule: str = "linear"   # the official ramp over scales; the weight at the last scale is cfg


@register_sampler("var", family="var", config=VARSamplerConfig)
@torch.no_grad()
def sample(model, tokenizer, labels_B: torch.Tensor, config: VARSamplerConfig = VARSamplerConfig(),
           generator: torch.Generator | None = None,
           known: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None) -> list[torch.Tensor]:
    """Sample token maps for class ids ``labels_B``: returns one (B, pn, pn) index map per scale.

    ``tokenizer`` (required: it turns each scale's tokens into the next scale's input) must fit the
    generator. ``known = (idx per scale, known mask per scale)``, each (B, pn, pn), forces the known
    tokens at every scale (editing): inpainting passes the image's own tokens with the pixel mask
    pooled to each scale; "refine from scale k" passes all-true masks for the scales before k.
    """
    check_inputs(model, tokenizer, labels_B)
    c = model.config
    K, B = len(c.scales), labels_B.shape[0]
    use_cfg = config.use_cfg
    labels = with_null(labels_B, c.num_classes, use_cfg)
    cond = model.cond_embed(labels)  # (B or 2B, C), computed once for every scale
    caches = model.new_caches(labels.shape[0])
    procs = config.processors()

    f_hat = torch.zeros(B, tokenizer.token_dim, *tokenizer.grid, device=labels_B.device)
    x = model.first_input(cond)
    out = []
    for si, pn in enumerate(c.scales):
        logits = model.trunk(x, cond, c.begin_ends[si][0], caches).float()
        if use_cfg:
            done = c.begin_ends[si][0] / c.seq_len  # tokens of the coarser scales
            logits = guide(logits, config.weight(done, ramp=si / (K - 1) if K > 1 else 1.0))
        idx = sample_categorical(apply(logits, procs), generator).view(B, pn, pn)
        if known is not None:
            idx = torch.where(known[1][si], known[0][si], idx)
        out.append(idx)
        if si < K - 1:
            f_hat = f_hat + tokenizer.quantize.embed_scale(idx, si)
            x = double(model.embed_input(tokenizer.next_scale_input(f_hat, si), si + 1), use_cfg)
    return out
