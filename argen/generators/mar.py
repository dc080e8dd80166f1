"""MAR: masked autoregression over continuous tokens with a per-token diffusion (or flow) head.

Li et al. 2024, "Autoregressive Image Generation without Vector Quantization". The body is
an MAE-style encoder-decoder over the token sequence (raster order, ``N = h*w`` tokens of
``token_dim`` channels from a KL tokenizer)::

    encoder: [ buffer_size buffer tokens = class embedding | the N - M *known* tokens ]
             (masked tokens are dropped, not replaced: the encoder never sees them)
    decoder: [ buffer | known tokens | mask_token at the M masked positions ] -> z (B, N, D)
    head:    p(x_i | z_i), a small AdaLN MLP trained as a diffusion (or flow) model, run on
             the masked positions only

Training draws one mask ratio per batch from a normal N(1, 0.25) truncated to
[``mask_ratio_min``, 1] (mode 1: usually almost everything is masked) and a random order
per image; the head's loss is taken on the masked tokens only. Sampling
(``argen.sampling.masked.sample_continuous``) unmasks tokens in a random order over a
cosine schedule, running the body once and the head once per step.

Parameter names follow the official code (timm ``Block`` names, ``diffloss.net.*``), so
its checkpoints load by a key map alone. Class id ``num_classes`` is the null condition
(``fake_latent``, a learned vector) used for classifier-free guidance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from argen.config import Config, check
from argen.errors import ArgenError
from argen.generators.base import Generator
from argen.generators.conditions import text_conditioner
from argen.generators.heads import HEAD_KINDS, make_head
from argen.nn import shard
from argen.registry import register_model


@dataclass(frozen=True)
class MARConfig(Config):
    ADDED: ClassVar[dict[str, Any]] = {"text": None}  # configs saved before text conditioning: classes
    RENAMED: ClassVar[dict[str, str]] = {"enc_depth": "depth", "enc_heads": "heads", "label_drop_prob": "label_drop"}

    token_dim: int = 16                    # channels of a continuous token (the KL tokenizer's embed_dim)
    grid: tuple[int, int] = (16, 16)       # token map (h, w)
    num_classes: int = 1000                # class id num_classes is the null condition (CFG)
    width: int = 768                       # encoder width
    depth: int = 12                        # encoder blocks (official: encoder_depth)
    heads: int = 12                        # encoder heads (official: encoder_num_heads)
    dec_width: int | None = None           # decoder width, depth, heads; None: the encoder's (as every official MAR)
    dec_depth: int | None = None
    dec_heads: int | None = None
    mlp_ratio: float = 4.0
    buffer_size: int = 64                  # leading tokens that all hold the class embedding
    label_drop: float = 0.1                # classifier-free guidance: condition replaced by fake_latent
    text: dict | None = None               # text encoder config (argen.text): captions in the buffer instead
    attn_dropout: float = 0.1
    proj_dropout: float = 0.1
    mask_ratio_min: float = 0.7            # training mask ratio ~ N(1, 0.25) truncated to [min, 1]
    head: str = "diffusion"                # "diffusion" (DDPM, epsilon) or "flow" (flow matching, velocity)
    head_width: int = 1024
    head_depth: int = 6
    head_batch_mul: int = 4                # noise draws per target token in training
    diffusion_train_steps: int = 1000
    learn_sigma: bool = False              # official checkpoints: True (the head also predicts a variance)
    diffusion_clip_x0: float = 5.0         # clamp the head's x0 estimate to +-this while sampling (0: off, official)

    def __post_init__(self):
        super().__post_init__()
        for name in ("token_dim", "num_classes", "width", "depth", "heads", "head_width", "head_depth",
                     "head_batch_mul", "diffusion_train_steps"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        check(len(self.grid) == 2 and min(self.grid) >= 1, f"grid must be two positive ints (h, w), got {self.grid}")
        for name in ("dec_width", "dec_depth", "dec_heads"):
            check(getattr(self, name) is None or getattr(self, name) >= 1,
                  f"{name} must be None (the encoder's) or >= 1, got {getattr(self, name)}")
        check(self.width % self.heads == 0, f"width {self.width} must be divisible by heads {self.heads}")
        dw, _, dh = self.decoder
        check(dw % dh == 0, f"decoder width {dw} must be divisible by decoder heads {dh}")
        check(self.buffer_size >= 1, f"buffer_size must be >= 1 (the condition lives there), got {self.buffer_size}")
        check(0.0 < self.mask_ratio_min <= 1.0, f"mask_ratio_min must be in (0, 1], got {self.mask_ratio_min}")
        for name in ("label_drop", "attn_dropout", "proj_dropout"):
            check(0.0 <= getattr(self, name) < 1.0, f"{name} must be in [0, 1), got {getattr(self, name)}")
        check(self.mlp_ratio > 0, f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        check(self.head in HEAD_KINDS, f"head must be one of {', '.join(HEAD_KINDS)}, got {self.head!r}")
        check(not (self.learn_sigma and self.head == "flow"), "learn_sigma applies to the diffusion head only")

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def decoder(self) -> tuple[int, int, int]:
        """(width, depth, heads) of the decoder, the encoder's where not set."""
        return self.dec_width or self.width, self.dec_depth or self.depth, self.dec_heads or self.heads


