"""Next-scale sampling for VAR: one transformer call per scale, coarse to fine.

Per scale k of K:
  1. run the transformer on scale k's input; earlier scales come from the KV cache;
  2. classifier-free guidance, by default with a weight ramped linearly over scales
     (w_k = cfg * k / (K - 1), as the official ``autoregressive_infer_cfg``); then
     temperature, top-k, top-p;
  3. draw scale k's token map, add its contribution to f_hat through the tokenizer,
     and build scale k+1's input from f_hat.
Both CFG halves share the sampled tokens, so the batch is doubled once and stays so, unless
``cfg_scales = J`` ends guidance after scale J - 1: the unconditional half (its rows of the batch,
the conditioning and the KV caches) is then dropped, and the finer scales, where most of the
tokens are, run at half the batch. ``cfg_interval`` can also switch guidance off on the fine
scales (its ``done`` is the fraction of tokens before a scale), but it keeps the doubled batch.

The pieces (``NextScaleRun``, ``draw_scale``, ``drop_uncond``, ``prefill``) are shared with the
collaborative sampler (``sampling.collaborative``), which hands a run from one model to another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from argen.config import check
from argen.nn.kv_cache import KVCache
from argen.sampling.base import DiscreteSamplerConfig, check_inputs, knob, register_sampler
from argen.sampling.guidance import double, guide, with_null
from argen.sampling.processors import Processor, apply, sample_categorical

Known = tuple[list[torch.Tensor], list[torch.Tensor]]


@dataclass(frozen=True)
class VARSamplerConfig(DiscreteSamplerConfig):
    DROPPED: ClassVar[dict[str, object]] = {"use_cache": True}  # the uncached reference lives in the tests

    cfg_schedule: str = "linear"   # the official ramp over scales; the weight at the last scale is cfg
    cfg_scales: int = knob(0, "var: guide scales 0..J-1 only and run the finer ones without the unconditional "
                              "half (half the batch); 0 = every scale")

    def __post_init__(self):
        super().__post_init__()
        check(self.cfg_scales >= 0, f"cfg_scales must be >= 0 (0 = every scale), got {self.cfg_scales}")

    def passes(self, model) -> int:
        return len(model.config.scales)

    def guided_scales(self, K: int) -> int:
        """How many leading scales of K run with the unconditional half (0 without guidance)."""
        if not self.use_cfg:
            return 0
        return K if self.cfg_scales == 0 else min(self.cfg_scales, K)


@dataclass
class NextScaleRun:
    """One model's state between scales: its conditioning and KV caches (rows ``[cond; uncond]`` while
    ``guided``) and the transformer input of the next scale."""

    model: torch.nn.Module
    cond: torch.Tensor          # (B or 2B, C)
    caches: list[KVCache]
    x: torch.Tensor             # the next scale's input (B or 2B, pn^2, C)
    guided: bool                # whether the rows carry the unconditional half

    @classmethod
    def start(cls, model, labels_B: torch.Tensor, guided: bool) -> NextScaleRun:
        """Before scale 0: the class embedding (computed once for every scale), empty caches, scale 0's input."""
        labels = with_null(labels_B, model.config.num_classes, guided)
        cond = model.cond_embed(labels)
        return cls(model, cond, model.new_caches(labels.shape[0]), model.first_input(cond), guided)

    def set_input(self, h_BlCv: torch.Tensor, si: int) -> None:
        """Scale ``si``'s input from the tokenizer's vectors ``h`` (B, pn^2, token_dim) of f_hat so far."""
        self.x = double(self.model.embed_input(h_BlCv, si), self.guided)


def draw_scale(run: NextScaleRun, si: int, config: VARSamplerConfig, procs: list[Processor],
               generator: torch.Generator | None, known: Known | None = None,
               logits: torch.Tensor | None = None) -> torch.Tensor:
    """Scale ``si``'s token map (B, pn, pn): the transformer on ``run.x`` (or the given ``logits`` of the
    scale, (B or 2B, pn^2, V)), guidance, the processors, one categorical draw; known tokens forced."""
    c = run.model.config
    K = len(c.scales)
    if logits is None:
        logits = run.model.trunk(run.x, run.cond, c.begin_ends[si][0], run.caches).float()
    if run.guided:
        done = c.begin_ends[si][0] / c.seq_len  # tokens of the coarser scales
        logits = guide(logits, config.weight(done, ramp=si / (K - 1) if K > 1 else 1.0))
    pn = c.scales[si]
    idx = sample_categorical(apply(logits, procs), generator).view(-1, pn, pn)
    if known is not None:
        idx = torch.where(known[1][si], known[0][si], idx)
    return idx


def drop_uncond(run: NextScaleRun) -> None:
    """End guidance: keep the conditional half of the rows (conditioning, caches and input)."""
    if not run.guided:
        return
    B = run.cond.shape[0] // 2
    run.cond, run.x = run.cond[:B], run.x[:B]
    for cache in run.caches:
        cache.keep_rows(slice(0, B))
    run.guided = False


def prefill(run: NextScaleRun, inputs: list[torch.Tensor], si: int) -> torch.Tensor:
    """Teacher-force scales 0..si-1 into ``run``'s (empty) caches and return scale ``si``'s logits, in one
    block-causal call. ``inputs[k]``: the tokenizer's input vectors of scale k + 1 (B, pn^2, token_dim),
    as ``next_scale_input`` gave them while the scales were drawn; ``inputs[:si]`` are used."""
    model, c = run.model, run.model.config
    if si == 0:
        return model.trunk(run.x, run.cond, 0, run.caches).float()
    x = torch.cat([run.x] + [double(model.embed_input(h, k + 1), run.guided) for k, h in enumerate(inputs[:si])], 1)
    b, e = c.begin_ends[si]
    mask = model.attn_bias_for_masking[:, :, :e, :e]
    return model.trunk(x, run.cond, 0, run.caches, mask=mask)[:, b:].float()


@register_sampler("var", family="var", config=VARSamplerConfig)
@torch.no_grad()
def sample(model, tokenizer, labels_B: torch.Tensor, config: VARSamplerConfig = VARSamplerConfig(),
           generator: torch.Generator | None = None, known: Known | None = None) -> list[torch.Tensor]:
    """Sample token maps for class ids ``labels_B``: returns one (B, pn, pn) index map per scale.

    ``tokenizer`` (required: it turns each scale's tokens into the next scale's input) must fit the
    generator. ``known = (idx per scale, known mask per scale)``, each (B, pn, pn), forces the known
    tokens at every scale (editing): inpainting passes the image's own tokens with the pixel mask
    pooled to each scale; "refine from scale k" passes all-true masks for the scales before k.
    """
    check_inputs(model, tokenizer, labels_B)
    K = len(model.config.scales)
    guided = config.guided_scales(K)
    run = NextScaleRun.start(model, labels_B, guided > 0)
    procs = config.processors()
    f_hat = torch.zeros(labels_B.shape[0], tokenizer.token_dim, *tokenizer.grid, device=labels_B.device)
    out = []
    for si in range(K):
        if si == guided:
            drop_uncond(run)
        idx = draw_scale(run, si, config, procs, generator, known)
        out.append(idx)
        if si < K - 1:
            f_hat = f_hat + tokenizer.quantize.embed_scale(idx, si)
            run.set_input(tokenizer.next_scale_input(f_hat, si), si + 1)
    return out
