"""xAR sampling: entity by entity, one KV-cached transformer pass each, every token of the entity drawn
together by the flow head (``argen.generators.xar``).

Per entity e of M: the transformer runs on block e (the previous entity's tokens on entity e's
positions; with CFG a [cond; uncond] batch) against the cache of blocks < e, and the flow head
integrates each of its positions' tokens from noise in ``head_step_counts(config, M)[e]`` steps
(``--head-steps``, annealed to ``--head-steps-end`` over the entities if set), guided with
w_e = cfg * (tokens drawn after e) / N under the default linear schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from argen.errors import ArgenError
from argen.sampling.base import check_inputs, register_sampler
from argen.sampling.guidance import double, with_null
from argen.sampling.head import HeadSamplerConfig, head_step_counts, sample_head


@dataclass(frozen=True)
class XARSamplerConfig(HeadSamplerConfig):
    cfg_schedule: str = "linear"   # w_e = cfg * (tokens drawn after entity e) / N

    def passes(self, model) -> int:
        return len(model.config.entity_sizes)


def check_known(model, B: int, known) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``known = (tokens (B, C, h, w), mask (B, h, w) or (B, N))`` -> (tokens, mask (B, 1, h, w) float)."""
    if known is None:
        return None
    c = model.config
    tokens, mask = known
    if tokens.shape != (B, c.token_dim, *c.grid) or mask.numel() != B * c.grid[0] * c.grid[1]:
        raise ArgenError(f"known: expected tokens ({B}, {c.token_dim}, {c.grid[0]}, {c.grid[1]}) and a mask "
                         f"({B}, {c.grid[0]}, {c.grid[1]}), got {tuple(tokens.shape)} and {tuple(mask.shape)}")
    return tokens, mask.reshape(B, 1, *c.grid).float()


@register_sampler("xar", family="xar", config=XARSamplerConfig)
@torch.no_grad()
def sample(model, tokenizer, labels_B: torch.Tensor, config: XARSamplerConfig = XARSamplerConfig(),
           generator: torch.Generator | None = None,
           known: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Latents (B, C, h, w) for class ids ``labels_B``, ready for ``tokenizer.decode``.

    ``known = (tokens (B, C, h, w), mask (B, h, w))``: known tokens are kept exactly. Each entity keeps
    the tokens that are known whole: a cell's known tokens; for scales, a coarse token whose whole
    area is known, as the area-resized latent (the finest scale is the latent itself)."""
    check_inputs(model, tokenizer, labels_B)
    c = model.config
    B, N = labels_B.shape[0], c.seq_len
    known = check_known(model, B, known)
    if known is not None:  # entities of the known tokens, and per entity token whether it is known whole
        given = model.entities(known[0])
        kept = [m[..., 0] > 0.999 for m in model.entities(known[1])]  # an area mean of 1: all of it known
    use_cfg = config.use_cfg
    cond = model.cond_embed(with_null(labels_B, c.num_classes, use_cfg))
    caches = model.new_caches(cond.shape[0])
    steps = head_step_counts(config, len(c.entity_sizes))
    ents, done = [], 0
    for e, (b, end) in enumerate(c.begin_ends):
        ctx = None if e == 0 else double(model.context(ents[-1], e), use_cfg)
        z = model.trunk(model.block_input(cond, ctx, e), cond, b, caches)       # (B or 2B, n_e, D)
        n = end - b
        done += n
        w = config.weight((done - n) / N, ramp=done / N)
        cond_MD = torch.cat([z[:B].flatten(0, 1), z[B:].flatten(0, 1)]) if use_cfg else z.flatten(0, 1)
        x = sample_head(model.head, cond_MD, steps=steps[e], temperature=config.temperature, cfg=w,
                        generator=generator, guided=use_cfg, solver=config.solver).view(B, n, c.token_dim)
        if known is not None:
            x = torch.where(kept[e][..., None], given[e].to(x.dtype), x)
        ents.append(x)
    return model.assemble(ents)
