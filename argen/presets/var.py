"""VAR presets: tiny ones for digits and Fashion-MNIST, and the official ImageNet VAR-d16 .. d30."""

from __future__ import annotations

from argen.generators.conditions import MAX_PROMPTS
from argen.generators.var import VARConfig
from argen.presets.budgets import FMNIST_TRAIN, SHAPES_TEXT, SHAPES_TRAIN
from argen.registry import preset


def var_official(depth: int) -> VARConfig:
    """The official ImageNet 256 px architecture at a given depth (d16, d20, d24, d30)."""
    return VARConfig(depth=depth, width=64 * depth, heads=depth, drop_path=0.1 * depth / 24)


@preset("var-digits", "generator", data="digits",
        train=dict(steps=1000, batch_size=64, lr=1e-3, warmup=100, ema=0.998, weight_decay=0.05),
        sampler=dict(cfg=1.0),
        description="VAR for 8x8 digits on msvq-digits (scales 1-2-3-4, 64 codes): depth 4, width 128")
def var_digits() -> VARConfig:
    return VARConfig(vocab_size=64, token_dim=16, scales=(1, 2, 3, 4), depth=4, width=128, heads=4,
                     num_classes=10, label_drop=0.1, drop_path=0.0, aln_gamma_init=0.1)


@preset("var-fmnist", "generator", data="fashion-mnist", train=FMNIST_TRAIN, sampler=dict(cfg=1.0),
        description="VAR for Fashion-MNIST on msvq-fmnist (scales 1-2-3-4-5-7, 256 codes): depth 4, width 128")
def var_fmnist() -> VARConfig:
    return VARConfig(vocab_size=256, token_dim=32, scales=(1, 2, 3, 4, 5, 7), depth=4, width=128, heads=4,
                     num_classes=10, label_drop=0.1, drop_path=0.0, aln_gamma_init=0.1)


@preset("var-fmnist-small", "generator", data="fashion-mnist", train=FMNIST_TRAIN, sampler=dict(cfg=1.0),
        description="small VAR for Fashion-MNIST on msvq-fmnist: depth 2, width 96 (0.4M parameters, var-fmnist "
                    "1.3M); var-fmnist's refiner for CoDe (--sampler code), see docs/var-code.md")
def var_fmnist_small() -> VARConfig:
    return var_fmnist().replace(depth=2, width=96, heads=3)


# The official ImageNet 256 px models, for converted checkpoints (`argen convert --from var`); sampler:
# the official FID settings (cfg 1.5 on a linear ramp over scales, top-k 900, top-p 0.96).
for _depth in (16, 20, 24, 30):
    preset(f"var-d{_depth}", "generator", data="imagenet",
             sampler=dict(cfg=1.5, cfg_schedule="linear", top_k=900, top_p=0.96),
             description=f"official VAR-d{_depth} (ImageNet 256 px, 680 tokens, 4096 codes)")(
        lambda d=_depth: var_official(d))


@preset("var-shapes", "generator", data="shapes", train=SHAPES_TRAIN, sampler=dict(cfg=2.0),
        description="text-to-image VAR (cross-attention to the caption, pooled caption in AdaLN) for shapes scenes "
                    "on msvq-shapes (scales 1-2-3-4-6-8), built-in caption encoder: depth 6, width 128")
def var_shapes() -> VARConfig:
    return VARConfig(vocab_size=128, token_dim=32, scales=(1, 2, 3, 4, 6, 8), depth=6, width=128, heads=4,
                     num_classes=MAX_PROMPTS, label_drop=0.1, drop_path=0.0, aln_gamma_init=0.1, text=SHAPES_TEXT)
