"""Official MAR (LTH14/mar ``checkpoint-last.pth`` of MAR-B/L/H, ``kl16.ckpt``) -> argen.

Transformer: argen's ``MAR`` keeps the official parameter names (``tests/data/layouts/mar-b.tsv``),
so the key map is the identity. The file is ``{"model", "model_ema", "optimizer", "epoch",
"scaler", "args"}`` with ``args`` an ``argparse.Namespace``: that one class is allow-listed,
nothing else is unpickled. ``model_ema`` is taken (the official sampler uses it) unless
``ema=False``.

Tokenizer: ``kl16.ckpt["model"]`` is LDM's AutoencoderKL (``tests/data/layouts/mar-kl16-vae.tsv``);
argen's ``KLTokenizer`` has the same names except that its attention fuses the separate
``q``/``k``/``v`` 1x1 convs into one ``qkv``. Its decoder attends in the middle block only, which
the ``mar-kl16`` preset states (``decoder_level_attn=False``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from argen.convert.common import Official, convert_files, require
from argen.errors import ConvertError
from argen.registry import CONVERTERS

_SIZES = {12: "mar-b", 16: "mar-l", 20: "mar-h"}


def identify(sd: dict[str, torch.Tensor], path: Path) -> str:
    require(sd, path, "MAR", ["encoder_blocks.0.attn.qkv.weight", "diffloss.net.input_proj.weight"])
    depth = sum(k.endswith(".attn.qkv.weight") and k.startswith("encoder_blocks.") for k in sd)
    if depth not in _SIZES:
        raise ConvertError(f"{path}: a MAR with {depth} encoder blocks; argen has MAR-B (12), -L (16) and -H (20)")
    return _SIZES[depth]


def identify_vae(sd: dict[str, torch.Tensor], path: Path) -> str:
    require(sd, path, "MAR KL-16", ["encoder.mid.attn_1.q.weight", "post_quant_conv.weight"])
    if sd["post_quant_conv.weight"].shape[:2] != (16, 16):
        raise ConvertError(f"{path}: a KL autoencoder with {sd['post_quant_conv.weight'].shape[1]} latent channels; "
                           "argen has MAR's KL-16")
    return "mar-kl16"


TOKENIZER = Official(identify_vae, candidates=("model", ""), fuse_qkv=True)


def convert(checkpoint, vae, out, ema: bool = True) -> dict:
    generator = Official(identify, candidates=("model_ema", "model", "") if ema else ("model", ""),
                         allow=(argparse.Namespace,))
    return convert_files(out, "mar", checkpoint=checkpoint, vae=vae, generator=generator, tokenizer=TOKENIZER)


CONVERTERS.add("mar", convert)
