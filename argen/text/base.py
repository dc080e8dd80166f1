"""What every text encoder gives, and how encoders are registered, saved and loaded.

A text encoder turns B prompts into per-token embeddings ``tokens_BLD``, a pooled embedding
``pooled_BD`` and a mask ``mask_BL`` (True = a real token). L is always the encoder's
``max_tokens``, whatever the prompts' lengths, so that a generator keeps fixed-size condition
positions (LlamaGen's 120 caption tokens) and a learned null caption of the same shape; padded
positions hold zeros. D is ``dim``.

Encoders are ``nn.Module``s built from a frozen config (``argen.config.Config``) and saved like
every other argen part: ``config.json`` (class and config) plus ``model.safetensors``. A
generator holds its encoder as a submodule, so its checkpoint carries the encoder's weights, and
``text_spec(encoder)`` (the kind and the config's fields) is the dict that rebuilds it. Weights that
come from elsewhere are no part of the state dict: MiniLM's (from its package) and a features file.

``check_prompts`` is for prompts a person typed: it refuses what the encoder cannot represent
(unknown words, captions missing from a features file) and prompts longer than ``max_tokens``,
whose end would be ignored. ``encode`` refuses the former too but cuts a long prompt to
``max_tokens`` tokens, as text encoders do (training captions may run long).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from argen.errors import ArgenError, CheckpointError
from argen.registry import Registry

TEXT_ENCODERS: Registry[type] = Registry("text encoder")  # kind -> class (builtin, minilm, precomputed)


@dataclass(frozen=True)
class TextEmbeddings:
    """An encoded batch of B prompts: L = the encoder's ``max_tokens`` positions of width D."""

    tokens_BLD: torch.Tensor  # float, zeros at padded positions
    pooled_BD: torch.Tensor   # float, one vector per prompt
    mask_BL: torch.Tensor     # bool, True = a real token


@runtime_checkable
class TextEncoder(Protocol):
    """What a generator needs from a text encoder (an ``nn.Module`` with a frozen ``config``)."""

    dim: int         # D
    max_tokens: int  # L

    def encode(self, prompts: Sequence[str]) -> TextEmbeddings: ...

    def check_prompts(self, prompts: Sequence[str], arg: str = "prompt") -> None:
        """A one-line ``ArgenError`` naming ``arg`` for prompts this encoder cannot represent."""
        ...


def register_text_encoder(kind: str):
    """Class decorator: ``kind`` names the class in ``build_text_encoder`` and in ``text_spec``."""

    def add(cls: type) -> type:
        cls.kind = kind
        return TEXT_ENCODERS.add(kind, cls)

    return add


def text_spec(encoder: Any) -> dict[str, Any]:
    """The dict ``argen.text.build_text_encoder(**d)`` rebuilds ``encoder`` from (a generator's ``text``)."""
    return {"kind": encoder.kind, **encoder.config.to_dict()}


# ---- helpers shared by the encoders ---------------------------------------------------------------

def prompt_list(prompts: Sequence[str], arg: str = "prompt") -> list[str]:
    """``prompts`` as a list of strings; a bare string (read letter by letter otherwise) is an error."""
    if isinstance(prompts, str):
        raise ArgenError(f"{arg}: give a list of prompts, not one string ({quoted([prompts], 1)})")
    out = list(prompts)
    bad = next((p for p in out if not isinstance(p, str)), None)
    if bad is not None:
        raise ArgenError(f"{arg}: prompts must be strings, got a {type(bad).__name__}")
    return out


def quoted(items: Sequence[str], limit: int = 12) -> str:
    """``'a', 'b', ...`` with at most ``limit`` entries (each cut to 60 characters), for one-line messages."""
    shown = [repr(s if len(s) <= 60 else s[:57] + "...") for s in items[:limit]]
    return ", ".join(shown) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def padded(x_BlD: torch.Tensor, mask_Bl: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and mask zero-padded on the right to ``length`` positions; padded features are zero."""
    x_BlD = x_BlD * mask_Bl[..., None].to(x_BlD.dtype)
    missing = length - x_BlD.shape[1]
    if missing > 0:
        x_BlD = torch.cat([x_BlD, x_BlD.new_zeros(x_BlD.shape[0], missing, *x_BlD.shape[2:])], 1)
        mask_Bl = torch.cat([mask_Bl, mask_Bl.new_zeros(mask_Bl.shape[0], missing)], 1)
    return x_BlD, mask_Bl


def masked_mean(tokens_BLD: torch.Tensor, mask_BL: torch.Tensor) -> torch.Tensor:
    """Mean of each row's real tokens (sentence-transformers' mean pooling); zeros for a row without any."""
    m_BL1 = mask_BL[..., None].to(tokens_BLD.dtype)
    return (tokens_BLD * m_BL1).sum(1) / m_BL1.sum(1).clamp(min=1e-9)


# ---- saving and loading ---------------------------------------------------------------------------

def save_text_encoder(encoder: Any, path: str | Path) -> None:
    """Write ``path/config.json`` (class and config) and ``path/model.safetensors``."""
    import argen.checkpoint as ckpt

    ckpt.save_model(path, encoder, meta={"text_encoder": encoder.kind})


def load_text_encoder(path: str | Path, device: str | torch.device = "cpu") -> Any:
    """The encoder ``save_text_encoder`` wrote to ``path`` (strict: every tensor must fit)."""
    import argen.checkpoint as ckpt

    record = ckpt.read_record(path)
    cls = next((c for c in TEXT_ENCODERS.values() if c.__name__ == record.cls), None)
    if cls is None:
        known = ", ".join(sorted(c.__name__ for c in TEXT_ENCODERS.values()))
        raise CheckpointError(f"{path} holds a {record.cls}, not a text encoder ({known})")
    encoder = cls(cls.config_class.from_dict(record.config, complete=True))
    return ckpt.load_weights(encoder, path).to(device)
