"""HMAR: hierarchical masked autoregression (Kumbong et al. 2025, "HMAR: Efficient Hierarchical Masked
Auto-Regressive Image Generation"; Kumbong/HMAR).

VAR's next-scale prediction made Markov, plus masked refinement inside a scale:

* **Markov across scales.** Scale k's input is VAR's: the cumulative reconstruction of scales < k,
  resized to scale k's grid (``MultiScaleVQ.next_scale_input``). That reconstruction already holds
  everything the coarser scales said, so a token attends only to tokens of its own scale
  (block-diagonal attention, not VAR's block-causal): no cross-scale KV cache, and sampling
  memory is that of the largest scale, not of the whole sequence.
* **Masked refinement inside a scale.** Each scale's input also carries its own tokens where they
  are known and a [MASK] embedding elsewhere (``token_embed`` row ``vocab_size``). Training masks a
  random fraction of every scale (MaskGIT's cosine schedule, at least one token) and predicts the
  masked tokens; sampling predicts a scale in one shot or in a few MaskGIT steps chosen at
  sampling time (``argen.sampling.hmar``), with no retraining.

The trunk is VAR's (AdaLN blocks, names and initialisation), so ``HMAR`` extends ``VAR``.
``scale_loss="lognormal"`` re-weights the scales' losses by a log-normal profile over the scale
index instead of weighting every masked token alike (where the finest scales dominate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from argen.config import check
from argen.generators.var import VAR, VARConfig
from argen.nn import shard
from argen.registry import register_model

SCALE_LOSSES = ("tokens", "lognormal")


@dataclass(frozen=True)
class HMARConfig(VARConfig):
    scale_loss: str = "tokens"       # "tokens": every masked token alike; "lognormal": per-scale weights below
    scale_loss_mu: float = 0.0       # log-normal profile over t_k = (k + 1) / K: weight_k ~ pdf(t_k; mu, sigma)
    scale_loss_sigma: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        check(self.scale_loss in SCALE_LOSSES, f"scale_loss must be one of {', '.join(SCALE_LOSSES)}, "
                                               f"got {self.scale_loss!r}")
        check(math.isfinite(self.scale_loss_mu) and self.scale_loss_sigma > 0,
              f"scale_loss_mu must be finite and scale_loss_sigma > 0, got {self.scale_loss_mu}, "
              f"{self.scale_loss_sigma}")

    def scale_weights(self) -> list[float]:
        """``lognormal``'s loss weight of each scale, summing to 1."""
        K = len(self.scales)
        t = [(k + 1) / K for k in range(K)]
        pdf = [math.exp(-(math.log(x) - self.scale_loss_mu) ** 2 / (2 * self.scale_loss_sigma ** 2)) / x for x in t]
        return [w / sum(pdf) for w in pdf]


@register_model
class HMAR(VAR):
    config_class = HMARConfig
    family = "hmar"
    consumes = "multiscale"
    likelihood = False  # trained by masked prediction: the loss is not a likelihood
    counted: ClassVar[dict[str, str]] = {"forward_calls": "blocks.0"}

    def __init__(self, config: HMARConfig):
        super().__init__(config)
        c = config
        # A scale's own tokens where known, row vocab_size ([MASK]) elsewhere.
        self.token_embed = nn.Embedding(c.vocab_size + 1, c.width)
        nn.init.trunc_normal_(self.token_embed.weight, std=math.sqrt(1 / c.width / 3))
        # Block-diagonal: a token sees its own scale only (the coarser ones reach it through the input).
        lvl = self.lvl_1L[0]
        self.attn_bias_for_masking = torch.where(lvl[:, None] == lvl[None, :], 0.0, float("-inf"))[None, None]

    @property
    def mask_id(self) -> int:
        return self.config.vocab_size

    def scale_logits(self, base_BlC: torch.Tensor, idx_Bl: torch.Tensor, cond_BC: torch.Tensor) -> torch.Tensor:
        """One scale on its own: its input ``base`` (``first_input`` or ``embed_input``) plus its tokens so
        far (``mask_id`` where not known) -> float32 logits (B, l, V). No mask, no cache: a whole block."""
        return self.trunk(base_BlC + self.token_embed(idx_Bl), cond_BC).float()

    def forward(self, labels_B: torch.Tensor, x_BLCv_wo_first_l: torch.Tensor, idx_BL: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, L, V) of every scale at once: ``idx_BL`` holds each scale's known tokens
        and ``mask_id`` elsewhere; the block-diagonal mask keeps the scales apart."""
        cond = self.cond_embed(labels_B)
        x = self.teacher_inputs(cond, x_BLCv_wo_first_l) + self.token_embed(idx_BL)
        L = self.config.seq_len
        return self.trunk(x, cond, mask=self.attn_bias_for_masking[:, :, :L, :L]).float()

    def random_mask(self, B: int, device) -> torch.Tensor:
        """(B, L) bool, true = masked: per image and scale a fraction cos(pi u / 2), u ~ U(0, 1), of the
        scale's tokens at random (at least one), as MaskGIT trains. Drawn for the whole global batch of
        which ``B`` rows are this shard's (``shard.local`` keeps them): the loss divides by global counts."""
        masked = []
        for pn in self.config.scales:
            n = pn * pn
            r = torch.cos(math.pi / 2 * shard.rand(B, 1, device=device, whole=True))
            count = (r * n).ceil().clamp(min=1)
            rank = shard.rand(B, n, device=device, whole=True).argsort(1).argsort(1)
            masked.append(rank < count)
        return torch.cat(masked, 1)

    def loss(self, tokens: dict[str, torch.Tensor], labels_B: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy of the masked tokens, each scale weighted by ``scale_weights`` over its masked count."""
        c = self.config
        labels_B = self.drop_labels(labels_B)
        target = tokens["target_BL"]
        masked_all = self.random_mask(*target.shape[:1], target.device)
        masked = shard.local(masked_all)
        logits = self(labels_B, tokens["x_BLCv_wo_first_l"], target.masked_fill(masked, self.mask_id))
        ce_BL = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view_as(target)
        ce = shard.mean((ce_BL * masked).sum(), masked_all.sum())
        loss = ce
        if c.scale_loss == "lognormal":  # each scale's mean over its masked tokens, weighted
            loss = sum(w * shard.mean((ce_BL[:, b:e] * masked[:, b:e]).sum(), masked_all[:, b:e].sum())
                       for (b, e), w in zip(c.begin_ends, c.scale_weights()))
        with torch.no_grad():
            b, e = c.begin_ends[-1]
            hit = (logits[:, b:e].argmax(-1) == target[:, b:e]) & masked[:, b:e]
            acc_last = hit.sum() / masked[:, b:e].sum()
        return loss, {"ce_masked": float(ce.detach()), "acc_last_scale": float(acc_last)}
