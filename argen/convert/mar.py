"""Official MAR checkpoints (LTH14/mar ``checkpoint-last.pth`` of MAR-B/L/H) -> argen.

argen's ``MAR`` keeps the official parameter names (``tests/data/layouts/mar-b.tsv``), so the
key map is the identity. The file is ``{"model", "model_ema", "optimizer", "epoch", "scaler",
"args"}`` with ``args`` an ``argparse.Namespace``: that one class is allow-listed, nothing else is
unpickled. ``model_ema`` is taken (the official sampler uses it) unless ``ema=False``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from argen.convert import ConvertError, convert_generator, require

_SIZES = {12: "mar-b", 16: "mar-l", 20: "mar-h"}


def identify(sd: dict[str, torch.Tensor], path: Path) -> str:
    require(sd, path, "MAR", ["encoder_blocks.0.attn.qkv.weight", "diffloss.net.input_proj.weight"])
    depth = sum(k.endswith(".attn.qkv.weight") and k.startswith("encoder_blocks.") for k in sd)
    if depth not in _SIZES:
        raise ConvertError(f"{path}: a MAR with {depth} encoder blocks; argen has MAR-B (12), -L (16) and -H (20)")
    return _SIZES[depth]


def convert(checkpoint, vae, out, ema: bool = True) -> dict:
    if vae is not None:
        raise ConvertError("--vae: converting MAR's KL-16 autoencoder is not implemented yet; convert the "
                           "transformer alone (without --vae)")
    return convert_generator(checkpoint, out, family="mar", candidates=["model_ema", "model", ""] if ema else ["model", ""],
                             identify=identify, allow=[argparse.Namespace])
