"""Raster next-token sampling for ``argen.generators.raster`` (LlamaGen / gpt-fast style).

One prefill writes the condition (and any known leading tokens) to a static, preallocated
KV cache; then each image token costs one ``token_step``: a ``decode_step`` of batch B (2B
with CFG) at a tensor position, classifier-free guidance, temperature / top-k / top-p, and a
categorical draw. The step has one shape for the whole run and no host sync, so
``torch.compile(token_step, fullgraph=True)`` traces the whole token step as one graph, as
gpt-fast does; its random numbers are drawn outside the graph (``exponential_noise``) from
the caller's ``torch.Generator``, so compiled and eager runs draw the same stream.

Both CFG halves are fed the same token, so the batch is doubled once ([cond; uncond]) and
stays so; outside the guidance interval the uncond half still runs, since its cache serves
later guided tokens.

Known tokens (inpainting / completion): ``known = (idx_BN, mask_BN)`` forces ``idx`` wherever
``mask`` is true. The leading positions known in every row are teacher-forced in the prefill
(completing an image from its top rows costs one call for the whole prefix); known tokens
further on are drawn and then overwritten, so they are never resampled and the random stream
does not depend on which positions are known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from argen.config import check
from argen.errors import ArgenError
from argen.sampling.base import DiscreteSamplerConfig, check_inputs, register_sampler
from argen.sampling.guidance import double, guide, with_null
from argen.sampling.processors import Processor, apply, categorical_from_noise, exponential_noise


@dataclass(frozen=True)
class RasterSamplerConfig(DiscreteSamplerConfig):
    """``cfg_interval``: LlamaGen's int k guides the first k + 2 tokens, (0, (k + 2) / N) here."""

    DROPPED: ClassVar[dict[str, object]] = {"use_cache": True}  # the uncached reference lives in the tests

    compile: bool = False          # torch.compile(token_step, fullgraph=True)
    compile_backend: str = "inductor"

    def __post_init__(self):
        super().__post_init__()
        check(bool(self.compile_backend), "compile_backend must name a torch.compile backend, e.g. 'inductor'")

    def passes(self, model) -> int:
        return math.prod(model.token_spec.grid)  # one per token (speculative samplers: at most that)


def draw_token(logits_BV: torch.Tensor, weight: float, use_cfg: bool, procs: list[Processor],
               noise_BV: torch.Tensor) -> torch.Tensor:
    """Guidance, processors and the draw of one token from the logits of B rows (2B with CFG): (B,)."""
    if use_cfg:
        logits_BV = guide(logits_BV, weight) if weight > 0 else logits_BV[: logits_BV.shape[0] // 2]
    return categorical_from_noise(apply(logits_BV, procs), noise_BV)


def token_step(model, x_B1: torch.Tensor, input_pos: torch.Tensor, caches, weight: float, use_cfg: bool,
               procs: list[Processor], noise_BV: torch.Tensor) -> torch.Tensor:
    """Feed token i - 1 at ``input_pos`` and draw token i: the whole per-token work, one graph when compiled."""
    return draw_token(model.decode_step(x_B1, input_pos, caches)[:, -1], weight, use_cfg, procs, noise_BV)


def check_known(model, labels_B: torch.Tensor, known) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``known`` -> (idx_BN, mask_BN), with one-line errors for bad shapes or ids."""
    if known is None:
        return None
    c = model.config
    B, N = labels_B.shape[0], c.seq_len
    idx, mask = known
    if idx.shape[0] != B or idx[0].numel() != N or mask.shape != idx.shape or mask.dtype != torch.bool:
        raise ArgenError(f"known must be (idx, mask) of shape ({B}, {N}) or ({B}, {c.grid[0]}, {c.grid[1]}), mask bool; "
                         f"got {tuple(idx.shape)} and {tuple(mask.shape)} {mask.dtype}")
    idx, mask = idx.reshape(B, N).long(), mask.reshape(B, N)
    if bool((mask & ((idx < 0) | (idx >= c.vocab_size))).any()):
        raise ArgenError(f"known token ids must be in [0, {c.vocab_size}) where the mask is true")
    return idx, mask


@register_sampler("raster", family="raster", config=RasterSamplerConfig)
@torch.no_grad()  # not inference_mode: under it bf16 autocast re-casts every weight at every step
def sample(model, tokenizer, labels_B: torch.Tensor, config: RasterSamplerConfig = RasterSamplerConfig(),
           generator: torch.Generator | None = None,
           known: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Raster decoding: one token per KV-cached pass, the model's own distribution.

    Token maps (B, h, w) for class ids ``labels_B`` (``num_classes`` = unconditional).

    Args:
        model: a ``RasterAR`` (left unchanged: caches are the sampler's, not the model's).
        tokenizer: only checked to fit the generator; may be None.
        config: temperature, top-k/p, CFG weight, schedule and interval, compile switches.
        generator: the random stream; the same seed gives the same tokens.
        known: optional (idx, mask), each (B, N) or (B, h, w): tokens forced where mask is true.
    """
    check_inputs(model, tokenizer, labels_B)
    known = check_known(model, labels_B, known)
    c = model.config
    B, N, V = labels_B.shape[0], c.seq_len, c.vocab_size
    use_cfg = config.use_cfg
    labels = with_null(labels_B, c.num_classes, use_cfg)
    procs = config.processors()

    out = torch.zeros(B, N, dtype=torch.long, device=labels_B.device)
    n0 = 0  # leading positions known in every row: teacher-forced in one call
    if known is not None:
        n0 = int(known[1].all(0).long().cumprod(0).sum())
        out[:, :n0] = known[0][:, :n0]
    if n0 == N:
        return out.view(B, *c.grid)

    step = token_step
    if config.compile:
        step = torch.compile(token_step, fullgraph=True, backend=config.compile_backend)
    caches = model.new_caches(labels.shape[0])
    input_pos = torch.tensor([c.cls_token_num + n0], device=labels_B.device)  # where token n0 goes
    for i in range(n0, N):
        w = config.weight(i / N, ramp=i / N)
        noise_BV = exponential_noise((B, V), generator, labels_B.device)
        if i == n0:  # the prefill: condition and known prefix in one call, logits of token n0
            tok = draw_token(model(double(out[:, :n0], use_cfg), labels, caches=caches)[:, -1], w, use_cfg, procs,
                             noise_BV)
        else:  # feed token i - 1 at its position: the logits of token i
            tok = step(model, double(out[:, i - 1:i], use_cfg), input_pos, caches, w, use_cfg, procs, noise_BV)
            input_pos += 1
        if known is not None:
            tok = torch.where(known[1][:, i], known[0][:, i], tok)
        out[:, i] = tok
    return out.view(B, *c.grid)
