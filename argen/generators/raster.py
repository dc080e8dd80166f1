"""Raster next-token generation (LlamaGen: Sun et al. 2024, "Autoregressive Model Beats Diffusion").

A class-conditional Llama predicts the image's token map one token at a time, in raster
order. With N = h * w image tokens and ``cls_token_num`` condition positions::

    input:   [ class token(s) | image tokens 0 .. N-2 ]       L = cls_token_num + N - 1
    predict:          token 0 | tokens 1 .. N-1               from the last class position on

A text model puts the projected caption tokens in the condition positions instead (LlamaGen T2I);
with ``caption_mask`` they are laid out and masked as the official T2I code does (``RasterAR.condition``).

Architecture and parameter names follow the official code (FoundationVision/LlamaGen
``autoregressive/models/gpt.py``) so that its checkpoints load by a key map alone:
RMSNorm, fused ``wqkv`` (optional grouped-query heads), SwiGLU ``w1/w2/w3``, no biases,
a 2D rotary embedding over the token grid and a zero-initialised ``output`` head.

The model knows nothing of sampling; ``argen.sampling.autoregressive`` drives it through
``new_caches``, ``prefill`` and ``decode_step`` (static shapes, ``torch.compile``-able).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from argen.config import Config, check
from argen.errors import ArgenError
from argen.generators.base import Generator
from argen.generators.conditions import MAX_PROMPTS, text_conditioner
from argen.nn import shard
from argen.nn.kv_cache import StaticKVCache
from argen.nn.layers import DropPath
from argen.registry import register_model


@dataclass(frozen=True)
class RasterConfig(Config):
    # configs saved before text conditioning: classes; before caption masks: every caption position attended to
    ADDED: ClassVar[dict[str, Any]] = {"text": None, "caption_mask": False}
    RENAMED: ClassVar[dict[str, str]] = {"dim": "width", "n_layer": "depth", "n_head": "heads", "n_kv_head": "kv_heads",
               "class_dropout_prob": "label_drop"}

    vocab_size: int = 16384
    grid: tuple[int, int] = (16, 16)        # token map (h, w); N = h * w tokens per image
    num_classes: int = 1000                 # class id num_classes is the null (unconditional) class
    width: int = 768                        # official name: dim
    depth: int = 12                         # official name: n_layer
    heads: int = 12                         # official name: n_head
    kv_heads: int | None = None             # grouped-query attention (n_kv_head); None: heads (plain multi-head)
    multiple_of: int = 256                  # the SwiGLU width is rounded up to a multiple of this
    ffn_dim_multiplier: float | None = None
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    cls_token_num: int = 1                  # condition positions in front of the image tokens
    text: dict | None = None                # text encoder config (argen.text): captions instead of classes
    caption_mask: bool = False              # LlamaGen T2I captions: left-padded, padding masked (RasterAR.condition)
    label_drop: float = 0.1                 # label dropout for classifier-free guidance (training only)
    token_dropout_p: float = 0.1
    resid_dropout_p: float = 0.1
    ffn_dropout_p: float = 0.1
    drop_path_rate: float = 0.0             # stochastic depth, linear from 0 to this over the layers
    zero_rope_at_cond: bool = True          # LlamaGen's RoPE table has cos = sin = 0 at the condition positions
    initializer_range: float = 0.02

    def __post_init__(self):
        super().__post_init__()
        check(len(self.grid) == 2 and min(self.grid) >= 1, f"grid must be (h, w) with h, w >= 1, got {self.grid}")
        for name in ("vocab_size", "num_classes", "width", "depth", "heads", "multiple_of", "cls_token_num"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        check(self.width % self.heads == 0, f"width {self.width} must be divisible by heads {self.heads}")
        check(self.head_dim % 4 == 0,
              f"head dim width / heads = {self.head_dim} must be a multiple of 4 (2D RoPE: row and column pairs)")
        check(self.kv_heads is None or (self.kv_heads >= 1 and self.heads % self.kv_heads == 0),
              f"kv_heads must be None or divide heads {self.heads}, got {self.kv_heads}")
        check(self.ffn_dim_multiplier is None or self.ffn_dim_multiplier > 0,
              f"ffn_dim_multiplier must be None or > 0, got {self.ffn_dim_multiplier}")
        check(self.rope_base > 0 and self.norm_eps > 0, "rope_base and norm_eps must be > 0")
        for name in ("label_drop", "token_dropout_p", "resid_dropout_p", "ffn_dropout_p", "drop_path_rate"):
            check(0.0 <= getattr(self, name) < 1.0, f"{name} must be in [0, 1), got {getattr(self, name)}")
        check(self.initializer_range >= 0, f"initializer_range must be >= 0, got {self.initializer_range}")
        check(self.text is not None or not self.caption_mask,
              "caption_mask masks caption positions: it needs a text model (text), not a class-conditional one")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def num_kv_heads(self) -> int:
        return self.heads if self.kv_heads is None else self.kv_heads

    @property
    def seq_len(self) -> int:
        """N: image tokens per sample."""
        return self.grid[0] * self.grid[1]

    @property
    def max_len(self) -> int:
        """Positions ever fed to the transformer: the condition plus every image token but the last."""
        return self.cls_token_num + self.seq_len - 1

    @property
    def ffn_hidden(self) -> int:
        hidden = int(2 * 4 * self.width / 3)  # SwiGLU keeps the parameter count of a 4x GELU MLP
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return -(-hidden // self.multiple_of) * self.multiple_of


# ---- building blocks -----------------------------------------------------------------------------

def rope_2d_table(c: RasterConfig) -> torch.Tensor:
    """(cos, sin) per position and rotated pair: (cls_token_num + N, head_dim / 2, 2), float32.

    Pairs are interleaved (x[2i], x[2i+1]) as in Meta's Llama. The first head_dim / 4 pairs
    rotate with the token's row, the next head_dim / 4 with its column, both with the
    frequencies base^(-2i / (head_dim / 2)), so q.k depends on (row offset, column offset)."""
    h, w = c.grid
    half = c.head_dim // 2
    freqs_P = 1.0 / (c.rope_base ** (torch.arange(0, half, 2)[: half // 2].float() / half))
    rows_hP = torch.outer(torch.arange(h, dtype=torch.float32), freqs_P)
    cols_wP = torch.outer(torch.arange(w, dtype=torch.float32), freqs_P)
    angles_NQ = torch.cat([rows_hP[:, None].expand(h, w, -1), cols_wP[None].expand(h, w, -1)], -1).flatten(0, 1)
    table = torch.stack([angles_NQ.cos(), angles_NQ.sin()], -1)
    # Condition positions: LlamaGen's table holds zeros there (q and k of the class token become 0,
    # a quirk the official weights were trained with); otherwise no rotation (cos 1, sin 0).
    cond = torch.zeros(c.cls_token_num, half, 2)
    if not c.zero_rope_at_cond:
        cond[..., 0] = 1.0
    return torch.cat([cond, table])


def apply_rope(x_BLHD: torch.Tensor, freqs_LQ2: torch.Tensor) -> torch.Tensor:
    """Rotate each interleaved pair of x by the angle of its position (in float32, as LlamaGen).

    ``freqs``: (L, D/2, 2) for positions shared by the batch, or (B, L, D/2, 2) for a position per row."""
    x = x_BLHD.float().unflatten(-1, (-1, 2))         # (B, L, H, D/2, 2)
    f = freqs_LQ2.float().unsqueeze(-3)              # (L, 1, D/2, 2) or per row (B, L, 1, D/2, 2): over heads
    x0, x1, cos, sin = x[..., 0], x[..., 1], f[..., 0], f[..., 1]
    return torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], -1).flatten(-2).type_as(x_BLHD)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()  # normalise in float32 even under bf16 autocast
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class Attention(nn.Module):
    def __init__(self, c: RasterConfig):
        super().__init__()
        self.n_head, self.kv_heads, self.head_dim = c.heads, c.num_kv_heads, c.head_dim
        self.wqkv = nn.Linear(c.width, (c.heads + 2 * c.num_kv_heads) * c.head_dim, bias=False)
        self.wo = nn.Linear(c.width, c.width, bias=False)
        self.resid_dropout = shard.Dropout(c.resid_dropout_p)

    def forward(self, x_BLC: torch.Tensor, freqs_LQ2: torch.Tensor, mask: torch.Tensor | None,
                input_pos: torch.Tensor | None = None, cache: StaticKVCache | None = None) -> torch.Tensor:
        B, L, C = x_BLC.shape
        H, G, D = self.n_head, self.kv_heads, self.head_dim
        q, k, v = self.wqkv(x_BLC).split([H * D, G * D, G * D], dim=-1)
        q = apply_rope(q.view(B, L, H, D), freqs_LQ2).transpose(1, 2)  # (B, H, L, D)
        k = apply_rope(k.view(B, L, G, D), freqs_LQ2).transpose(1, 2)  # (B, G, L, D)
        v = v.view(B, L, G, D).transpose(1, 2)
        if cache is not None:
            k, v = cache.update_at(input_pos, k, v)  # the whole (B, G, max_len, D) buffer; `mask` hides the tail
        if G != H:  # grouped-query: each key/value head serves H / G query heads
            k, v = k.repeat_interleave(H // G, dim=1), v.repeat_interleave(H // G, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        return self.resid_dropout(self.wo(out.transpose(1, 2).reshape(B, L, C)))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, c: RasterConfig):
        super().__init__()
        self.w1 = nn.Linear(c.width, c.ffn_hidden, bias=False)
        self.w3 = nn.Linear(c.width, c.ffn_hidden, bias=False)
        self.w2 = nn.Linear(c.ffn_hidden, c.width, bias=False)
        self.ffn_dropout = shard.Dropout(c.ffn_dropout_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn_dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class TransformerBlock(nn.Module):
    def __init__(self, c: RasterConfig, drop_path: float):
        super().__init__()
        self.attention = Attention(c)
        self.feed_forward = FeedForward(c)
        self.attention_norm = RMSNorm(c.width, c.norm_eps)
        self.ffn_norm = RMSNorm(c.width, c.norm_eps)
        self.drop_path = DropPath(drop_path)

    def forward(self, x_BLC, freqs_LQ2, mask, input_pos=None, cache=None):
        x_BLC = x_BLC + self.drop_path(self.attention(self.attention_norm(x_BLC), freqs_LQ2, mask, input_pos, cache))
        return x_BLC + self.drop_path(self.feed_forward(self.ffn_norm(x_BLC)))


class ClassEmbedder(nn.Module):
    """Class ids -> vectors; row ``num_classes`` is the null class (named as LlamaGen's LabelEmbedder)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels_B: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(labels_B)


class CaptionKVCache(StaticKVCache):
    """A ``StaticKVCache`` that also keeps which of its positions may be attended to at all: ``keep_BS``
    is False at the padded caption positions of each row. The prefill writes it; the decode steps after it
    feed image tokens only, so this is how the caption's mask reaches them. It follows ``keep_rows``."""

    def __init__(self, batch: int, heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        super().__init__(batch, heads, max_len, head_dim, dtype, device)
        self.register_buffer("keep_BS", torch.ones(batch, max_len, dtype=torch.bool, device=device), persistent=False)

    def keep_rows(self, rows: torch.Tensor | slice) -> None:
        super().keep_rows(rows)
        self.keep_BS = self.keep_BS[rows]


def left_aligned(x_BLC: torch.Tensor, mask_BL: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's real tokens moved to the end, in their order, the padding before them (LlamaGen's left
    padding; a left-padded row is unchanged): ``x`` and ``mask`` (True = real) rearranged alike."""
    order_BL = torch.sort(mask_BL.to(torch.uint8), dim=1, stable=True).indices
    return x_BLC.gather(1, order_BL[..., None].expand_as(x_BLC)), mask_BL.gather(1, order_BL)


# ---- the model ---------------------------------------------------------------------------------------

@register_model
class RasterAR(Generator):
    config_class = RasterConfig
    family = "raster"
    consumes = "discrete"
    likelihood = True  # loss: exact cross-entropy of every token given its prefix
    counted: ClassVar[dict[str, str]] = {"forward_calls": "layers.0"}

    def __init__(self, config: RasterConfig):
        super().__init__()
        self.config = c = config
        self.tok_embeddings = nn.Embedding(c.vocab_size, c.width)
        # Captions (projected caption tokens as the prefix, LlamaGen T2I) or classes (the class vector
        # at every prefix position).
        self.text = text_conditioner(c.text, c.width, c.cls_token_num)
        self.cls_embedding = ClassEmbedder(c.num_classes, c.width) if self.text is None else None
        if c.caption_mask and type(self).forward is not RasterAR.forward:  # e.g. NAR: its own order and masks
            raise ArgenError(f"caption_mask: {type(self).__name__} does not mask captions; only the raster model does")
        self.tok_dropout = shard.Dropout(c.token_dropout_p)
        dpr = [c.drop_path_rate * i / max(c.depth - 1, 1) for i in range(c.depth)]
        self.layers = nn.ModuleList(TransformerBlock(c, dpr[i]) for i in range(c.depth))
        self.norm = RMSNorm(c.width, c.norm_eps)
        self.output = nn.Linear(c.width, c.vocab_size, bias=False)
        # Derived tables, rebuilt from the config: kept out of the state dict (old LlamaGen
        # checkpoints may carry a `freqs_cis`; a converter drops it).
        self.register_buffer("freqs_cis", rope_2d_table(c), persistent=False)
        causal = torch.ones(c.max_len, c.max_len, dtype=torch.bool).tril()
        self.register_buffer("causal_mask", causal, persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """N(0, initializer_range) everywhere, RMSNorm gains 1, and a zero head (uniform first logits)."""
        std = self.config.initializer_range
        encoder = set(self.text.encoder.modules()) if self.text is not None else set()  # it has its own init
        for m in self.modules():
            if m in encoder:
                continue
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=std)
            elif isinstance(m, RMSNorm):
                m.weight.fill_(1.0)
        nn.init.zeros_(self.output.weight)

    # ---- the pieces the sampler calls ----------------------------------------------------------------
    def cond_tokens(self, labels_B: torch.Tensor) -> torch.Tensor:
        """(B,) condition ids (num_classes = null) -> (B, cls_token_num, C): the class vector at every condition
        position, or the projected caption tokens of a text model."""
        return self.condition(labels_B)[0]

    def condition(self, labels_B: torch.Tensor,
                  mask_ids_B: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B,) condition ids -> the prefix (B, cls_token_num, C) and which of its positions may be attended to
        (B, cls_token_num), or None where every one may (classes, and text models without ``caption_mask``).

        With ``caption_mask`` the caption is laid out and masked as LlamaGen's T2I code trains and samples it
        (``dataset/t2i.py``, ``sample_t2i.py``, ``generate(emb_masks=...)``): its real tokens are moved to the
        end, so that the last condition position, which predicts image token 0, holds one; padded positions
        are not attended to; and the null caption (``uncond_embedding``, not rearranged) is masked as the
        caption it stands in for. In training that is the caption label dropout replaced (``mask_ids_B``: the
        ids before dropout); in a guided batch ``[cond; uncond]`` (``argen.sampling.guidance.with_null``),
        the conditional row of its half; a null row with neither is attended to in full."""
        if self.text is None:
            return self.cls_embedding(labels_B).unsqueeze(1).expand(-1, self.config.cls_token_num, -1), None
        caption = self.text(labels_B)
        if not self.config.caption_mask:
            return caption.tokens_BLC, None
        tokens_BLC, keep_BL = left_aligned(caption.tokens_BLC, caption.mask_BL)  # a null row stays as it is
        if mask_ids_B is not None:
            source_BL = self.text(mask_ids_B).mask_BL
            keep_BL = left_aligned(source_BL[..., None], source_BL)[1]
        elif len(labels_B) % 2 == 0:
            h, null_B = len(labels_B) // 2, labels_B == MAX_PROMPTS
            twin_h = null_B[h:] & ~null_B[:h]  # null rows of the second half whose first-half row is a prompt
            keep_BL = torch.cat([keep_BL[:h], torch.where(twin_h[:, None], keep_BL[:h], keep_BL[h:])])
        return tokens_BLC, keep_BL

    def trunk(self, x_BLC: torch.Tensor, input_pos: torch.Tensor | None = None,
              caches: list[StaticKVCache] | None = None, mask: torch.Tensor | None = None,
              keep_BL: torch.Tensor | None = None) -> torch.Tensor:
        """Transformer on inputs at sequence positions ``input_pos`` (default 0..L-1): float32 logits (B, L, V).

        Without caches and mask, attention is plainly causal over x itself. With caches, K/V are
        written at ``input_pos`` and every query attends over the whole preallocated cache through
        rows ``input_pos`` of the causal mask: shapes never depend on the position. ``input_pos`` is
        (L,) for the whole batch or (B, L), a position per row (speculative decoding, where rows
        advance at their own pace); then a cache longer than ``max_len`` and an explicit ``mask``
        (B, 1, L, cache length) let a row's window run past the last position, whose outputs the
        caller discards (they reuse the last position's rotation).

        With ``caption_mask``, keys at padded caption positions are hidden besides: those of ``keep_BL``
        (B, cls_token_num) for a forward from position 0 without caches, those the prefill wrote to the
        caches (``CaptionKVCache``) otherwise."""
        return self.output(self.features(x_BLC, input_pos, caches, mask, keep_BL)).float()

    def features(self, x_BLC: torch.Tensor, input_pos: torch.Tensor | None = None,
                 caches: list[StaticKVCache] | None = None, mask: torch.Tensor | None = None,
                 keep_BL: torch.Tensor | None = None) -> torch.Tensor:
        """``trunk`` before the output head: the normalised last hidden states (B, L, C)."""
        L = x_BLC.shape[1]
        if input_pos is None:
            freqs = self.freqs_cis[:L]
        else:
            freqs = self.freqs_cis[input_pos.clamp(max=self.freqs_cis.shape[0] - 1)]
        if caches is not None and mask is None:
            mask = self.causal_mask[input_pos].unsqueeze(-3)  # (1, L, max_len) or (B, 1, L, max_len)
        if self.config.caption_mask:
            mask = self.caption_attention(mask, L, input_pos, caches, keep_BL)
        x_BLC = self.tok_dropout(x_BLC)
        for i, layer in enumerate(self.layers):
            x_BLC = layer(x_BLC, freqs, mask, input_pos, caches[i] if caches is not None else None)
        return self.norm(x_BLC)

    def caption_attention(self, mask: torch.Tensor | None, L: int, input_pos: torch.Tensor | None,
                          caches: list[StaticKVCache] | None, keep_BL: torch.Tensor | None) -> torch.Tensor | None:
        """``mask`` (None: causal) less the keys at padded caption positions, each query still seeing itself:
        LlamaGen's ``eye``, without which a padded position's row of the softmax would be empty (NaN).
        Boolean, (B, 1, L, keys); static shapes on the decode path (the cache's mask is read whole)."""
        if caches is not None:
            keep_BS = caches[0].keep_BS
            own = input_pos[..., None] == torch.arange(keep_BS.shape[1], device=keep_BS.device)  # (L, S) / (B, L, S)
            return mask & (keep_BS[:, None, None, :] | own.unsqueeze(-3))
        if keep_BL is None:  # no caption given (features called on its own): nothing to hide
            return mask
        keep_BL = F.pad(keep_BL, (0, L - keep_BL.shape[1]), value=True)  # image positions are always real
        own = torch.eye(L, dtype=torch.bool, device=keep_BL.device)
        return (self.causal_mask[:L, :L] if mask is None else mask) & (keep_BL[:, None, None, :] | own)

    def forward(self, idx_BN: torch.Tensor, labels_B: torch.Tensor, input_pos: torch.Tensor | None = None,
                caches: list[StaticKVCache] | None = None, mask: torch.Tensor | None = None,
                mask_ids_B: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits: ``logits[:, i]`` predicts image token i from the label and ``idx_BN[:, :i]``.

        ``idx_BN`` may be any prefix (B, n) of the raster sequence; the result is (B, min(n + 1, N), V):
        a full sequence gives all N logits (its last token is not read: nothing follows it), a
        shorter one also gives the logits of the next token. With ``caches`` the condition and the
        n tokens are written to the cache (a prefill of class + known prefix, ``input_pos`` defaults to
        0..cls_token_num + n - 1) and decoding continues with ``decode_step``. ``mask_ids_B``: see
        ``condition`` (training passes the ids before label dropout)."""
        c = self.config
        n = min(idx_BN.shape[1], c.seq_len - 1)
        cond_BLC, keep_BL = self.condition(labels_B, mask_ids_B)
        x_BLC = torch.cat([cond_BLC, self.tok_embeddings(idx_BN[:, :n])], 1)
        if caches is not None and input_pos is None:
            input_pos = torch.arange(x_BLC.shape[1], device=x_BLC.device)
        if caches is not None and keep_BL is not None:  # for every later decode step, which sees no caption
            if not all(isinstance(cache, CaptionKVCache) for cache in caches):
                raise ArgenError("caches: a caption-masked model decodes with the caches of its own new_caches()")
            for cache in caches:
                cache.keep_BS[:, : c.cls_token_num] = keep_BL
        # Position cls_token_num - 1 (the last condition position) predicts image token 0.
        return self.trunk(x_BLC, input_pos, caches, mask, keep_BL)[:, c.cls_token_num - 1:]

    def decode_step(self, x_BL: torch.Tensor, input_pos: torch.Tensor, caches: list[StaticKVCache],
                    mask: torch.Tensor | None = None) -> torch.Tensor:
        """Feed image tokens at sequence positions ``input_pos`` (image token i sits at cls_token_num + i):
        the logits that follow each, (B, L, V). Plain decoding feeds one token (L = 1, ``input_pos``
        of shape (1,)); speculative decoding a window of L, at (B, L) positions with its own ``mask``
        (see ``trunk``). Static shapes, no host sync: ``torch.compile(model.decode_step, fullgraph=True)``
        gives one graph for every position."""
        return self.trunk(self.tok_embeddings(x_BL), input_pos, caches, mask)

    def new_caches(self, batch: int, dtype: torch.dtype | None = None, device=None,
                   length: int | None = None) -> list[StaticKVCache]:
        """One preallocated (batch, kv_heads, length, head_dim) K/V cache per layer (length: max_len); with
        ``caption_mask`` each also keeps which positions are padded caption positions (``CaptionKVCache``)."""
        c, w = self.config, self.output.weight
        kind = CaptionKVCache if c.caption_mask else StaticKVCache
        return [kind(batch, c.num_kv_heads, length or c.max_len, c.head_dim, dtype or w.dtype, device or w.device)
                for _ in range(c.depth)]

    # ---- training ----------------------------------------------------------------------------------
    @staticmethod
    def tokens_from_images(tokenizer, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """What training needs from a frozen single-scale tokenizer: the raster-ordered indices (B, N)."""
        return {"idx_BN": tokenizer.encode(images).flatten(1)}

    def loss(self, tokens: dict[str, torch.Tensor], labels_B: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy over all N image tokens; labels drop to the null class while training (for CFG)."""
        idx_BN = tokens["idx_BN"]
        if self.config.caption_mask:  # a dropped caption keeps its mask (see ``condition``)
            logits_BNV = self(idx_BN, self.drop_labels(labels_B), mask_ids_B=labels_B)
        else:
            logits_BNV = self(idx_BN, self.drop_labels(labels_B))
        loss = F.cross_entropy(logits_BNV.flatten(0, 1), idx_BN.flatten())
        with torch.no_grad():
            acc = (logits_BNV.argmax(-1) == idx_BN).float().mean()
        return loss, {"ce": float(loss.detach()), "acc": float(acc)}
