"""Official VAR transformers (FoundationVision/VAR ``var_d16.pth`` ... ``var_d30.pth``) -> argen.

argen's ``VAR`` keeps the official parameter names (``tests/data/layouts/var-d16.tsv``), so the
key map is the identity; the buffers the official model saves (``lvl_1L``, the block-causal
``attn_bias_for_masking``, the all-zero ``zero_k_bias``) are recomputed by argen and skipped
by name. Released files are raw state dicts; ``train.py`` checkpoints hold the weights at
``trainer.var_wo_ddp`` beside an ``args`` object, which is never unpickled: such a file is refused.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from argen.convert import ConvertError, convert_generator, require

BUFFERS = [r"lvl_1L", r"attn_bias_for_masking", r"blocks\.\d+\.attn\.zero_k_bias"]


def identify(sd: dict[str, torch.Tensor], path: Path) -> str:
    require(sd, path, "VAR", ["blocks.0.attn.mat_qkv.weight", "word_embed.weight"])
    depth = len({m.group(1) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
    if depth not in (16, 20, 24, 30):
        raise ConvertError(f"{path}: a VAR of depth {depth}; argen has the official d16, d20, d24 and d30")
    return f"var-d{depth}"


def convert(checkpoint, vae, out, ema: bool = True) -> dict:
    if vae is not None:
        raise ConvertError("--vae: converting VAR's multi-scale VQVAE is not implemented yet; convert the "
                           "transformer alone (without --vae)")
    return convert_generator(checkpoint, out, family="var", candidates=["", "trainer.var_wo_ddp"],
                             identify=identify, ignore=BUFFERS)
