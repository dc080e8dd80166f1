"""VAR's multi-scale residual VQ tokenizer (Tian et al. 2024), with a training recipe.

Encoding quantises the residual of the feature map at a list of scales
``pn_1 < ... < pn_K`` with one shared codebook::

    f_rest = f; f_hat = 0
    for k, pn in enumerate(scales):
        idx_k = nearest(area_down(f_rest, pn))          # (B, pn, pn)
        h = phi_k(bicubic_up(embed(idx_k), grid))      # phi: h <- (1-r) h + r conv3x3(h)
        f_hat += h; f_rest -= h

The generator predicts ``idx_{k+1}`` from the teacher-forcing input
``area_down(f_hat after k scales, pn_{k+1})``.

Training recipe (what the official code lacks): the codebook is initialised by
k-means on features of *every* scale, hit counts are kept per scale
(``quantize.usage_SV``, reported as usage/perplexity per scale), and dead codes
are restarted from residuals drawn in equal numbers from each scale, so the
small scales, which see only a handful of vectors per image, keep their share
of the codebook instead of collapsing onto a few codes.
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
class MSVQConfig(CodebookConfig):
    scales: tuple[int, ...] = (1, 2, 3, 4)  # side of each scale's token map, coarse to fine; last = grid
    num_phi: int = 4                         # phi convs shared across scales (VAR: 4)
    phi_ratio: float = 0.5                   # h <- (1 - r) h + r conv(h)

    def __post_init__(self):
        super().__post_init__()
        check(len(self.scales) >= 1 and all(a < b for a, b in zip(self.scales, self.scales[1:])),
              f"scales must be strictly increasing, got {self.scales}")
        check(self.scales[-1] == self.grid[0],
              f"the last scale ({self.scales[-1]}) must equal the token grid ({self.grid[0]} = image_size / downsample)")
        check(self.num_phi >= 1, f"num_phi must be >= 1, got {self.num_phi}")
        used = {phi_index(i, len(self.scales), self.num_phi) for i in range(len(self.scales))}
        # An unused phi conv would get no gradient (and DDP refuses parameters without one).
        check(len(used) == self.num_phi,
              f"num_phi={self.num_phi} leaves phi conv(s) {sorted(set(range(self.num_phi)) - used)} unused with "
              f"{len(self.scales)} scales; use num_phi <= {len(used)}")

    @property
    def num_tokens(self) -> int:
        return sum(p * p for p in self.scales)


def phi_index(si: int, num_scales: int, num_phi: int) -> int:
    """Which phi conv serves scale ``si``: the nearest of ``num_phi`` evenly spaced ticks to si / (K - 1)."""
    if (num_scales, num_phi) == (10, 4):
        return (0, 0, 1, 1, 1, 2, 2, 3, 3, 3)[si]  # VAR's table; scale 2 is a float tie there
    if num_phi == 1 or num_scales == 1:
        return 0
    ratio = si / (num_scales - 1)
    ticks = [(1 / 3 + i * (num_phi - 2 / 3) / (num_phi - 1)) / num_phi for i in range(num_phi)]
    return min(range(num_phi), key=lambda i: abs(ticks[i] - ratio))


class Phi(nn.Module):
    def __init__(self, dim: int, ratio: float):
        super().__init__()
        self.ratio = ratio
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, h_BChw: torch.Tensor) -> torch.Tensor:
        return h_BChw * (1 - self.ratio) + self.conv(h_BChw) * self.ratio


class PhiSet(nn.Module):
    def __init__(self, n: int, dim: int, ratio: float):
        super().__init__()
        self.qresi_ls = nn.ModuleList(Phi(dim, ratio) for _ in range(n))


class MultiScaleQuantizer(Codebook):
    def __init__(self, c: MSVQConfig):
        super().__init__(c.codebook_size, c.z_channels, num_scales=len(c.scales), usage_decay=c.usage_decay)
        self.scales = c.scales
        self.quant_resi = PhiSet(c.num_phi, c.z_channels, c.phi_ratio)
        self._phi_idx = [phi_index(i, len(c.scales), c.num_phi) for i in range(len(c.scales))]

    def embed_scale(self, idx_Bhw: torch.Tensor, si: int) -> torch.Tensor:
        """Scale ``si``'s contribution to f_hat: embed, upsample to the grid, phi. -> (B, C, H, W)."""
        H = self.scales[-1]
        h = self.lookup(idx_Bhw).permute(0, 3, 1, 2)
        if si != len(self.scales) - 1:
            h = F.interpolate(h, size=(H, H), mode="bicubic")
        return self.quant_resi.qresi_ls[self._phi_idx[si]](h)

    def quantize(self, f_BCHW: torch.Tensor, train: bool = False):
        """Residual quantisation of f. Returns (f_hat with straight-through grad, [idx per scale], vq loss,
        [pre-quantisation residual vectors per scale])."""
        f_rest = f_BCHW.detach().clone()
        f_hat = torch.zeros_like(f_rest)
        idx_list, rests, loss = [], [], f_BCHW.new_zeros(())
        K = len(self.scales)
        for si, pn in enumerate(self.scales):
            rest = F.interpolate(f_rest, size=(pn, pn), mode="area") if si != K - 1 else f_rest
            rest_NC = rest.permute(0, 2, 3, 1).reshape(-1, rest.shape[1])
            idx = self.nearest(rest_NC).view(-1, pn, pn)
            h = self.embed_scale(idx, si)
            f_hat = f_hat + h
            f_rest = f_rest - h.detach()
            idx_list.append(idx)
            rests.append(rest_NC)
            if train:
                self.record_usage(idx, si)
                # VAR's loss: commitment pulls f to f_hat, codebook term pulls f_hat (codes, phi) to f.
                loss = loss + F.mse_loss(f_hat.detach(), f_BCHW) * self.beta + F.mse_loss(f_hat, f_BCHW.detach())
        f_hat_st = f_BCHW + (f_hat - f_BCHW).detach() if train else f_hat
        return f_hat_st, idx_list, loss / K, rests