# ---- transformer blocks (timm names: norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2) -------------

class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, attn_drop: float, proj_drop: float):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop, self.proj_drop = attn_drop, shard.Dropout(proj_drop)

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        B, L, C = x_BLC.shape
        q, k, v = self.qkv(x_BLC).view(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = shard.attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, L, C)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.drop = shard.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block (LayerNorm eps 1e-6, exact GELU), bidirectional attention."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, attn_drop: float, proj_drop: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, attn_drop, proj_drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), proj_drop)

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        x_BLC = x_BLC + self.attn(self.norm1(x_BLC))
        return x_BLC + self.mlp(self.norm2(x_BLC))


def truncated_mask_ratio(mask_ratio_min: float, generator: torch.Generator | None = None) -> float:
    """One draw of N(1, 0.25) truncated to [mask_ratio_min, 1], by inverting the normal CDF."""
    lo = 0.5 * (1 + math.erf((mask_ratio_min - 1.0) / 0.25 / math.sqrt(2)))  # Phi((min - 1) / 0.25)
    u = lo + (0.5 - lo) * torch.rand((), generator=generator, dtype=torch.float64)  # Phi(0) = 0.5
    return float(1.0 + 0.25 * torch.special.ndtri(u))


@register_model
class MAR(Generator):
    config_class = MARConfig
    family = "mar"
    consumes = "continuous"
    counted: ClassVar[dict[str, str]] = {"forward_calls": "encoder_blocks.0", "head_calls": "diffloss.net"}

    def __init__(self, config: MARConfig):
        super().__init__()
        self.config = c = config
        L = c.buffer_size + c.num_tokens
        dec_width, dec_depth, dec_heads = c.decoder
        # The buffer positions in front of the tokens hold the condition: the class vector in each, or
        # the projected caption tokens (one per buffer position) of a text model.
        self.text = text_conditioner(c.text, c.width, positions=c.buffer_size)
        if self.text is None:
            self.class_emb = nn.Embedding(c.num_classes, c.width)
            self.fake_latent = nn.Parameter(torch.zeros(1, c.width))      # the null condition
        self.z_proj = nn.Linear(c.token_dim, c.width)
        self.z_proj_ln = nn.LayerNorm(c.width, eps=1e-6)
        self.encoder_pos_embed_learned = nn.Parameter(torch.zeros(1, L, c.width))
        self.encoder_blocks = nn.ModuleList(Block(c.width, c.heads, c.mlp_ratio, c.attn_dropout, c.proj_dropout)
                                            for _ in range(c.depth))
        self.encoder_norm = nn.LayerNorm(c.width, eps=1e-6)
        self.decoder_embed = nn.Linear(c.width, dec_width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_width))
        self.decoder_pos_embed_learned = nn.Parameter(torch.zeros(1, L, dec_width))
        self.decoder_blocks = nn.ModuleList(
            Block(dec_width, dec_heads, c.mlp_ratio, c.attn_dropout, c.proj_dropout) for _ in range(dec_depth))
        self.decoder_norm = nn.LayerNorm(dec_width, eps=1e-6)
        self.diffusion_pos_embed_learned = nn.Parameter(torch.zeros(1, c.num_tokens, dec_width))
        head_kw = {"train_steps": c.diffusion_train_steps, "learn_sigma": c.learn_sigma,
                   "clip_x0": c.diffusion_clip_x0 or None} if c.head == "diffusion" else {}
        self.diffloss = make_head(c.head, c.token_dim, dec_width, c.head_width, c.head_depth,
                                  batch_mul=c.head_batch_mul, **head_kw)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # The official initialisation: N(0, 0.02) for embeddings and learned vectors, Xavier-uniform
        # for the body's linear layers. The head keeps its own (zero-initialised modulation).
        learned = [self.mask_token, self.encoder_pos_embed_learned, self.decoder_pos_embed_learned,
                   self.diffusion_pos_embed_learned]
        for p in learned + ([self.class_emb.weight, self.fake_latent] if self.text is None else []):
            nn.init.normal_(p, std=0.02)
        for name, m in self.named_modules():
            if name.startswith(("diffloss", "text.encoder")):  # they have their own initialisation
                continue
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # ---- body ---------------------------------------------------------------------------------------

    def condition(self, labels_B: torch.Tensor) -> torch.Tensor:
        """Condition ids (B,) -> buffer contents (B, 1 or buffer_size, width): the class embedding, or a text
        model's caption tokens; id ``num_classes`` is the learned null condition."""
        if self.text is not None:
            return self.text(labels_B).tokens_BLC
        null_B = labels_B == self.config.num_classes
        emb = self.class_emb(labels_B.masked_fill(null_B, 0))
        return torch.where(null_B[:, None], self.fake_latent.to(emb.dtype), emb)[:, None]

    def forward(self, tokens_BNC: torch.Tensor, mask_BN: torch.Tensor, labels_B: torch.Tensor) -> torch.Tensor:
        """Tokens (B, N, C), mask (B, N) bool (True = masked: its token is ignored), class ids (B,)
        -> per-position conditions for the head, z (B, N, dec_width).

        Every row must mask the same number of positions (the encoder drops them, as MAE does).
        """
        c = self.config
        B = tokens_BNC.shape[0]
        n_masked = mask_BN.sum(1)
        if bool((n_masked != n_masked[0]).any()):
            raise ArgenError("mask: every image of a batch must mask the same number of tokens")
        keep_BL = F.pad(~mask_BN, (c.buffer_size, 0), value=True)  # the buffer is always kept
        # Encoder: buffer (condition) + known tokens only.
        x_BLD = F.pad(self.z_proj(tokens_BNC), (0, 0, c.buffer_size, 0))
        x_BLD[:, : c.buffer_size] = self.condition(labels_B)
        x_BLD = self.z_proj_ln(x_BLD + self.encoder_pos_embed_learned)
        x_BKD = x_BLD[keep_BL].view(B, -1, c.width)
        for block in self.encoder_blocks:
            x_BKD = block(x_BKD)
        x_BKD = self.decoder_embed(self.encoder_norm(x_BKD))
        # Decoder: put the encoded tokens back, mask_token everywhere else.
        y_BLD = self.mask_token.to(x_BKD.dtype).expand(B, keep_BL.shape[1], -1).clone()
        y_BLD[keep_BL] = x_BKD.reshape(-1, x_BKD.shape[-1])
        y_BLD = y_BLD + self.decoder_pos_embed_learned
        for block in self.decoder_blocks:
            y_BLD = block(y_BLD)
        y_BLD = self.decoder_norm(y_BLD)
        return y_BLD[:, c.buffer_size:] + self.diffusion_pos_embed_learned

    # ---- training -----------------------------------------------------------------------------------

    def tokens_from_images(self, tokenizer, images: torch.Tensor) -> torch.Tensor:
        """Images -> (B, N, C) tokens drawn from the tokenizer's posterior (MAR trains on draws)."""
        with torch.no_grad():
            return tokenizer.encode(images, sample=True).flatten(2).transpose(1, 2)

    def random_mask(self, B: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, N) bool: the first ceil(N * ratio) positions of a random order per image, one ratio per batch."""
        N = self.config.num_tokens
        n_masked = math.ceil(N * truncated_mask_ratio(self.config.mask_ratio_min, generator))
        rank_BN = shard.rand(B, N, device=device, generator=generator).argsort(1).argsort(1)
        return rank_BN < n_masked

    def loss(self, tokens_BNC: torch.Tensor, labels_B: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        B = tokens_BNC.shape[0]
        labels_B = self.drop_labels(labels_B)
        mask_BN = self.random_mask(B, tokens_BNC.device)
        z_BND = self(tokens_BNC, mask_BN, labels_B)
        loss = self.diffloss.loss(tokens_BNC, z_BND, mask_BN)  # masked tokens only
        return loss, {"head_loss": float(loss.detach()), "mask_ratio": float(mask_BN.float().mean())}
