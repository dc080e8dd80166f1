"""Uncached reference samplers: the whole prefix recomputed for every token (raster) or scale (VAR).

They share the samplers' guidance, processors and random draws, in the same order, and no cache:
the cached samplers must give the same tokens for the same seed (tests/test_raster.py, test_var.py).
"""

from __future__ import annotations

import torch

from argen.sampling.guidance import guide, with_null
from argen.sampling.processors import apply, sample_categorical


@torch.no_grad()
def raster_uncached(model, labels_B, config, generator=None, known=None) -> torch.Tensor:
    """``argen.sampling.autoregressive.sample`` without a KV cache: (B, h, w)."""
    c = model.config
    B, N = labels_B.shape[0], c.seq_len
    labels = with_null(labels_B, c.num_classes, config.use_cfg)
    procs = config.processors()
    out, n0 = torch.zeros(B, N, dtype=torch.long), 0
    if known is not None:  # the leading positions known in every row are given, not drawn (as the sampler)
        known = (known[0].reshape(B, N), known[1].reshape(B, N))
        n0 = int(known[1].all(0).long().cumprod(0).sum())
        out[:, :n0] = known[0][:, :n0]
    for i in range(n0, N):
        prefix = out[:, :i]
        logits = model(torch.cat([prefix, prefix]) if config.use_cfg else prefix, labels)[:, -1]
        w = config.weight(i / N, ramp=i / N)
        if config.use_cfg:
            logits = guide(logits, w) if w > 0 else logits[:B]
        tok = sample_categorical(apply(logits, procs), generator)
        if known is not None:
            tok = torch.where(known[1][:, i], known[0][:, i], tok)
        out[:, i] = tok
    return out.view(B, *c.grid)


@torch.no_grad()
def var_uncached(model, tokenizer, labels_B, config, generator=None) -> list[torch.Tensor]:
    """``argen.sampling.next_scale.sample`` with every scale's input recomputed through the block-causal mask."""
    c = model.config
    K, B = len(c.scales), labels_B.shape[0]
    labels = with_null(labels_B, c.num_classes, config.use_cfg)
    cond = model.cond_embed(labels)
    procs = config.processors()
    f_hat = torch.zeros(B, tokenizer.token_dim, *tokenizer.grid)
    seen, out = [model.first_input(cond)], []
    for si, pn in enumerate(c.scales):
        start, end = c.begin_ends[si]
        mask = model.attn_bias_for_masking[:, :, :end, :end]
        logits = model.trunk(torch.cat(seen, 1), cond, mask=mask)[:, start:end].float()
        if config.use_cfg:
            logits = guide(logits, config.weight(start / c.seq_len, ramp=si / (K - 1) if K > 1 else 1.0))
        idx = sample_categorical(apply(logits, procs), generator).view(B, pn, pn)
        out.append(idx)
        if si < K - 1:
            f_hat = f_hat + tokenizer.quantize.embed_scale(idx, si)
            x = model.embed_input(tokenizer.next_scale_input(f_hat, si), si + 1)
            seen.append(torch.cat([x, x]) if config.use_cfg else x)
    return out
