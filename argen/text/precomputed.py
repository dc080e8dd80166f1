"""Caption features from a file: T5, CLIP or any other encoder, run once elsewhere.

This is how LlamaGen trains its text-to-image models at scale (FLAN-T5-XL features extracted ahead of
time): the encoder never runs during training or sampling. The file is a safetensors file with

    features   (N, L, D) float      per-token features of N captions, L positions each
    mask       (N, L) bool          True = a real token (either side may be padded: LlamaGen pads on the left)
    captions   N strings            in the file's metadata under "captions" (a JSON list), or in a JSON
                                    file beside it with the same stem (``feats.safetensors`` -> ``feats.json``)

``save_precomputed`` writes one. A prompt is looked up by its exact text; one that is not in the file
has no features, which is a one-line error. Pooled = the mean of the real tokens. Rows are read from
the file when asked for (memory-mapped), so a file larger than memory works; the config keeps the
path, not the features, so a generator checkpoint stays small and needs the file beside it.

A config with ``dim`` and ``max_tokens`` but no ``path`` builds an encoder without a file (a converted
LlamaGen T2I model, whose T5 features come from whatever file its user makes): it is given one later
with ``use_file(path)`` (or a ``path`` in the checkpoint's config), and asking it for features before
that is a one-line error.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import argen.checkpoint as ckpt
from argen.config import Config, check
from argen.errors import ArgenError, DataError
from argen.text.base import TextEmbeddings, masked_mean, padded, prompt_list, quoted, register_text_encoder

MAX_CAPTION_FILE = 2**30  # a captions JSON of a billion bytes is not what this reads


def save_precomputed(path: str | Path, features_NLD: torch.Tensor, mask_NL: torch.Tensor,
                     captions: Sequence[str]) -> None:
    """Write a features file (captions in its metadata) that ``PrecomputedTextEncoder`` reads."""
    captions = list(captions)
    if features_NLD.ndim != 3 or mask_NL.shape != features_NLD.shape[:2] or len(captions) != len(features_NLD):
        raise ArgenError(f"features (N, L, D), mask (N, L) and N captions must agree, got "
                         f"{tuple(features_NLD.shape)}, {tuple(mask_NL.shape)} and {len(captions)}")
    ckpt.save_tensors(path, {"features": features_NLD, "mask": mask_NL.bool()},
                      metadata={"captions": json.dumps(captions)})


def _header(path: Path) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shapes of ``features`` and ``mask`` in the file, read from its header."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise DataError(f"text features file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            if not {"features", "mask"} <= keys:
                raise DataError(f"{path}: a text features file holds 'features' (N, L, D) and 'mask' (N, L); "
                                f"this one holds {', '.join(sorted(keys)) or 'nothing'}")
            shapes = tuple(f.get_slice("features").get_shape()), tuple(f.get_slice("mask").get_shape())
    except (SafetensorError, OSError, ValueError) as e:
        raise DataError(f"{path}: not a safetensors file ({str(e).splitlines()[0]})") from None
    (features, mask) = shapes
    if len(features) != 3 or mask != features[:2] or min(features) < 1:
        raise DataError(f"{path}: features must be (N, L, D) and mask (N, L), got {list(features)} and {list(mask)}")
    return shapes


def _captions(path: Path, n: int) -> list[str]:
    """The file's N captions: its metadata's "captions", else the JSON file beside it."""
    meta = ckpt.read_metadata(path)
    beside = path.with_suffix(".json")
    if "captions" in meta:
        text, where = meta["captions"], f"{path} (metadata 'captions')"
    elif beside.is_file() and beside.stat().st_size <= MAX_CAPTION_FILE:
        text, where = beside.read_text(encoding="utf-8"), str(beside)
    else:
        raise DataError(f"{path}: no captions: put a JSON list of them in its metadata under 'captions' or in {beside}")
    try:
        captions = json.loads(text)
    except ValueError as e:
        raise DataError(f"{where}: not JSON ({str(e).splitlines()[0]})") from None
    if isinstance(captions, dict):  # {"captions": [...]} is fine too
        captions = captions.get("captions")
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions) or len(captions) != n:
        raise DataError(f"{where}: expected a list of {n} caption strings, one per row of 'features'")
    return captions


@dataclass(frozen=True)
class PrecomputedTextConfig(Config):
    path: str = ""        # the features file; "" = given later (``use_file``), then dim and max_tokens are needed
    dim: int = 0          # D of the features; 0 = read from the file
    max_tokens: int = 0   # L of the features; 0 = read from the file

    def __post_init__(self):
        super().__post_init__()
        check(self.dim >= 0 and self.max_tokens >= 0, "dim and max_tokens must be >= 0 (0 = read from the file)")
        check(bool(self.path) or (self.dim > 0 and self.max_tokens > 0),
              "path: give the caption features file (.safetensors with 'features' and 'mask'), or dim and "
              "max_tokens for an encoder whose file is given later")


@register_text_encoder("precomputed")
class PrecomputedTextEncoder(nn.Module):
    """Prompts -> the features a file holds for them (no network, nothing to train)."""

    config_class = PrecomputedTextConfig

    def __init__(self, config: PrecomputedTextConfig):
        super().__init__()
        if not (config.dim and config.max_tokens):  # fill them in, so the config states the file's sizes
            (_, L, D), _ = _header(Path(config.path))
            config = config.replace(dim=config.dim or D, max_tokens=config.max_tokens or L)
        self.config = config
        self.register_buffer("_where", torch.zeros(0), persistent=False)  # device and dtype of the outputs
        self._rows: dict[str, int] | None = None  # caption -> row, read on first use

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def max_tokens(self) -> int:
        return self.config.max_tokens

    def use_file(self, path: str | Path) -> None:
        """Read features from ``path`` from now on (its features must be ``max_tokens`` x ``dim``)."""
        (_, L, D), _ = _header(Path(path))
        if (L, D) != (self.max_tokens, self.dim):
            raise DataError(f"{path} holds features of {L} tokens x {D}; this model was built for "
                            f"{self.max_tokens} x {self.dim}")
        self.config, self._rows = self.config.replace(path=str(path)), None

    @property
    def rows(self) -> dict[str, int]:
        """Caption -> its row in the file (the first, where a caption repeats)."""
        if not self.config.path:
            raise ArgenError(f"no caption features file: this model reads its captions as precomputed features "
                             f"({self.max_tokens} x {self.dim} each); give the file with "
                             f"`model.text.encoder.use_file(path)` or as \"path\" in the \"text\" of its config.json")
        if self._rows is None:
            path = Path(self.config.path)
            (N, L, D), _ = _header(path)
            if (L, D) != (self.max_tokens, self.dim):
                raise DataError(f"{path} holds features of {L} tokens x {D}; this model was built for "
                                f"{self.max_tokens} x {self.dim}")
            rows: dict[str, int] = {}
            for i, c in enumerate(_captions(path, N)):
                rows.setdefault(c, i)
            self._rows = rows
        return self._rows

    @property
    def example(self) -> str:
        """A prompt this encoder can represent: the file's first caption (for `argen bench`)."""
        return next(iter(self.rows))

    def check_prompts(self, prompts: Sequence[str], arg: str = "prompt") -> None:
        """A one-line error naming the prompts whose features the file does not hold."""
        rows = self.rows
        missing = list(dict.fromkeys(p for p in prompt_list(prompts, arg) if p not in rows))
        if missing:
            raise ArgenError(f"{arg}: no precomputed features for {quoted(missing, 3)} in {self.config.path} "
                             f"(it holds {len(rows):,} captions, looked up by their exact text)")

    def encode(self, prompts: Sequence[str]) -> TextEmbeddings:
        from safetensors import safe_open

        prompts = prompt_list(prompts)
        self.check_prompts(prompts)
        idx = [self.rows[p] for p in prompts]
        try:
            with safe_open(self.config.path, framework="pt") as f:
                features, mask = f.get_slice("features"), f.get_slice("mask")
                rows = [(features[i : i + 1], mask[i : i + 1]) for i in idx]  # one row at a time: memory-mapped
        except OSError as e:
            raise DataError(f"cannot read {self.config.path}: {e.strerror or e}") from None
        L, D = self.max_tokens, self.dim
        tokens_BLD = torch.cat([r[0] for r in rows]) if rows else torch.zeros(0, L, D)
        mask_BL = torch.cat([r[1] for r in rows]).bool() if rows else torch.zeros(0, L, dtype=torch.bool)
        empty = [p for p, m in zip(prompts, mask_BL) if not m.any()]
        if empty:
            raise DataError(f"{self.config.path}: the features of {quoted(empty, 1)} have no real token (mask all False)")
        tokens_BLD = tokens_BLD.to(device=self._where.device, dtype=self._where.dtype)
        tokens_BLD, mask_BL = padded(tokens_BLD, mask_BL.to(self._where.device), L)
        return TextEmbeddings(tokens_BLD, masked_mean(tokens_BLD, mask_BL), mask_BL)

    def forward(self, prompts: Sequence[str]) -> TextEmbeddings:
        return self.encode(prompts)

