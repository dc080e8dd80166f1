"""Official LlamaGen class-conditional GPTs (``c2i_B_256.pt`` ... ``c2i_3B_384.pt``) -> argen.

argen's raster model keeps the official parameter names (``tests/data/layouts/llamagen-gpt-b.tsv``),
so the key map is the identity. Containers: DDP files hold ``model`` (and ``ema`` when trained
with it, preferred unless ``ema=False``), DeepSpeed files ``module``, FSDP files the bare dict.
Old files carry the RoPE table ``freqs_cis``, which argen recomputes: it is skipped by name.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from argen.convert import ConvertError, convert_generator, require
from argen.generators.raster import LLAMAGEN_SIZES


def identify(sd: dict[str, torch.Tensor], path: Path) -> str:
    require(sd, path, "LlamaGen GPT", ["tok_embeddings.weight", "layers.0.attention.wqkv.weight"])
    n_layer = len({m.group(1) for k in sd if (m := re.match(r"layers\.(\d+)\.", k))})
    dim = sd["tok_embeddings.weight"].shape[1]
    for size, (layers, _, width) in LLAMAGEN_SIZES.items():
        if (layers, width) == (n_layer, dim):
            return f"llamagen-gpt-{size.lower()}"
    raise ConvertError(f"{path}: a GPT with {n_layer} layers of width {dim}; argen has the official "
                       f"{', '.join(LLAMAGEN_SIZES)}")


def convert(checkpoint, vae, out, ema: bool = True) -> dict:
    if vae is not None:
        raise ConvertError("--vae: converting LlamaGen's VQ-16 is not implemented yet; convert the "
                           "GPT alone (without --vae)")
    return convert_generator(checkpoint, out, family="llamagen", candidates=(["ema"] if ema else []) + ["model", "module", ""],
                             identify=identify, allow=[argparse.Namespace], ignore=[r"freqs_cis"])
