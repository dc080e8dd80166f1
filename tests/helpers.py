"""Tiny model builders shared by the tests (CPU, fixed seeds, a few thousand parameters)."""

from __future__ import annotations

import math

import torch

from argen.generators.var import VAR, VARConfig
from argen.tokenizers.msvq import MSVQConfig, MultiScaleVQ
from argen.tokenizers.vq import VQConfig, VQTokenizer

# One definition of "tiny" for every test: 8x8 grey images, grid 4x4, 16 codes of width 4.
TINY_AE = {"image_channels": 1, "image_size": 8, "ch": 8, "ch_mult": (1, 2), "num_res_blocks": 1,
           "z_channels": 4, "groups": 4, "codebook_size": 16}
TINY_SCALES = (1, 2, 4)


def tiny_msvq_config(**overrides) -> MSVQConfig:
    scales = overrides.get("scales", TINY_SCALES)
    # every phi conv must serve some scale (the config refuses unused ones): one phi per scale here
    return MSVQConfig(**{**TINY_AE, "scales": TINY_SCALES, "num_phi": len(scales), **overrides})


def tiny_vq_config(**overrides) -> VQConfig:
    return VQConfig(**{**TINY_AE, "code_dim": 4, **overrides})


def tiny_msvq(seed: int = 0, spread_codebook: bool = True, **overrides) -> MultiScaleVQ:
    """A tiny multi-scale VQ in eval mode. ``spread_codebook`` replaces the default +-1/V codebook
    with N(0, 1) codes so that different tokens give clearly different features."""
    torch.manual_seed(seed)
    tok = MultiScaleVQ(tiny_msvq_config(**overrides))
    if spread_codebook:
        with torch.no_grad():
            tok.quantize.embedding.weight.normal_()
    return tok.eval()


def tiny_vq(seed: int = 0, **overrides) -> VQTokenizer:
    torch.manual_seed(seed)
    return VQTokenizer(tiny_vq_config(**overrides)).eval()


def tiny_var_config(**overrides) -> VARConfig:
    base = {"vocab_size": 16, "token_dim": 4, "scales": TINY_SCALES, "depth": 2, "width": 32, "num_heads": 2,
                "num_classes": 3, "cond_drop": 0.0, "drop_path": 0.0}
    return VARConfig(**{**base, **overrides})


@torch.no_grad()
def randomize_var(model: VAR, seed: int = 0) -> VAR:
    """Move a freshly initialised VAR away from its near-identity init (AdaLN gammas ~1e-3,
    head x 0.02), so that every block, the condition and the inputs visibly change the logits
    and equality tests have something to compare."""
    g = torch.Generator().manual_seed(seed)
    C = model.config.width

    def normal_(t: torch.Tensor, std: float, mean: float = 0.0) -> None:
        t.copy_(torch.randn(t.shape, generator=g) * std + mean)

    for b in model.blocks:
        lin = b.ada_lin[-1]
        normal_(lin.weight, 0.5)
        normal_(lin.bias, 0.5)
        normal_(lin.bias[: 2 * C], 0.3, mean=1.0)  # gammas around 1: blocks are not identity
        normal_(b.attn.q_bias, 0.3)
        normal_(b.attn.v_bias, 0.3)
    normal_(model.head_nm.ada_lin[-1].weight, 0.5)
    normal_(model.head.weight, 0.7 / math.sqrt(C))  # logits of order 1: far from uniform
    normal_(model.class_emb.weight, 1.0)
    normal_(model.word_embed.weight, 1.0 / math.sqrt(model.config.token_dim))
    return model


def tiny_var(seed: int = 0, randomize: bool = True, **overrides) -> VAR:
    torch.manual_seed(seed)
    model = VAR(tiny_var_config(**overrides))
    if randomize:
        randomize_var(model, seed)
    return model.eval()


def random_scales(batch: int, scales=TINY_SCALES, vocab: int = 16, seed: int = 0) -> list[torch.Tensor]:
    """Random index maps, one (B, pn, pn) per scale."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(vocab, (batch, pn, pn), generator=g) for pn in scales]


def random_images(batch: int, size: int = 8, channels: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, size, size, generator=g) * 2 - 1