@register_model
class MultiScaleVQ(CodebookTraining, Tokenizer):
    """Images (B, C, H, W) in [-1, 1] <-> list of K index maps [(B, pn_k, pn_k)]."""

    config_class = MSVQConfig

    def __init__(self, config: MSVQConfig):
        super().__init__()
        self.config = c = config
        self.encoder, self.decoder = build_autoencoder(c)
        self.losses = build_extra_losses(c)  # adversarial / perceptual terms; empty unless enabled
        self.quant_conv = nn.Conv2d(c.z_channels, c.z_channels, 3, padding=1)
        self.post_quant_conv = nn.Conv2d(c.z_channels, c.z_channels, 3, padding=1)
        self.quantize = MultiScaleQuantizer(c)
        self.quantize.beta = c.beta
        # Counts training steps so the restart schedule survives save/resume with the weights.
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))

    # ---- protocol -------------------------------------------------------------------------------
    @property
    def token_spec(self) -> TokenSpec:
        return TokenSpec("multiscale", self.grid, vocab_size=self.codebook_size, token_dim=self.token_dim,
                         scales=self.scales)

    @property
    def scales(self) -> tuple[int, ...]:
        return self.config.scales

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def token_dim(self) -> int:
        """Width of the teacher-forcing input vectors the generator reads."""
        return self.config.z_channels

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(images))

    @torch.no_grad()
    def encode_scales(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.quantize.quantize(self.features(images))[1]

    encode = encode_scales

    @torch.no_grad()
    def decode_fhat(self, f_hat: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(f_hat)).clamp(-1, 1)

    def fhat_from_scales(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        return sum(self.quantize.embed_scale(idx, si) for si, idx in enumerate(idx_list))

    @torch.no_grad()
    def decode_scales(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        return self.decode_fhat(self.fhat_from_scales(idx_list))

    decode = decode_scales

    def next_scale_input(self, f_hat: torch.Tensor, si: int) -> torch.Tensor:
        """Input of scale si + 1 given f_hat accumulated over scales 0..si: (B, pn_{si+1}^2, C)."""
        pn = self.scales[si + 1]
        return F.interpolate(f_hat, size=(pn, pn), mode="area").flatten(2).transpose(1, 2)

    @torch.no_grad()
    def teacher_forcing_input(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        """Inputs of scales 1..K-1 for next-scale training: (B, L - 1, C) with L = sum pn^2."""
        f_hat = torch.zeros(idx_list[0].shape[0], self.token_dim, *self.grid, device=idx_list[0].device)
        out = []
        for si in range(len(self.scales) - 1):
            f_hat = f_hat + self.quantize.embed_scale(idx_list[si], si)
            out.append(self.next_scale_input(f_hat, si))
        return torch.cat(out, 1)

    # ---- training -------------------------------------------------------------------------------
    def loss(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        images = batch[0]
        c = self.config
        f = self.features(images)
        f_hat, idx_list, vq_loss, rests = self.quantize.quantize(f, train=self.training)
        rec = self.decoder(self.post_quant_conv(f_hat))
        rl = recon_loss(c.recon_loss, rec, images)
        extra, metrics = self.losses(images, rec, rl, self.decoder.conv_out.weight, int(self.train_steps))
        metrics.update(rec=float(rl.detach()), vq=float(vq_loss.detach()))
        if self.restart_due():
            self.quantize.keep_candidates(rests)
        for si, idx in enumerate(idx_list):
            metrics[f"usage_s{si}"] = usage_stats(idx, c.codebook_size)["usage"]
        return rl + vq_loss + extra, metrics

    def init_vectors(self, images: torch.Tensor) -> list[torch.Tensor]:
        """k-means starts from equal numbers of vectors of every scale (``combine``): area-pooled features."""
        f = self.features(images)
        return [F.interpolate(f, size=(pn, pn), mode="area").permute(0, 2, 3, 1).reshape(-1, f.shape[1])
                for pn in self.scales]

    @staticmethod
    def combine(per_scale: list[torch.Tensor]) -> torch.Tensor:
        """Concatenate per-scale vectors after resampling each scale to the same count."""
        n = max(x.shape[0] for x in per_scale)
        out = [x[torch.randint(x.shape[0], (n,), device="cpu").to(x.device)] for x in per_scale]
        return torch.cat(out, 0)
