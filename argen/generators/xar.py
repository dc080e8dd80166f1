"""xAR: next-X prediction with flow matching (Ren et al. 2025, "Beyond Next-Token: Next-X Prediction for
Autoregressive Visual Generation"; OliverRensu/xAR).

The image's continuous tokens (a KL tokenizer's latent, ``token_dim`` channels on a ``grid``) are cut
into M *entities*, and one AR step predicts a whole entity. The unit X is a parameter:

* ``unit="cell"``: k x k cells of tokens in raster order of the cells (``cell`` = k divides the grid):
  k = 1 is next-token prediction, k = the grid size is the whole image in one step;
* ``unit="scale"``: a pyramid, entity k being the latent area-resized to ``scales[k]``^2 tokens,
  the last one the latent itself (close to FlowAR; ``docs/family-xar.md`` says how they differ).

A block-causal transformer (VAR's AdaLN blocks; block e attends to blocks <= e) reads, in block e,
the previous entity's tokens placed on entity e's positions (the same cell layout; for scales,
resized to the next scale) and gives every position of entity e a condition z. Argen's flow head
(``FlowHead``: straight-path flow matching, velocity prediction) turns each z into its token, so
the tokens of one entity are drawn together, in parallel, given everything before it.

Noisy context learning: in training, each context entity is replaced by a point on its flow path,
(1 - tau) x + tau * noise with tau ~ U(0, ``context_noise``) per entity and image, so the model
does not learn to trust a perfect context that sampling will not give it (exposure bias).
Sampling feeds the drawn tokens as they are (tau = 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from argen.config import Config, check
from argen.generators.base import Generator
from argen.generators.heads import FlowHead
from argen.generators.var import AdaLNBeforeHead, AdaLNBlock, init_adaln
from argen.nn import shard
from argen.nn.kv_cache import KVCache
from argen.registry import register_model

UNITS = ("cell", "scale")


@dataclass(frozen=True)
class XARConfig(Config):
    token_dim: int = 16                    # channels of a continuous token (the KL tokenizer's embed_dim)
    grid: tuple[int, int] = (16, 16)       # token map (h, w)
    unit: str = "cell"                     # what one AR step predicts: "cell" (k x k tokens) or "scale"
    cell: int = 1                          # unit "cell": side k of a cell, dividing h and w
    scales: tuple[int, ...] = ()           # unit "scale": the pyramid's sides, increasing, the last = h = w
    num_classes: int = 1000                # class id num_classes is the null class (CFG)
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    label_drop: float = 0.1
    drop_path: float = 0.0
    dropout: float = 0.0
    attn_l2_norm: bool = True
    norm_eps: float = 1e-6
    aln_init: float = 0.5
    aln_gamma_init: float = 0.1
    context_noise: float = 0.5             # noisy context learning: max flow time of the context's noise (0: off)
    head_width: int = 1024
    head_depth: int = 3
    head_batch_mul: int = 4                # noise draws per target token in training

    def __post_init__(self):
        super().__post_init__()
        for name in ("token_dim", "num_classes", "width", "depth", "heads", "head_width", "head_depth",
                     "head_batch_mul", "cell"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        h, w = self.grid
        check(len(self.grid) == 2 and min(self.grid) >= 1, f"grid must be two positive ints (h, w), got {self.grid}")
        check(self.width % self.heads == 0, f"width {self.width} must be divisible by heads {self.heads}")
        check(self.unit in UNITS, f"unit must be one of {', '.join(UNITS)}, got {self.unit!r}")
        if self.unit == "cell":
            check(h % self.cell == 0 and w % self.cell == 0, f"cell {self.cell} must divide the grid {self.grid}")
        else:
            check(h == w, f"unit 'scale' needs a square grid, got {self.grid}")
            check(len(self.scales) >= 1 and all(a < b for a, b in zip(self.scales, self.scales[1:]))
                  and self.scales[0] >= 1 and self.scales[-1] == h,
                  f"scales must increase from >= 1 to the grid side {h}, got {self.scales}")
        check(0.0 <= self.context_noise <= 1.0, f"context_noise must be in [0, 1], got {self.context_noise}")
        for name in ("label_drop", "drop_path", "dropout"):
            check(0.0 <= getattr(self, name) < 1.0, f"{name} must be in [0, 1), got {getattr(self, name)}")
        check(self.mlp_ratio > 0 and self.norm_eps > 0, "mlp_ratio and norm_eps must be > 0")

    @property
    def entity_sizes(self) -> list[int]:
        """Tokens of each entity, in generation order."""
        if self.unit == "scale":
            return [p * p for p in self.scales]
        h, w = self.grid
        return [self.cell * self.cell] * (h * w // self.cell ** 2)

    @property
    def seq_len(self) -> int:
        return sum(self.entity_sizes)

    @property
    def begin_ends(self) -> list[tuple[int, int]]:
        ends = torch.tensor(self.entity_sizes).cumsum(0).tolist()
        return list(zip([0, *ends[:-1]], ends))


def cell_order(h: int, w: int, k: int) -> torch.Tensor:
    """Raster indices (N,) of an h x w grid listed cell by cell (k x k cells in raster order, raster inside)."""
    idx = torch.arange(h * w).view(h // k, k, w // k, k)  # (cell row, row in cell, cell col, col in cell)
    return idx.permute(0, 2, 1, 3).flatten()


@register_model
class XAR(Generator):
    config_class = XARConfig
    family = "xar"
    consumes = "continuous"
    counted: ClassVar[dict[str, str]] = {"forward_calls": "blocks.0", "head_calls": "head.net"}

    def __init__(self, config: XARConfig):
        super().__init__()
        self.config = c = config
        C, L = c.width, c.seq_len
        self.word_embed = nn.Linear(c.token_dim, C)      # context tokens -> transformer width
        self.class_emb = nn.Embedding(c.num_classes + 1, C)
        self.pos_1LC = nn.Parameter(torch.empty(1, L, C))
        self.lvl_embed = nn.Embedding(len(c.entity_sizes), C)
        dpr = [c.drop_path * i / max(c.depth - 1, 1) for i in range(c.depth)]
        self.blocks = nn.ModuleList(AdaLNBlock(c, dpr[i]) for i in range(c.depth))
        self.head_nm = AdaLNBeforeHead(c)
        self.head = FlowHead(c.token_dim, C, c.head_width, c.head_depth, batch_mul=c.head_batch_mul)

        lvl = torch.cat([torch.full((n,), e) for e, n in enumerate(c.entity_sizes)])
        self.register_buffer("lvl_1L", lvl.view(1, L), persistent=False)
        mask = torch.where(lvl.view(L, 1) >= lvl.view(1, L), 0.0, float("-inf"))  # block-causal
        self.register_buffer("attn_bias", mask.view(1, 1, L, L), persistent=False)
        if c.unit == "cell":
            self.register_buffer("order", cell_order(*c.grid, c.cell), persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        c = self.config
        std = math.sqrt(1 / c.width / 3)
        for m in [self.word_embed, self.class_emb, self.lvl_embed, self.head_nm, *self.blocks]:
            for sub in m.modules():
                if isinstance(sub, (nn.Linear, nn.Embedding)):
                    nn.init.trunc_normal_(sub.weight, std=std)
                    if getattr(sub, "bias", None) is not None:
                        sub.bias.zero_()
        nn.init.trunc_normal_(self.pos_1LC, std=std)
        init_adaln(self.blocks, self.head_nm, c)

    # ---- entities ---------------------------------------------------------------------------------
    def entities(self, x_BCHW: torch.Tensor) -> list[torch.Tensor]:
        """A latent (B, C, h, w) as its entities in generation order, each (B, n_e, C)."""
        c = self.config
        if c.unit == "scale":
            return [F.interpolate(x_BCHW, size=(p, p), mode="area").flatten(2).transpose(1, 2) for p in c.scales]
        seq_BNC = x_BCHW.flatten(2).transpose(1, 2)[:, self.order]
        return list(seq_BNC.split(c.cell * c.cell, dim=1))

    def assemble(self, ents: list[torch.Tensor]) -> torch.Tensor:
        """The latent (B, C, h, w) that the entities ``ents`` (as ``entities`` gives them) describe."""
        c = self.config
        (h, w), B = c.grid, ents[0].shape[0]
        if c.unit == "scale":
            return ents[-1].transpose(1, 2).reshape(B, c.token_dim, h, w)
        seq_BNC = torch.cat(ents, 1)
        out = torch.empty_like(seq_BNC).index_copy_(1, self.order, seq_BNC)
        return out.transpose(1, 2).reshape(B, c.token_dim, h, w)

    def context(self, prev_BnC: torch.Tensor, e: int) -> torch.Tensor:
        """Entity e - 1's tokens placed on entity e's positions: (B, n_e, C)."""
        c = self.config
        if c.unit == "cell":
            return prev_BnC
        p, q = c.scales[e - 1], c.scales[e]
        grid = prev_BnC.transpose(1, 2).reshape(prev_BnC.shape[0], -1, p, p)
        return F.interpolate(grid, size=(q, q), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)

    # ---- the transformer -------------------------------------------------------------------------
    def cond_embed(self, labels_B: torch.Tensor) -> torch.Tensor:
        """(B,) class ids, ``num_classes`` = null class -> (B, width)."""
        return self.class_emb(labels_B)

    def block_input(self, cond_BC: torch.Tensor, ctx_BnC: torch.Tensor | None, e: int) -> torch.Tensor:
        """Transformer input of block e (B, n_e, width): the class embedding (e = 0) or the context, plus
        position and entity embeddings."""
        b, end = self.config.begin_ends[e]
        content = cond_BC[:, None].expand(-1, end - b, -1) if e == 0 else self.word_embed(ctx_BnC)
        return content + self.pos_1LC[:, b:end] + self.lvl_embed(self.lvl_1L[:, b:end])

    def trunk(self, x_BlC: torch.Tensor, cond_BC: torch.Tensor, start: int = 0,
              caches: list[KVCache] | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Blocks + AdaLN norm on positions [start, start + l): the head conditions z (B, l, width)."""
        for i, block in enumerate(self.blocks):
            x_BlC = block(x_BlC, cond_BC, mask, start, caches[i] if caches is not None else None)
        return self.head_nm(x_BlC, cond_BC)

    def new_caches(self, batch: int, dtype: torch.dtype | None = None, device=None) -> list[KVCache]:
        c, p = self.config, self.pos_1LC
        return [KVCache(batch, c.heads, c.seq_len, c.width // c.heads, dtype or p.dtype, device or p.device)
                for _ in range(c.depth)]

    def forward(self, x_BCHW: torch.Tensor, labels_B: torch.Tensor, context_noise: float = 0.0) -> torch.Tensor:
        """Teacher-forced head conditions z (B, L, width) for every entity of the latent ``x``, the context of
        block e being entity e - 1, noised with tau ~ U(0, ``context_noise``) per entity and image."""
        return self.conditions(self.entities(x_BCHW), labels_B, context_noise)

    def conditions(self, ents: list[torch.Tensor], labels_B: torch.Tensor, context_noise: float = 0.0) -> torch.Tensor:
        """``forward`` on given entities (B, n_e, C) each: a sampled pyramid's coarse scales need not be the
        area means of its last one, as a training image's are."""
        cond = self.cond_embed(labels_B)
        blocks = [self.block_input(cond, None, 0)]
        for e in range(1, len(ents)):
            prev = ents[e - 1]
            if context_noise > 0:
                tau = context_noise * shard.rand(prev.shape[0], 1, 1, device=prev.device, dtype=prev.dtype)
                prev = (1 - tau) * prev + tau * shard.randn_like(prev)
            blocks.append(self.block_input(cond, self.context(prev, e), e))
        L = self.config.seq_len
        return self.trunk(torch.cat(blocks, 1), cond, mask=self.attn_bias[:, :, :L, :L])

    # ---- training ---------------------------------------------------------------------------------
    def tokens_from_images(self, tokenizer, images: torch.Tensor) -> torch.Tensor:
        """Images -> latents (B, C, h, w) drawn from the tokenizer's posterior (as MAR trains)."""
        with torch.no_grad():
            return tokenizer.encode(images, sample=True)

    def loss(self, x_BCHW: torch.Tensor, labels_B: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Flow-matching loss of every token of every entity given the (noised) entities before it."""
        c = self.config
        labels_B = self.drop_labels(labels_B)
        z_BLD = self(x_BCHW, labels_B, c.context_noise if self.training else 0.0)
        target_BLC = torch.cat(self.entities(x_BCHW), 1)
        loss = self.head.loss(target_BLC, z_BLD)
        return loss, {"flow_mse": float(loss.detach())}
