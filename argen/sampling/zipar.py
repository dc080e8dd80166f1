"""ZipAR (He et al. 2024) for raster models: rows decoded in parallel, lossy.

Raster order makes token (r, c) wait for all of row r - 1, though it mostly depends on its
neighbourhood. ZipAR opens row r + 1 as soon as row r has ``window`` tokens; every pass then feeds
the last token of each open row and draws the next token of every open row, each at its own
raster position in the KV cache. Attention sees only tokens that exist: keys are masked by
"written" as well as by causality. The first token of a new row is predicted, as in raster
order, from the slot of the previous row's last token, which does not exist yet: the previous
row's newest token stands in there, and the pass after that row's last token is drawn writes the
real one over it (an extra input of that pass, not an extra pass).

An h x w grid takes w + (h - 1) S passes (``zipar_passes``); S = w (or 0) is raster decoding,
token for token. Smaller S is faster and samples from a distribution other than the model's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from argen.config import check
from argen.sampling.autoregressive import RasterSamplerConfig, check_known
from argen.sampling.base import check_inputs, knob, register_sampler
from argen.sampling.guidance import double, guide, with_null
from argen.sampling.processors import apply, categorical_from_noise, exponential_noise


@dataclass(frozen=True)
class ZipARSamplerConfig(RasterSamplerConfig):
    window: int = knob(0, "zipar (lossy below the grid width): row r + 1 opens once row r has this many tokens; "
                          "0 = the grid width (raster order)")

    def __post_init__(self):
        super().__post_init__()
        check(self.window >= 0, f"window must be >= 0 (0 = the grid width), got {self.window}")
        check(not self.compile, "compile applies to the raster sampler only")

    @property
    def lossy(self) -> bool:
        return self.window > 0  # lossless only at S >= the grid width, which the config cannot see


def zipar_passes(grid: tuple[int, int], window: int) -> int:
    """Forward passes for an h x w grid (prefill included): w + (h - 1) S, S = min(window, w) (0: w)."""
    h, w = grid
    s = w if window <= 0 else min(window, w)
    return w + (h - 1) * s


@register_sampler("zipar", family="raster", config=ZipARSamplerConfig)
@torch.no_grad()
def sample(model, tokenizer, labels_B: torch.Tensor, config: ZipARSamplerConfig = ZipARSamplerConfig(),
           generator: torch.Generator | None = None, known=None) -> torch.Tensor:
    """ZipAR: a row opens once the row above has ``window`` tokens (lossy below the grid width).

    Token maps (B, h, w); ``known`` tokens are forced where the mask is true."""
    check_inputs(model, tokenizer, labels_B)
    known = check_known(model, labels_B, known)
    c = model.config
    (h, w), B, N, cls = c.grid, labels_B.shape[0], c.seq_len, c.cls_token_num
    S = w if config.window <= 0 else min(config.window, w)
    dev = labels_B.device
    use_cfg = config.use_cfg
    procs = config.processors()
    out = torch.zeros(B, N, dtype=torch.long, device=dev)
    caches = model.new_caches(2 * B if use_cfg else B)
    written = torch.zeros(c.max_len, dtype=torch.bool, device=dev)  # cache slots that hold a token
    written[:cls] = True
    labels = with_null(labels_B, c.num_classes, use_cfg)

    def draw(logits_BLV: torch.Tensor, targets: list[int]) -> None:
        weights = torch.tensor([config.weight(i / N, ramp=i / N) for i in targets], device=dev)[:, None]
        if use_cfg:
            logits_BLV = guide(logits_BLV, weights)
        tok = categorical_from_noise(apply(logits_BLV, procs), exponential_noise(logits_BLV.shape, generator, dev))
        idx = torch.tensor(targets, device=dev)
        if known is not None:
            tok = torch.where(known[1][:, idx], known[0][:, idx], tok)
        out[:, idx] = tok

    draw(model(double(out[:, :0], use_cfg), labels, caches=caches)[:, -1:], [0])  # the prefill: token 0
    count = [1] + [0] * (h - 1)  # tokens per row
    stale: list[int] = []        # rows whose last slot holds a stand-in though their last token exists
    while count[-1] < w:
        rows = [r for r in range(h) if count[r] < w and (r == 0 or count[r - 1] >= S)]
        # Row r's next token (r, c) follows input slot r*w + c - 1; for c = 0 that is the previous
        # row's last slot, where the previous row's newest token stands in until its real one exists.
        slots = [r * w + count[r] - 1 for r in rows]
        feed = [s if count[r] > 0 else (r - 1) * w + count[r - 1] - 1 for r, s in zip(rows, slots)]
        fixed = [r for r in stale if count[r] == w]  # refresh those slots with the real token (output unused)
        stale = [r for r in stale if count[r] < w] + [r - 1 for r, f in zip(rows, feed) if count[r] == 0
                                                     and count[r - 1] < w]
        slots_all = slots + [(r + 1) * w - 1 for r in fixed]
        feed += [(r + 1) * w - 1 for r in fixed]
        pos = torch.tensor(slots_all, device=dev) + cls
        written[pos] = True
        mask = written[None, :] & (torch.arange(c.max_len, device=dev)[None, :] <= pos[:, None])
        tokens = out[:, torch.tensor(feed, device=dev)]
        logits = model.decode_step(double(tokens, use_cfg), pos, caches, mask.view(1, 1, len(pos), -1))
        draw(logits[:, : len(rows)], [s + 1 for s in slots])
        for r in rows:
            count[r] += 1
    return out.view(B, h, w)
