"""NAR presets: the raster presets' networks decoded by neighbours (h + w - 1 passes instead of h * w)."""

from __future__ import annotations

from argen.generators.nar import NARConfig
from argen.presets.budgets import FMNIST_TRAIN
from argen.presets.raster import raster_digits, raster_fmnist
from argen.registry import preset


@preset("nar-digits", "generator", data="digits",
        train=dict(steps=1000, batch_size=64, lr=1e-3, warmup=100, ema=0.998, weight_decay=0.05),
        sampler=dict(cfg=1.0),
        description="NAR (neighbouring AR) for 8x8 digits on vq-digits (grid 4x4, 64 codes): 7 passes, dim 128, 4 layers")
def nar_digits() -> NARConfig:
    return NARConfig(**raster_digits().to_dict())  # raster-digits' network and dropouts, for a like-for-like row


@preset("nar-fmnist", "generator", data="fashion-mnist", train=FMNIST_TRAIN, sampler=dict(cfg=1.0),
        description="NAR (neighbouring AR) for Fashion-MNIST on vq-fmnist (grid 7x7, 256 codes): 13 passes, dim 128, "
                    "4 layers")
def nar_fmnist() -> NARConfig:
    return NARConfig(**raster_fmnist().to_dict())
