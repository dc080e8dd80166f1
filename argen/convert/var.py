"""Official VAR (FoundationVision/VAR ``var_d16.pth`` ... ``var_d30.pth``, ``vae_ch160v4096z32.pth``) -> argen.

Transformer: argen's ``VAR`` keeps the official parameter names (``tests/data/layouts/var-d16.tsv``),
so the key map is the identity; the buffers the official model saves (``lvl_1L``, the
block-causal ``attn_bias_for_masking``, the all-zero ``zero_k_bias``) are recomputed by argen and
skipped by name. Released files are raw state dicts; ``train.py`` checkpoints hold the weights at
``trainer.var_wo_ddp`` beside an ``args`` object, which is never unpickled: such a file is refused.

Tokenizer: argen's ``MultiScaleVQ`` keeps the LDM names of the official VQVAE
(``tests/data/layouts/var-vqvae.tsv``, fused ``qkv`` attention included); only the phi convs
move, from ``qresi_ls.{i}.weight`` to ``qresi_ls.{i}.conv.weight``. The official hit counter
``ema_vocab_hit_SV`` is not kept: argen starts its own usage statistics.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from argen.convert.common import CODEBOOK_BUFFERS, IDENTITY, Official, convert_files, require
from argen.errors import ConvertError
from argen.registry import CONVERTERS

BUFFERS = (r"lvl_1L", r"attn_bias_for_masking", r"blocks\.\d+\.attn\.zero_k_bias")


def identify(sd: dict[str, torch.Tensor], path: Path) -> str:
    require(sd, path, "VAR", ["blocks.0.attn.mat_qkv.weight", "word_embed.weight"])
    depth = len({m.group(1) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
    if depth not in (16, 20, 24, 30):
        raise ConvertError(f"{path}: a VAR of depth {depth}; argen has the official d16, d20, d24 and d30")
    return f"var-d{depth}"


def identify_vae(sd: dict[str, torch.Tensor], path: Path) -> str:
    require(sd, path, "VAR VQVAE", ["quantize.quant_resi.qresi_ls.0.weight", "encoder.down.4.attn.0.qkv.weight"])
    return "var-vqvae"


GENERATOR = Official(identify, candidates=("", "trainer.var_wo_ddp"), ignore=BUFFERS)
TOKENIZER = Official(identify_vae, candidates=("",), ignore=(r"quantize\.ema_vocab_hit_SV",),
                     rules=((r"(quantize\.quant_resi\.qresi_ls\.\d+)\.(weight|bias)", r"\1.conv.\2"), *IDENTITY),
                     fresh=CODEBOOK_BUFFERS)


def convert(checkpoint, vae, out, ema: bool = True) -> dict:
    # the released VAR files hold one set of weights, so ``ema`` has nothing to choose
    return convert_files(out, "var", checkpoint=checkpoint, vae=vae, generator=GENERATOR, tokenizer=TOKENIZER)


CONVERTERS.add("var", convert)
