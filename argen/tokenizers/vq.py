"""Single-scale VQ tokenizer (VQGAN / LlamaGen / MaskGIT style).

The encoder output is projected to a low-dimensional code space (``code_dim``,
8 in LlamaGen) where both features and codes are l2-normalised, so lookup is by
cosine similarity: this is the single most effective fix for codebook collapse
(Yu et al., ViT-VQGAN). The codebook starts from k-means on the first batch and
codes that stop being used are restarted from encoder outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from argen.config import check
from argen.registry import register_model
from argen.tokenizers.base import (
    Codebook,
    CodebookConfig,
    CodebookTraining,
    Tokenizer,
    build_autoencoder,
    build_extra_losses,
    recon_loss,
    usage_stats,
)
from argen.tokens import TokenSpec


@dataclass(frozen=True)
class VQConfig(CodebookConfig):
    code_dim: int = 8  # dimension of the l2-normalised code space

    def __post_init__(self):
        super().__post_init__()
        check(self.code_dim >= 1, f"code_dim must be >= 1, got {self.code_dim}")


@register_model
class VQTokenizer(CodebookTraining, Tokenizer):
    """Images (B, C, H, W) in [-1, 1] <-> token map (B, h, w) of codebook indices."""

    config_class = VQConfig

    def __init__(self, config: VQConfig):
        super().__init__()
        self.config = c = config
        self.encoder, self.decoder = build_autoencoder(c)
        self.losses = build_extra_losses(c)  # adversarial / perceptual terms; empty unless enabled
        self.quant_conv = nn.Conv2d(c.z_channels, c.code_dim, 1)
        self.post_quant_conv = nn.Conv2d(c.code_dim, c.z_channels, 1)
        self.quantize = Codebook(c.codebook_size, c.code_dim, l2_norm=True, usage_decay=c.usage_decay)
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))

    @property
    def token_spec(self) -> TokenSpec:
        return TokenSpec("discrete", self.grid, vocab_size=self.codebook_size)

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    def code_vectors(self) -> torch.Tensor:
        return self.quantize.codes()

    def _quantize(self, images: torch.Tensor):
        z = F.normalize(self.quant_conv(self.encoder(images)), dim=1)  # (B, D, h, w), unit vectors
        z_ND = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        idx = self.quantize.nearest(z_ND).view(z.shape[0], *z.shape[2:])
        return z, z_ND, idx

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self._quantize(images)[2]

    def init_vectors(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [self._quantize(images)[1]]

    @staticmethod
    def combine(per_scale: list[torch.Tensor]) -> torch.Tensor:
        return per_scale[0]

    def codes_to_image(self, q_BDhw: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(q_BDhw))

    @torch.no_grad()
    def decode(self, idx_Bhw: torch.Tensor) -> torch.Tensor:
        return self.codes_to_image(self.quantize.lookup(idx_Bhw).permute(0, 3, 1, 2)).clamp(-1, 1)

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        images = batch[0]
        c = self.config
        z, z_ND, idx = self._quantize(images)
        q = self.quantize.lookup(idx).permute(0, 3, 1, 2)
        vq_loss = F.mse_loss(q, z.detach()) + c.beta * F.mse_loss(z, q.detach())
        q_st = z + (q - z).detach()  # straight-through estimator
        rec = self.codes_to_image(q_st)
        rl = recon_loss(c.recon_loss, rec, images)
        extra, metrics = self.losses(images, rec, rl, self.decoder.conv_out.weight, int(self.train_steps))
        metrics.update(rec=float(rl.detach()), vq=float(vq_loss.detach()), **usage_stats(idx, c.codebook_size))
        if self.training:
            self.quantize.record_usage(idx)
            if self.restart_due():
                self.quantize.keep_candidates([z_ND])
        return rl + vq_loss + extra, metrics
