"""Optional loss terms for natural images: a PatchGAN adversarial loss and a VGG perceptual loss.

Digits need neither (reconstruction + commitment is enough); photos look blurry without them.

Adversarial (taming-transformers / VQGAN): a PatchGAN discriminator with hinge loss,
switched on after ``disc_start`` steps, its generator term weighted adaptively by
||grad rec|| / ||grad adv|| at the decoder's last layer. To keep argen's single
optimizer and single ``loss(batch)``, both players share one backward pass:

* the discriminator sees *detached* reconstructions, so its hinge loss trains only it;
* the generator term runs the discriminator with *detached parameters*
  (``torch.func.functional_call``), so it trains only the autoencoder.

Perceptual: distances between unit-normalised VGG16 feature maps (LPIPS without its
learned linear heads). No weights are downloaded: pass the path of a torchvision
``vgg16`` state dict (``features.*`` keys) in safetensors format as ``perceptual_weights``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from argen.errors import CheckpointError


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix): strided convs -> a map of real/fake logits, one per receptive-field patch."""

    def __init__(self, in_ch: int, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_ch, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = ndf
        for i in range(1, n_layers + 1):
            nxt = ndf * min(2 ** i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(ch, nxt, 4, stride, 1, bias=False), nn.GroupNorm(min(32, nxt), nxt), nn.LeakyReLU(0.2)]
            ch = nxt
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.main(x_BCHW)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adversarial_terms(disc: PatchDiscriminator, real: torch.Tensor, rec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(discriminator loss: trains only ``disc``; generator loss: trains only what made ``rec``)."""
    d_loss = hinge_d_loss(disc(real.detach()), disc(rec.detach()))
    frozen = {k: v.detach() for k, v in disc.named_parameters()}
    g_loss = -functional_call(disc, frozen, (rec,)).mean()
    return d_loss, g_loss


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    max_weight: float = 1e4) -> torch.Tensor:
    """||d rec / d w_last|| / ||d g / d w_last|| (VQGAN), detached and clamped."""
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_adv = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, max_weight).detach()


# VGG16 ``features`` conv layers (out channels; "M" = max-pool); taps after relu1_2 .. relu5_3.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_TAPS = (3, 8, 15, 22, 29)  # indices (in torchvision's ``features``) of the ReLUs whose outputs are compared


class VGGPerceptual(nn.Module):
    """Mean squared distance of channel-normalised VGG16 features at five depths (frozen)."""

    def __init__(self, weights_path: str | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        ch = 3
        for v in _VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(ch, v, 3, padding=1), nn.ReLU()]
                ch = v
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        if weights_path is not None:
            from safetensors.torch import load_file

            try:
                sd = {k.removeprefix("features."): v for k, v in load_file(weights_path).items()
                      if k.startswith("features.")}
                self.features.load_state_dict(sd, strict=True)
            except (OSError, RuntimeError, ValueError) as e:
                raise CheckpointError(f"perceptual_weights {weights_path}: not a VGG16 state dict "
                                      f"({str(e).splitlines()[0]})") from None
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True):
        return super().train(False)  # always frozen

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:  # grayscale -> RGB
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        h = torch.cat([x, y]).add(1).div(2).sub(self.mean).div(self.std)
        loss = x.new_zeros(())
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _TAPS:
                hx, hy = F.normalize(h, dim=1).chunk(2)
                loss = loss + (hx - hy).pow(2).sum(1).mean()
            if i == _TAPS[-1]:
                break
        return loss


class ExtraLosses(nn.Module):
    """The optional terms a tokenizer adds to reconstruction + commitment, built from its config."""

    def __init__(self, image_channels: int, adv_weight: float, disc_start: int, disc_ndf: int,
                 perceptual_weight: float, perceptual_weights: str | None):
        super().__init__()
        self.adv_weight, self.disc_start, self.perceptual_weight = adv_weight, disc_start, perceptual_weight
        self.disc = PatchDiscriminator(image_channels, disc_ndf) if adv_weight > 0 else None
        # Kept out of the module tree: frozen, never saved with the tokenizer.
        self._vgg = [VGGPerceptual(perceptual_weights)] if perceptual_weight > 0 else []

    def forward(self, images: torch.Tensor, rec: torch.Tensor, rec_loss: torch.Tensor, last_layer: torch.Tensor,
                step: int) -> tuple[torch.Tensor, dict[str, float]]:
        total, metrics = rec.new_zeros(()), {}
        if self._vgg:
            vgg = self._vgg[0].to(rec.device)
            p = vgg(rec, images)
            total = total + self.perceptual_weight * p
            metrics["perceptual"] = float(p.detach())
        if self.disc is not None and self.training:
            d_loss, g_loss = adversarial_terms(self.disc, images, rec)
            on = float(step >= self.disc_start)
            w = adaptive_weight(rec_loss, g_loss, last_layer) if on else rec.new_zeros(())
            total = total + on * (d_loss + self.adv_weight * w * g_loss)
            metrics.update(d_loss=float(d_loss.detach()), g_loss=float(g_loss.detach()), adv_w=float(w))
        return total, metrics
