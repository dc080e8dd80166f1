"""HMAR presets: the VAR presets' networks, Markov across scales with masked refinement inside each.

The default sampler predicts each scale in one shot: on Fashion-MNIST, 2 or 4 refinement steps per scale
scored no better on validation FD for either of two seeds (benchmarks/compare_families.py --sweep; README)."""

from __future__ import annotations

from argen.generators.hmar import HMARConfig
from argen.presets.budgets import FMNIST_TRAIN
from argen.presets.var import var_digits, var_fmnist
from argen.registry import preset


@preset("hmar-digits", "generator", data="digits",
        train=dict(steps=1000, batch_size=64, lr=1e-3, warmup=100, ema=0.998, weight_decay=0.05),
        sampler=dict(cfg=1.0, refine_steps=1),
        description="HMAR (Markov next-scale + masked refinement) for 8x8 digits on msvq-digits: dim 128, 4 layers")
def hmar_digits() -> HMARConfig:
    return HMARConfig(**var_digits().to_dict())


@preset("hmar-fmnist", "generator", data="fashion-mnist", train=FMNIST_TRAIN, sampler=dict(cfg=1.0, refine_steps=1),
        description="HMAR (Markov next-scale + masked refinement) for Fashion-MNIST on msvq-fmnist (6 scales to 7x7): "
                    "dim 128, 4 layers")
def hmar_fmnist() -> HMARConfig:
    return HMARConfig(**var_fmnist().to_dict())
