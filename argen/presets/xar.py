"""xAR presets: next-cell and next-scale prediction with a flow head on the KL tokenizers of digits and
Fashion-MNIST, sized like the MAR flow presets."""

from __future__ import annotations

from argen.generators.xar import XARConfig
from argen.presets.budgets import FMNIST_TRAIN
from argen.registry import preset

_TINY = dict(num_classes=10, width=128, depth=4, heads=4, head_width=192, head_depth=3, head_batch_mul=2,
             label_drop=0.1, context_noise=0.5)
_TRAIN_DIGITS = dict(steps=1500, batch_size=64, lr=1e-3, warmup=100, ema=0.998, weight_decay=0.02, grad_clip=3.0)
_TRAIN_FMNIST = dict(FMNIST_TRAIN, weight_decay=0.02, grad_clip=3.0)  # MAR's recipe


@preset("xar-digits", "generator", data="digits", train=_TRAIN_DIGITS, sampler=dict(head_steps=8, cfg=1.0),
        description="xAR (next-scale 1-2-4 with a flow head) for 8x8 digits on kl-digits (grid 4x4, 4 channels)")
def xar_digits() -> XARConfig:
    return XARConfig(token_dim=4, grid=(4, 4), unit="scale", scales=(1, 2, 4), **_TINY)


@preset("xar-fmnist", "generator", data="fashion-mnist", train=_TRAIN_FMNIST, sampler=dict(head_steps=8, cfg=1.0),
        description="xAR (next-scale 1-2-3-5-7 with a flow head) for Fashion-MNIST on kl-fmnist (grid 7x7, 8 ch)")
def xar_fmnist() -> XARConfig:
    return XARConfig(token_dim=8, grid=(7, 7), unit="scale", scales=(1, 2, 3, 5, 7), **_TINY)


@preset("xar-token-fmnist", "generator", data="fashion-mnist", train=_TRAIN_FMNIST,
        sampler=dict(head_steps=8, cfg=1.0),
        description="xAR with X = one token (49 steps) and a flow head for Fashion-MNIST on kl-fmnist")
def xar_token_fmnist() -> XARConfig:
    return XARConfig(token_dim=8, grid=(7, 7), unit="cell", cell=1, **_TINY)
