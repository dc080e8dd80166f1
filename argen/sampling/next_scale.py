"""Next-scale sampling for VAR: one transformer call per scale, coarse to fine.

Per scale k (ratio r = k / (K - 1)):
  1. run the transformer on scale k's input; earlier scales come from the KV cache;
  2. classifier-free guidance with a weight ramped linearly over scales (w_k = cfg * r),
     as the official ``autoregressive_infer_cfg``; then temperature, top-k, top-p;
  3. draw scale k's token map, add its contribution to f_hat through the tokenizer,
     and build scale k+1's input from f_hat.
Both CFG halves share the sampled tokens, so the batch is doubled once and stays so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from argen.config import Config
from argen.sampling.processors import apply, build_processors, check_knobs, guide, sample_categorical


@dataclass(frozen=True)
class NextScaleConfig(Config):
    temperature: float = 1.0
    top_k: int = 0             # 0: off
    top_p: float = 1.0         # 1.0: off
    cfg: float = 0.0           # guidance weight w at the last scale: logits = cond + w (cond - uncond); 0: off
    cfg_schedule: str = "linear"
    use_cache: bool = True     # False recomputes the whole prefix each scale (a reference for tests)

    def __post_init__(self):
        super().__post_init__()
        check_knobs(self)


@torch.no_grad()
def sample(model, tokenizer, labels_B: torch.Tensor, config: NextScaleConfig = NextScaleConfig(),
           generator: torch.Generator | None = None,
           known: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None) -> list[torch.Tensor]:
    """Sample token maps for class ids ``labels_B``: returns one (B, pn, pn) index map per scale.

    ``known = (idx per scale, known mask per scale)``, each (B, pn, pn), forces the known tokens
    at every scale (editing): inpainting passes the image's own tokens with the pixel mask pooled
    to each scale; "refine from scale k" passes all-true masks for the scales before k.
    """
    c = model.config
    K, B = len(c.scales), labels_B.shape[0]
    use_cfg = config.cfg > 0
    labels = torch.cat([labels_B, torch.full_like(labels_B, c.num_classes)]) if use_cfg else labels_B
    cond = model.cond_embed(labels)  # (B or 2B, C), computed once for every scale
    caches = model.new_caches(labels.shape[0]) if config.use_cache else None
    procs = build_processors(config.temperature, config.top_k, config.top_p)

    f_hat = torch.zeros(B, tokenizer.token_dim, *tokenizer.grid, device=labels_B.device)
    x = model.first_input(cond)
    seen = []  # uncached reference: every input so far
    out = []
    for si, pn in enumerate(c.scales):
        start, end = c.begin_ends[si]
        if caches is not None:
            logits = model.trunk(x, cond, start, caches)
        else:
            seen.append(x)
            mask = model.attn_bias_for_masking[:, :, :end, :end]
            logits = model.trunk(torch.cat(seen, 1), cond, mask=mask)[:, start:end]
        logits = logits.float()
        if use_cfg:
            ratio = si / (K - 1) if K > 1 else 1.0
            logits = guide(logits, config.cfg * (ratio if config.cfg_schedule == "linear" else 1.0))
        logits = apply(logits, procs, {"step": si, "num_steps": K})
        idx = sample_categorical(logits, generator).view(B, pn, pn)
        if known is not None:
            idx = torch.where(known[1][si], known[0][si], idx)
        out.append(idx)
        if si < K - 1:
            f_hat = f_hat + tokenizer.quantize.embed_scale(idx, si)
            x = model.embed_input(tokenizer.next_scale_input(f_hat, si), si + 1)
            if use_cfg:
                x = torch.cat([x, x])
    return out
