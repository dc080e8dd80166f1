"""Neighbouring autoregression (NAR: He et al. 2025, "Neighboring Autoregressive Modeling for Efficient
Visual Generation"; ThisisBillhe/NAR).

Tokens are generated in ascending Manhattan distance ``d = r + c`` from the top-left token, a whole
anti-diagonal per pass, so an h x w map takes h + w - 1 passes instead of h * w. A token is
predicted from a decoded neighbour by the head of the dimension that joins them, one head per
dimension (``output``: the next token along the row; ``output_down``: the next along the column)::

    d:  0 1 2 3        token (r, c) comes from      (0, 0): the last class position (row head)
        1 2 3 4          its left neighbour          c >= r: (r, c - 1) by the row head
        2 3 4 5          or the one above it         r >  c: (r - 1, c) by the column head
        3 4 5 6

Sequence layout: ``[class token(s) | image tokens sorted by (d, r)]``, each with the 2D rotary
position of its (row, column). The proximity-aware causal mask lets a token attend to every token of
its own and earlier diagonals: all of diagonal d is known once diagonal d + 1 is drawn, and the
tokens of one diagonal are conditionally independent given the earlier ones. So

    p(x | y) = prod_d prod_{(r, c) on d} p(x_rc | x on diagonals < d, y)

is exact: ``loss`` (the raster family's, over these logits) returns its per-token negative
log-likelihood, and the sampler
(``argen.sampling.nar``) draws from it with a KV cache, one pass per diagonal.

The trunk is the raster family's Llama (the same blocks, names and checkpoints layout); only the
order, the mask and the second head differ, so ``NAR`` extends ``RasterAR``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from argen.generators.raster import RasterAR, RasterConfig, rope_2d_table
from argen.registry import register_model


@dataclass(frozen=True)
class NARConfig(RasterConfig):
    """The raster family's fields; ``max_len`` stays cls_token_num + N - 1 (the last token feeds nothing)."""


def neighbour_order(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The generation order of an h x w grid and each token's predictor.

    Returns, over tokens in generation order k = 0..N-1: ``order`` (N,) their raster indices (sorted
    by diagonal, then row), ``source`` (N,) the generation index of the neighbour that predicts each
    (-1: the class position, for token (0, 0)), and ``head`` (N,) 0 = row head, 1 = column head."""
    cells = sorted((r + c, r, c) for r in range(h) for c in range(w))
    order = torch.tensor([r * w + c for _, r, c in cells])
    rank = {(r, c): k for k, (_, r, c) in enumerate(cells)}
    source, head = [], []
    for _, r, c in cells:
        if r == c == 0:
            source.append(-1), head.append(0)
        elif c >= r:
            source.append(rank[(r, c - 1)]), head.append(0)
        else:
            source.append(rank[(r - 1, c)]), head.append(1)
    return order, torch.tensor(source), torch.tensor(head)


@register_model
class NAR(RasterAR):
    config_class = NARConfig
    family = "nar"
    consumes = "discrete"
    likelihood = True  # loss: the exact NLL of the diagonal factorisation
    counted: ClassVar[dict[str, str]] = {"forward_calls": "layers.0"}

    def __init__(self, config: NARConfig):
        super().__init__(config)
        c = config
        self.output_down = nn.Linear(c.width, c.vocab_size, bias=False)
        nn.init.zeros_(self.output_down.weight)  # as the row head: uniform first logits
        order, source, head = neighbour_order(*c.grid)
        diag = (order // c.grid[1]) + (order % c.grid[1])  # (N,) diagonal of each token in generation order
        # Sequence position of each token's predictor (the class position for token 0), and per diagonal
        # d its tokens' slice [start, end) of the generation order.
        self.register_buffer("order", order, persistent=False)
        self.register_buffer("source_pos", torch.where(source < 0, c.cls_token_num - 1, c.cls_token_num + source),
                             persistent=False)
        self.register_buffer("head", head, persistent=False)
        # In Python, not from the tensors: a model built on the meta device has no values to read.
        h, w = c.grid
        sizes = [sum(1 for r in range(h) if 0 <= d - r < w) for d in range(h + w - 1)]
        starts = list(itertools.accumulate([0, *sizes]))
        self.diagonals = list(itertools.pairwise(starts))
        # The raster buffers, re-laid for this order: rotary angles by (row, column) of the token at each
        # position, and the proximity-aware mask (a position sees its own and earlier diagonals).
        table = rope_2d_table(c)
        self.freqs_cis = torch.cat([table[:c.cls_token_num], table[c.cls_token_num:][order]])[:c.max_len]
        seq_diag = torch.cat([torch.full((c.cls_token_num,), -1), diag])[:c.max_len]
        self.causal_mask = seq_diag[None, :] <= seq_diag[:, None]

    @torch.no_grad()
    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "output_down"):  # RasterAR.__init__ calls this before the column head exists
            nn.init.zeros_(self.output_down.weight)

    def head_logits(self, feats_BKC: torch.Tensor, head_K: torch.Tensor) -> torch.Tensor:
        """Float32 logits (B, K, V) of K predictions: ``feats`` of their source positions, through head ``head_K``."""
        row, col = self.output(feats_BKC), self.output_down(feats_BKC)
        return torch.where(head_K[:, None].bool(), col, row).float()

    def diagonal_logits(self, feats_BLC: torch.Tensor, d: int, first_pos: int) -> torch.Tensor:
        """Logits (B, n_d, V) of diagonal d's tokens from the features of the pass that fed their sources:
        ``feats`` (B, L, C) of sequence positions first_pos .. first_pos + L - 1."""
        s, e = self.diagonals[d]
        return self.head_logits(feats_BLC[:, self.source_pos[s:e] - first_pos], self.head[s:e])

    def forward(self, idx_BN: torch.Tensor, labels_B: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, N, V) of every token, in raster layout, from a full token map ``idx_BN``
        (B, N) in raster order (sampling goes through ``features`` with caches, see ``argen.sampling.nar``)."""
        c = self.config
        seq_BN = idx_BN[:, self.order[: c.seq_len - 1]]
        x_BLC = torch.cat([self.cond_tokens(labels_B), self.tok_embeddings(seq_BN)], 1)
        L = x_BLC.shape[1]
        feats = self.features(x_BLC, mask=self.causal_mask[:L, :L])
        logits_gen = self.head_logits(feats[:, self.source_pos], self.head)  # (B, N, V), generation order
        return torch.empty_like(logits_gen).index_copy_(1, self.order, logits_gen)
