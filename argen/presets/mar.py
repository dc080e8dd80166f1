"""MAR presets: tiny diffusion- and flow-head ones for digits and Fashion-MNIST, and the official MAR-B/L/H."""

from __future__ import annotations

from argen.generators.conditions import MAX_PROMPTS
from argen.generators.mar import MARConfig
from argen.presets.budgets import FMNIST_TRAIN, SHAPES_TEXT, SHAPES_TRAIN
from argen.registry import preset


def mar_official(size: str = "B") -> MARConfig:
    """The official ImageNet 256 px MAR-{B, L, H} on KL-16 (16x16 tokens of 16 channels, learned sigma)."""
    sizes = {"B": (768, 12, 12, 1024, 6), "L": (1024, 16, 16, 1280, 8), "H": (1280, 20, 16, 1536, 12)}
    if size not in sizes:
        raise ValueError(f"size must be one of {sorted(sizes)}, got {size!r}")
    width, depth, heads, head_width, head_depth = sizes[size]
    return MARConfig(width=width, depth=depth, heads=heads, head_width=head_width, head_depth=head_depth,
                     learn_sigma=True, diffusion_clip_x0=0.0)


def _mar_tiny(grid: tuple[int, int], token_dim: int, width: int, depth: int, head: str, **head_kw) -> MARConfig:
    return MARConfig(token_dim=token_dim, grid=grid, num_classes=10, width=width, depth=depth, heads=4,
                     buffer_size=4, attn_dropout=0.1,
                     proj_dropout=0.1, head=head, **{"head_width": 2 * width, "head_depth": 3, **head_kw})


# The head dominates MAR's cost (every masked token x batch_mul noise draws x every head layer), and
# Fashion-MNIST has 3x the tokens of digits: a narrower head with 2 draws per token keeps a training
# step within the budget of the other families (by FLOP count ~3.5x cheaper than width 256 x 4 draws).
_FMNIST_HEAD = {"head_width": 192, "head_batch_mul": 2}


_TRAIN_DIGITS = dict(steps=1500, batch_size=64, lr=1e-3, warmup=100, ema=0.998, weight_decay=0.02, grad_clip=3.0)
_TRAIN_FMNIST = dict(FMNIST_TRAIN, weight_decay=0.02, grad_clip=3.0)  # MAR's recipe: wd 0.02, clip 3


@preset("mar-digits", "generator", data="digits", train=_TRAIN_DIGITS,
        sampler=dict(ar_steps=8, head_steps=50, cfg=1.0),
        description="MAR with a diffusion head for 8x8 digits on kl-digits (grid 4x4, 4 channels): 2+2 x 128")
def mar_digits() -> MARConfig:
    return _mar_tiny((4, 4), 4, 128, 2, "diffusion")


@preset("mar-flow-digits", "generator", data="digits", train=_TRAIN_DIGITS,
        sampler=dict(ar_steps=8, head_steps=8, cfg=1.0),
        description="MAR with a flow-matching head for 8x8 digits on kl-digits: 2+2 x 128")
def mar_flow_digits() -> MARConfig:
    return _mar_tiny((4, 4), 4, 128, 2, "flow")


@preset("mar-fmnist", "generator", data="fashion-mnist", train=_TRAIN_FMNIST,
        sampler=dict(ar_steps=16, head_steps=50, cfg=1.0),
        description="MAR with a diffusion head for Fashion-MNIST on kl-fmnist (grid 7x7, 8 channels): 2+2 x 128")
def mar_fmnist() -> MARConfig:
    return _mar_tiny((7, 7), 8, 128, 2, "diffusion", **_FMNIST_HEAD)


@preset("mar-flow-fmnist", "generator", data="fashion-mnist", train=_TRAIN_FMNIST,
        sampler=dict(ar_steps=16, head_steps=8, cfg=1.0),
        description="MAR with a flow-matching head for Fashion-MNIST on kl-fmnist: 2+2 x 128")
def mar_flow_fmnist() -> MARConfig:
    return _mar_tiny((7, 7), 8, 128, 2, "flow", **_FMNIST_HEAD)


# The official ImageNet 256 px models, for converted checkpoints (`argen convert --from mar`). Sampler:
# 100 diffusion steps and MAR's linear cfg (argen's weight w is MAR's scale minus 1: 2.9 / 3.0 / 3.2),
# with 64 AR steps instead of the paper's 256, a quarter of the time.
for _size, _scale in (("B", 2.9), ("L", 3.0), ("H", 3.2)):
    preset(f"mar-{_size.lower()}", "generator", data="imagenet",
             sampler=dict(ar_steps=64, head_steps=100, cfg=_scale - 1.0, cfg_schedule="linear"),
             description=f"official MAR-{_size} (ImageNet 256 px on KL-16, diffusion head)")(
        lambda s=_size: mar_official(s))


@preset("mar-shapes", "generator", data="shapes", train=dict(SHAPES_TRAIN, weight_decay=0.02, grad_clip=3.0),
        sampler=dict(ar_steps=16, head_steps=8, cfg=2.0),
        description="text-to-image MAR with a flow head (caption tokens in the buffer) for shapes scenes on "
                    "kl-shapes (grid 8x8, 4 channels), built-in caption encoder: 2+2 x 128")
def mar_shapes() -> MARConfig:
    # no dropout, as the other shapes presets: the budget is too short to overfit
    return _mar_tiny((8, 8), 4, 128, 2, "flow", **_FMNIST_HEAD).replace(
        num_classes=MAX_PROMPTS, buffer_size=SHAPES_TEXT["max_tokens"], text=SHAPES_TEXT, attn_dropout=0.0,
        proj_dropout=0.0)
