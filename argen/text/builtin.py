"""The built-in text encoder: a small transformer trained from scratch together with the generator.

No download and no extra package: the CPU path for captioned data sets such as ``shapes``, whose
captions use a few dozen words. The tokenizer is one id per word, and its vocabulary is part of
the config (``vocab_from_captions``), so a checkpoint carries it::

    words     lower-case runs of letters and digits; spaces and punctuation only separate them
    ids       word i of ``vocab`` has id i + 1; id 0 pads
    network   word + learned position embeddings -> ``depth`` pre-norm blocks (SDPA, padded keys masked)
              -> final LayerNorm; pooled = mean over the real tokens

A word outside the vocabulary has no embedding at all (the model never saw it), so it is an error
that names it, never a silent [UNK].
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from argen.config import Config, check
from argen.errors import ArgenError, ConfigError
from argen.nn import shard
from argen.nn.layers import EncoderBlock
from argen.text.base import TextEmbeddings, masked_mean, padded, prompt_list, quoted, register_text_encoder

_WORD = re.compile(r"[^\W_]+")  # letters and digits of any script; everything else separates words
MAX_VOCAB = 1_000_000
MAX_TOKENS = 4096


def split_words(text: str) -> list[str]:
    """The words of ``text``, lower-cased: ``"A red circle, left."`` -> ``["a", "red", "circle", "left"]``."""
    return _WORD.findall(text.lower())


def vocab_from_captions(captions: Iterable[str]) -> tuple[str, ...]:
    """Every word of ``captions``, sorted (so the ids do not depend on the captions' order)."""
    words = sorted({w for c in captions for w in split_words(c)})
    if not words:
        raise ConfigError("captions: no words in the captions to build a vocabulary from")
    return tuple(words)


@dataclass(frozen=True)
class BuiltinTextConfig(Config):
    vocab: tuple[str, ...] = ()   # the known words (vocab_from_captions); word i has id i + 1, 0 pads
    max_tokens: int = 32          # words per prompt (positions of the output)
    width: int = 128              # D of the embeddings
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    norm_eps: float = 1e-6

    def __post_init__(self):
        super().__post_init__()
        check(1 <= len(self.vocab) <= MAX_VOCAB,
              f"vocab must hold 1 to {MAX_VOCAB:,} words (vocab_from_captions(captions)), got {len(self.vocab):,}")
        # one regex pass over all words: each must be exactly one word as split_words reads prompts
        check(split_words(" ".join(self.vocab)) == list(self.vocab),
              "vocab must hold lower-case words of letters and digits, one each (vocab_from_captions(captions))")
        check(len(set(self.vocab)) == len(self.vocab), "vocab must not repeat a word")
        check(1 <= self.max_tokens <= MAX_TOKENS, f"max_tokens must be in [1, {MAX_TOKENS}], got {self.max_tokens}")
        for name in ("width", "depth", "heads"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        check(self.width % self.heads == 0, f"width {self.width} must be divisible by heads {self.heads}")
        check(self.mlp_ratio > 0, f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        check(self.norm_eps > 0, f"norm_eps must be > 0, got {self.norm_eps}")

    @classmethod
    def for_captions(cls, captions: Sequence[str], **overrides) -> BuiltinTextConfig:
        """The config whose vocabulary holds every word of ``captions`` and whose ``max_tokens`` fits the
        longest of them (unless ``overrides`` says otherwise)."""
        longest = max((len(split_words(c)) for c in captions), default=1)
        return cls(**{"vocab": vocab_from_captions(captions), "max_tokens": max(longest, 1), **overrides})


@register_text_encoder("builtin")
class BuiltinTextEncoder(nn.Module):
    """Words -> (B, max_tokens, width) features, trained with whatever uses them."""

    config_class = BuiltinTextConfig

    def __init__(self, config: BuiltinTextConfig):
        super().__init__()
        self.config = c = config
        self.word_ids = {w: i + 1 for i, w in enumerate(c.vocab)}
        self.word_emb = nn.Embedding(len(c.vocab) + 1, c.width, padding_idx=0)
        self.pos_emb = nn.Parameter(torch.zeros(c.max_tokens, c.width))
        self.drop = shard.Dropout(c.dropout)
        self.blocks = nn.ModuleList(EncoderBlock(c.width, c.heads, c.mlp_ratio, c.norm_eps, c.dropout) for _ in range(c.depth))
        self.ln_f = nn.LayerNorm(c.width, eps=c.norm_eps)
        self.reset_parameters()

    @property
    def dim(self) -> int:
        return self.config.width

    @property
    def max_tokens(self) -> int:
        return self.config.max_tokens

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # GPT-2 init: N(0, 0.02), residual output projections scaled by 1/sqrt(2 depth); padding row zero
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.zero_()
        self.word_emb.weight[0].zero_()
        nn.init.trunc_normal_(self.pos_emb, std=0.02)
        for b in self.blocks:
            b.attn.proj.weight.div_(math.sqrt(2 * self.config.depth))
            b.mlp[-1].weight.div_(math.sqrt(2 * self.config.depth))

    # ---- prompts -> ids -----------------------------------------------------------------------------
    def _check_words(self, prompts: list[str], arg: str) -> list[list[str]]:
        """The words of each prompt; a prompt without words, or a word outside the vocabulary, is an error."""
        words = [split_words(p) for p in prompts]
        empty = [p for p, w in zip(prompts, words) if not w]
        if empty:
            raise ArgenError(f"{arg}: {quoted(empty, 3)} has no words; give a caption such as {self.example!r}")
        unknown = list(dict.fromkeys(w for ws in words for w in ws if w not in self.word_ids))
        if unknown:
            vocab = self.config.vocab
            known = ", ".join(vocab[:60]) + (f", ... ({len(vocab) - 60} more)" if len(vocab) > 60 else "")
            raise ArgenError(f"{arg}: unknown word(s) {quoted(unknown)}; this model's text encoder knows "
                             f"{len(vocab)} words: {known}")
        return words

    @property
    def example(self) -> str:
        """A prompt this encoder can represent (for error messages and `argen bench`)."""
        return " ".join(self.config.vocab[: min(3, self.max_tokens)])

    def check_prompts(self, prompts: Sequence[str], arg: str = "prompt") -> None:
        """A one-line ArgenError for a prompt with unknown words, no words, or more than ``max_tokens`` words."""
        prompts = prompt_list(prompts, arg)
        words = self._check_words(prompts, arg)
        long = [(p, len(w)) for p, w in zip(prompts, words) if len(w) > self.max_tokens]
        if long:
            raise ArgenError(f"{arg}: {quoted([long[0][0]], 1)} has {long[0][1]} words; this model's text "
                             f"encoder reads at most {self.max_tokens} (the rest would be ignored)")

    def token_ids(self, prompts: Sequence[str], arg: str = "prompt") -> tuple[torch.Tensor, torch.Tensor]:
        """Word ids (B, L) and mask (B, L), L = the longest prompt's words (at most ``max_tokens``: longer
        prompts are cut), right-padded with id 0."""
        words = self._check_words(prompt_list(prompts, arg), arg)
        L = min(self.max_tokens, max((len(w) for w in words), default=1))
        rows = [[self.word_ids[w] for w in ws[:L]] + [0] * (L - len(ws[:L])) for ws in words]
        ids_BL = torch.tensor(rows, dtype=torch.long, device=self.pos_emb.device)  # one copy, not one per row
        return ids_BL, ids_BL > 0

    # ---- ids -> embeddings --------------------------------------------------------------------------
    def encode(self, prompts: Sequence[str]) -> TextEmbeddings:
        ids_BL, mask_BL = self.token_ids(prompts)
        L = ids_BL.shape[1]
        x_BLC = self.drop(self.word_emb(ids_BL) + self.pos_emb[:L])
        keys_B11L = mask_BL[:, None, None, :]
        for block in self.blocks:
            x_BLC = block(x_BLC, keys_B11L)
        tokens_BLD, mask_BL = padded(self.ln_f(x_BLC), mask_BL, self.max_tokens)
        return TextEmbeddings(tokens_BLD, masked_mean(tokens_BLD, mask_BL), mask_BL)

    def forward(self, prompts: Sequence[str]) -> TextEmbeddings:
        return self.encode(prompts)
