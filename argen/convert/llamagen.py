"""Official LlamaGen (``c2i_B_256.pt`` ... ``c2i_3B_384.pt``, ``t2i_XL_stage1_256.pt``, ``vq_ds16_c2i.pt``,
``vq_ds16_t2i.pt``) -> argen.

GPT: argen's raster model keeps the official parameter names (``tests/data/layouts/llamagen-gpt-b.tsv``),
so the key map is the identity. Containers: DDP files hold ``model`` (and ``ema`` when trained
with it, preferred unless ``ema=False``), DeepSpeed files ``module``, FSDP files the bare dict.
Old files carry the RoPE table ``freqs_cis``, which argen recomputes: it is skipped by name.

A text-to-image GPT (``tests/data/layouts/llamagen-t2i-xl.tsv``) is told by its ``CaptionEmbedder``:
``cls_embedding.cap_proj.fc1/fc2`` are argen's ``text.token_proj.0/2`` (the same Linear-GELU(tanh)-Linear;
the official one has no biases, so argen's start at zero) and the null caption ``uncond_embedding``
is ``text.null_tokens_LD``. The 512 px stage-2 file holds the same tensors for a 32 x 32 grid, which its
weights do not tell: it converts to the 256 px preset (16 x 16), not its resolution.

Tokenizer: VQ-16 (``tests/data/layouts/llamagen-vq16.tsv``) is an LDM autoencoder under other
names. Encoder ``conv_blocks.{i}`` is argen's ``down.{i}``, but decoder ``conv_blocks.{i}`` counts
from the coarsest level, so it is argen's ``up.{4 - i}``; ``res`` is ``block``; the middle
``mid.{0,1,2}`` is ``mid.{block_1, attn_1, block_2}``; separate ``q``/``k``/``v`` convs are fused
into ``qkv``. The usage ring buffer ``codebook_used`` is not kept.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from argen.convert.common import CODEBOOK_BUFFERS, IDENTITY, Official, convert_files, require
from argen.errors import ConvertError
from argen.presets.raster import LLAMAGEN_SIZES, LLAMAGEN_T2I_TEXT
from argen.registry import CONVERTERS

VQ_LEVELS = 5  # ch_mult (1, 1, 2, 2, 4)
VQ_RULES = tuple(
    [(r"encoder\.conv_blocks\.(\d+)\.res\.(\d+)\.(.*)", r"encoder.down.\1.block.\2.\3"),
     (r"encoder\.conv_blocks\.(\d+)\.(attn|downsample)(\..*)", r"encoder.down.\1.\2\3")]
    + [(rf"decoder\.conv_blocks\.{i}\.res\.(\d+)\.(.*)", rf"decoder.up.{VQ_LEVELS - 1 - i}.block.\1.\2")
       for i in range(VQ_LEVELS)]
    + [(rf"decoder\.conv_blocks\.{i}\.(attn|upsample)(\..*)", rf"decoder.up.{VQ_LEVELS - 1 - i}.\1\2")
       for i in range(VQ_LEVELS)]
    + [(r"(encoder|decoder)\.mid\.0\.(.*)", r"\1.mid.block_1.\2"),
       (r"(encoder|decoder)\.mid\.1\.(.*)", r"\1.mid.attn_1.\2"),
       (r"(encoder|decoder)\.mid\.2\.(.*)", r"\1.mid.block_2.\2"),
       *IDENTITY])
# the text-to-image GPT's CaptionEmbedder under argen's names; the class-conditional GPT has none of these
GPT_RULES = ((r"cls_embedding\.cap_proj\.fc1\.weight", "text.token_proj.0.weight"),
             (r"cls_embedding\.cap_proj\.fc2\.weight", "text.token_proj.2.weight"),
             (r"cls_embedding\.uncond_embedding", "text.null_tokens_LD"),
             *IDENTITY)
GPT_FRESH = (("text.token_proj.0.bias", 0.0), ("text.token_proj.2.bias", 0.0))  # the official MLP has no biases
T2I_PRESETS = {"XL": "llamagen-t2i-xl"}  # the official text-to-image sizes (a 256 px grid)
CAPTION_KEY = "cls_embedding.cap_proj.fc1.weight"


def identify(sd: dict[str, torch.Tensor], path: Path) -> str:
    require(sd, path, "LlamaGen GPT", ["tok_embeddings.weight", "layers.0.attention.wqkv.weight"])
    n_layer = len({m.group(1) for k in sd if (m := re.match(r"layers\.(\d+)\.", k))})
    dim = sd["tok_embeddings.weight"].shape[1]
    size = next((s for s, (layers, _, width) in LLAMAGEN_SIZES.items() if (layers, width) == (n_layer, dim)), None)
    if CAPTION_KEY not in sd:
        if size is None:
            raise ConvertError(f"{path}: a GPT with {n_layer} layers of width {dim}; argen has the official "
                               f"{', '.join(LLAMAGEN_SIZES)}")
        return f"llamagen-gpt-{size.lower()}"
    caption_dim = sd[CAPTION_KEY].shape[1]
    if size not in T2I_PRESETS or caption_dim != LLAMAGEN_T2I_TEXT["dim"]:
        raise ConvertError(f"{path}: a text-to-image GPT with {n_layer} layers of width {dim} reading {caption_dim}-d "
                           f"captions; argen has the official T2I GPT-{', '.join(T2I_PRESETS)} "
                           f"({LLAMAGEN_T2I_TEXT['dim']}-d FLAN-T5-XL captions)")
    return T2I_PRESETS[size]


def identify_vae(sd: dict[str, torch.Tensor], path: Path) -> str:
    require(sd, path, "LlamaGen VQ", ["encoder.conv_blocks.0.res.0.conv1.weight", "quantize.embedding.weight"])
    levels = len({m.group(1) for k in sd if (m := re.match(r"encoder\.conv_blocks\.(\d+)\.", k))})
    codebook = tuple(sd["quantize.embedding.weight"].shape)
    if (levels, codebook) != (VQ_LEVELS, (16384, 8)):
        raise ConvertError(f"{path}: a VQ with {levels} levels and a {codebook} codebook; argen has VQ-16 "
                           f"({VQ_LEVELS} levels, 16384 x 8)")
    return "llamagen-vq16"


def convert(checkpoint, vae, out, ema: bool = True) -> dict:
    candidates = (("ema",) if ema else ()) + ("model", "module", "")
    generator = Official(identify, candidates, rules=GPT_RULES, allow=(argparse.Namespace,), ignore=(r"freqs_cis",),
                         fresh=GPT_FRESH)
    tokenizer = Official(identify_vae, candidates, rules=VQ_RULES, ignore=(r"quantize\.codebook_used",),
                         allow=(argparse.Namespace,), fuse_qkv=True, fresh=CODEBOOK_BUFFERS)
    return convert_files(out, "llamagen", checkpoint=checkpoint, vae=vae, generator=generator, tokenizer=tokenizer)


CONVERTERS.add("llamagen", convert)
