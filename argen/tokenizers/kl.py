"""KL autoencoder tokenizer (LDM / MAR style): images <-> continuous token maps.

The encoder predicts a diagonal Gaussian posterior per latent cell (mean and log
variance, ``quant_conv`` maps ``z_channels`` to ``2 * embed_dim`` as in LDM's
AutoencoderKL); a small KL term towards N(0, I) keeps the latent space smooth enough
for a generator to model. Tokens handed to generators are latents times
``scale_factor`` (MAR uses 0.2325 for its KL-16), so that they have roughly unit
variance; the factor is measured on the training data after training
(``fit_scale_factor``) and stored in the config, so a checkpoint folder alone decodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from argen.config import check
from argen.nn import shard
from argen.registry import register_model
from argen.tokenizers.base import ConvAEConfig, Tokenizer, build_autoencoder, build_extra_losses, recon_loss
from argen.tokens import TokenSpec


@dataclass(frozen=True)
class KLConfig(ConvAEConfig):
    embed_dim: int = 4          # channels of a continuous token (16 in MAR's KL-16)
    kl_weight: float = 1e-3     # weight of the mean per-element KL(q(z|x) || N(0, I))
    scale_factor: float = 1.0   # tokens = latents * scale_factor; measured from data after training
    logvar_clamp: float = 20.0  # |log variance| bound, as LDM, so exp() never overflows early in training
    double_z: bool = True       # encoder emits 2 * z_channels (LDM's layout; the official KL-16 has it)

    def __post_init__(self):
        super().__post_init__()
        check(self.embed_dim >= 1, f"embed_dim must be >= 1, got {self.embed_dim}")
        check(self.kl_weight >= 0, f"kl_weight must be >= 0, got {self.kl_weight}")
        check(self.scale_factor > 0, f"scale_factor must be > 0, got {self.scale_factor}")


@register_model
class KLTokenizer(Tokenizer):
    """Images (B, C, H, W) in [-1, 1] <-> continuous tokens (B, embed_dim, h, w), already scaled."""

    config_class = KLConfig

    def __init__(self, config: KLConfig):
        super().__init__()
        self.config = c = config
        z_out = 2 * c.z_channels if c.double_z else c.z_channels
        self.encoder, self.decoder = build_autoencoder(c, encoder_z_channels=z_out)
        self.losses = build_extra_losses(c)
        self.quant_conv = nn.Conv2d(z_out, 2 * c.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(c.embed_dim, c.z_channels, 1)

    @property
    def token_spec(self) -> TokenSpec:
        return TokenSpec("continuous", self.grid, token_dim=self.token_dim)

    @property
    def token_dim(self) -> int:
        return self.config.embed_dim

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log variance), each (B, embed_dim, h, w), of the unscaled latent."""
        mean, logvar = self.quant_conv(self.encoder(images)).chunk(2, dim=1)
        return mean, logvar.clamp(-self.config.logvar_clamp, self.config.logvar_clamp)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Scaled tokens (B, embed_dim, h, w): the posterior mean, or a draw from it with ``sample``
        (MAR trains its generator on draws, a cheap augmentation)."""
        mean, logvar = self.posterior(images)
        if sample:
            noise = shard.randn(*mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            mean = mean + (0.5 * logvar).exp() * noise
        return mean * self.config.scale_factor

    def latents_to_image(self, z_BChw: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z_BChw))

    @torch.no_grad()
    def decode(self, tokens_BChw: torch.Tensor) -> torch.Tensor:
        return self.latents_to_image(tokens_BChw / self.config.scale_factor).clamp(-1, 1)

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        images = batch[0]
        mean, logvar = self.posterior(images)
        z = mean + (0.5 * logvar).exp() * shard.randn_like(mean)  # reparameterised draw
        rec = self.latents_to_image(z)
        rl = recon_loss(self.config.recon_loss, rec, images)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        extra, metrics = self.losses(images, rec, rl, self.decoder.conv_out.weight, 0)
        metrics.update(rec=float(rl.detach()), kl=float(kl.detach()), latent_std=float(mean.detach().std()))
        return rl + self.config.kl_weight * kl + extra, metrics

    @torch.no_grad()
    def fit_scale_factor(self, dataset, n: int = 2048, batch_size: int = 256, device="cpu") -> float:
        """1 / std of the posterior means of (up to) ``n`` training images, the convention of LDM and MAR."""
        self.eval()
        n = min(n, len(dataset))
        means = [self.posterior(dataset.batch(torch.arange(i, min(i + batch_size, n)))[0].to(device))[0]
                 for i in range(0, n, batch_size)]
        return float(1.0 / torch.cat(means).float().std().clamp(min=1e-6))
