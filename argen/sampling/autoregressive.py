"""Raster next-token sampling for ``argen.generators.raster`` (LlamaGen / gpt-fast style).

One prefill writes the condition (and any known leading tokens) to a static, preallocated
KV cache; then each image token costs one ``decode_step`` of batch B (2B with CFG) at a
tensor position, so the step has one shape for the whole run and ``torch.compile(...,
fullgraph=True)`` traces it once. The loop keeps every tensor on the device (no ``.item()``).

Per token i: classifier-free guidance (when i / N lies in ``cfg_interval``), then temperature,
top-k, top-p (``argen.sampling.processors``), then a sync-free categorical draw. Both CFG
halves are fed the same token, so the batch is doubled once ([cond; uncond]) and stays so.

Known tokens (inpainting / completion): ``known = (idx_BN, mask_BN)`` forces ``idx`` wherever
``mask`` is true. The leading positions known in every row are teacher-forced in the prefill
(completing an image from its top rows costs one call for the whole prefix); known tokens
further on are drawn and then overwritten, so they are never resampled and the random stream
does not depend on which positions are known.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from argen.config import Config, check
from argen.errors import ArgenError
from argen.sampling.processors import apply, build_processors, check_knobs, guide, sample_categorical


@dataclass(frozen=True)
class RasterSamplerConfig(Config):
    temperature: float = 1.0
    top_k: int = 0                 # 0: off
    top_p: float = 1.0             # 1.0: off
    cfg: float = 0.0               # guidance weight w: logits = cond + w (cond - uncond); 0: off (LlamaGen's scale s = 1 + w)
    cfg_interval: tuple[float, float] = (0.0, 1.0)  # guide token i iff start <= i / N < end (LlamaGen's int k: (0, (k+2)/N))
    use_cache: bool = True         # False recomputes the whole prefix for every token (a reference for tests)
    compile: bool = False          # torch.compile(decode_step, fullgraph=True)
    compile_backend: str = "inductor"

    def __post_init__(self):
        super().__post_init__()
        check_knobs(self)
        check(len(self.cfg_interval) == 2 and 0 <= self.cfg_interval[0] <= self.cfg_interval[1] <= 1,
              f"cfg_interval must be (start, end) with 0 <= start <= end <= 1, got {self.cfg_interval}")
        check(bool(self.compile_backend), "compile_backend must name a torch.compile backend, e.g. 'inductor'")

    def guidance_at(self, i: int, n: int) -> float:
        """The CFG weight of image token i of n (0 outside ``cfg_interval``)."""
        start, end = self.cfg_interval
        return self.cfg if start <= i / n < end else 0.0


def _check_inputs(model, tokenizer, labels_B: torch.Tensor, known) -> tuple[torch.Tensor, torch.Tensor] | None:
    """One-line errors for bad arguments (a host sync or two, before the loop); known -> (idx_BN, mask_BN)."""
    c = model.config
    if labels_B.ndim != 1 or labels_B.dtype != torch.long:
        raise ArgenError(f"labels_B must be a 1-d long tensor of class ids, got {tuple(labels_B.shape)} {labels_B.dtype}")
    if labels_B.numel() and not bool(((labels_B >= 0) & (labels_B <= c.num_classes)).all()):
        raise ArgenError(f"labels_B must be class ids in [0, {c.num_classes}] ({c.num_classes} = unconditional)")
    if tokenizer is not None and (tuple(tokenizer.grid) != tuple(c.grid) or tokenizer.codebook_size != c.vocab_size):
        raise ArgenError(f"tokenizer (grid {tuple(tokenizer.grid)}, {tokenizer.codebook_size} codes) does not fit "
                         f"the generator (grid {tuple(c.grid)}, {c.vocab_size} codes)")
    if known is None:
        return None
    B, N = labels_B.shape[0], c.seq_len
    idx, mask = known
    if idx.shape[0] != B or idx[0].numel() != N or mask.shape != idx.shape or mask.dtype != torch.bool:
        raise ArgenError(f"known must be (idx, mask) of shape ({B}, {N}) or ({B}, {c.grid[0]}, {c.grid[1]}), mask bool; "
                         f"got {tuple(idx.shape)} and {tuple(mask.shape)} {mask.dtype}")
    idx, mask = idx.reshape(B, N).long(), mask.reshape(B, N)
    if bool((mask & ((idx < 0) | (idx >= c.vocab_size))).any()):
        raise ArgenError(f"known token ids must be in [0, {c.vocab_size}) where the mask is true")
    return idx, mask


@torch.no_grad()  # not inference_mode: under it bf16 autocast re-casts every weight at every step
def sample(model, tokenizer, labels_B: torch.Tensor, config: RasterSamplerConfig = RasterSamplerConfig(),
           generator: torch.Generator | None = None,
           known: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Sample token maps (B, h, w) for class ids ``labels_B`` (``num_classes`` = unconditional).

    Args:
        model: a ``RasterAR`` (left unchanged: caches are the sampler's, not the model's).
        tokenizer: only checked for a matching grid and codebook; may be None.
        config: temperature, top-k/p, CFG weight and interval, cache and compile switches.
        generator: the random stream; the same seed gives the same tokens.
        known: optional (idx, mask), each (B, N) or (B, h, w): tokens forced where mask is true.
    """
    c = model.config
    B, N, cls = labels_B.shape[0], c.seq_len, c.cls_token_num
    known = _check_inputs(model, tokenizer, labels_B, known)
    use_cfg = config.cfg > 0
    labels = torch.cat([labels_B, torch.full_like(labels_B, c.num_classes)]) if use_cfg else labels_B
    procs = build_processors(config.temperature, config.top_k, config.top_p)

    def both_halves(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t, t]) if use_cfg else t

    out = torch.zeros(B, N, dtype=torch.long, device=labels_B.device)
    n0 = 0  # leading positions known in every row: teacher-forced in one call
    if known is not None:
        n0 = int(known[1].all(0).long().cumprod(0).sum())
        out[:, :n0] = known[0][:, :n0]
    if n0 == N:
        return out.view(B, *c.grid)

    if config.use_cache:
        caches = model.new_caches(labels.shape[0])
        step = model.decode_step
        if config.compile:
            step = torch.compile(model.decode_step, fullgraph=True, backend=config.compile_backend)
        logits = model(both_halves(out[:, :n0]), labels, caches=caches)[:, -1]  # (B', V): token n0
        input_pos = torch.tensor([cls + n0], device=labels_B.device)           # where token n0 goes
    for i in range(n0, N):
        if not config.use_cache:
            logits = model(both_halves(out[:, :i]), labels)[:, -1]  # the whole prefix again
        elif i > n0:  # feed token i - 1 at its position: the logits of token i
            logits = step(both_halves(out[:, i - 1:i]), input_pos, caches)[:, -1]
            input_pos += 1
        w = config.guidance_at(i, N)
        if use_cfg:  # outside the interval the uncond half still runs: its cache serves later guided tokens
            logits = guide(logits, w) if w > 0 else logits[:B]
        logits = apply(logits, procs, {"step": i, "num_steps": N})
        tok = sample_categorical(logits, generator)
        if known is not None:
            tok = torch.where(known[1][:, i], known[0][:, i], tok)
        out[:, i] = tok
    return out.view(B, *c.grid)
