"""What every tokenizer shares: the config fields of the conv autoencoder, and a codebook
that fights collapse (k-means initialisation, usage tracking, dead-code restart).

Tokenizer protocol (images are float tensors in [-1, 1], shape (B, C, H, W)):
    encode(images) -> tokens            decode(tokens) -> images
    loss((images, labels)) -> (loss, metrics)    grid, codebook_size
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from argen.config import Config, check
from argen.errors import ArgenError
from argen.nn import shard
from argen.tokenizers.losses import ExtraLosses
from argen.tokenizers.nets import Decoder, Encoder
from argen.tokens import TokenSpec

RECON_LOSSES = ("l1", "l2")


@dataclass(frozen=True)
class ConvAEConfig(Config):
    """Fields of the conv encoder/decoder and its losses, shared by every tokenizer."""

    # checkpoints saved before decoder_level_attn existed had the attending lowest level
    ADDED: ClassVar[dict[str, Any]] = {"decoder_level_attn": True}

    image_channels: int = 1
    image_size: int = 8
    ch: int = 32                         # width of the first level
    ch_mult: tuple[int, ...] = (1, 2)    # one downsampling per extra level
    num_res_blocks: int = 1
    z_channels: int = 16                 # encoder output channels
    groups: int = 8                      # GroupNorm groups (32 in the official models)
    attn: bool = False                   # self-attention at the lowest resolution
    decoder_level_attn: bool = True      # with attn: the decoder's lowest level attends too (False: MAR's KL-16)
    recon_loss: str = "l2"
    adv_weight: float = 0.0              # PatchGAN hinge loss weight (0: off); for natural images
    disc_start: int = 0                  # training step at which the adversarial term switches on
    disc_ndf: int = 64                   # discriminator width
    perceptual_weight: float = 0.0       # VGG16 feature loss weight (0: off); needs perceptual_weights
    perceptual_weights: str | None = None  # path of a torchvision vgg16 state dict (.safetensors); never downloaded

    def __post_init__(self):
        super().__post_init__()
        check(self.image_channels in (1, 3), f"image_channels must be 1 or 3, got {self.image_channels}")
        for name in ("ch", "z_channels", "groups", "num_res_blocks", "image_size"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        check(all(m >= 1 for m in self.ch_mult), f"ch_mult entries must be >= 1, got {self.ch_mult}")
        check(len(self.ch_mult) >= 1, "ch_mult must have at least one level")
        check(self.image_size % self.downsample == 0,
              f"image_size {self.image_size} must be divisible by the downsampling factor {self.downsample}")
        check(self.recon_loss in RECON_LOSSES, f"recon_loss must be one of {RECON_LOSSES}, got {self.recon_loss!r}")
        check(self.adv_weight >= 0 and self.perceptual_weight >= 0, "adv_weight and perceptual_weight must be >= 0")
        check(self.perceptual_weight == 0 or self.perceptual_weights is not None,
              "perceptual_weight > 0 needs perceptual_weights: the path of a VGG16 state dict (nothing is downloaded)")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def grid(self) -> tuple[int, int]:
        g = self.image_size // self.downsample
        return (g, g)


@dataclass(frozen=True)
class CodebookConfig(ConvAEConfig):
    """A conv autoencoder with a codebook: the fields shared by the VQ tokenizers."""

    codebook_size: int = 64
    beta: float = 0.25                   # commitment weight
    kmeans_init: bool = True             # initialise the codebook with k-means on the first batch
    restart_every: int = 20              # dead-code restart period in training steps (0: never)
    restart_threshold: float = 0.1       # a code is dead when its hit-rate EMA falls below this share of uniform
    usage_decay: float = 0.9             # per-step decay of the hit-rate EMA (memory ~ 1 / (1 - decay) steps)

    def __post_init__(self):
        super().__post_init__()
        check(self.codebook_size >= 2, f"codebook_size must be >= 2, got {self.codebook_size}")
        check(self.restart_every >= 0, f"restart_every must be >= 0, got {self.restart_every}")
        check(0 < self.usage_decay < 1, f"usage_decay must be in (0, 1), got {self.usage_decay}")


class Tokenizer(nn.Module):
    """What every tokenizer declares: ``token_spec``, the tokens ``encode`` gives and ``decode`` takes.

    Images are (B, C, H, W) in [-1, 1]; training goes through ``loss(batch) -> (loss, metrics)``."""

    config: ConvAEConfig

    @property
    def token_spec(self) -> TokenSpec:
        raise NotImplementedError

    @property
    def grid(self) -> tuple[int, int]:
        return self.config.grid

    def code_vectors(self) -> torch.Tensor:
        """(V, code_dim): the vector each discrete token id stands for (what nearest-neighbour samplers
        such as LANTERN measure distances with); only single-scale discrete tokenizers have one."""
        raise ArgenError(f"{type(self).__name__} has no single codebook of discrete tokens")


def build_extra_losses(c: ConvAEConfig) -> ExtraLosses:
    return ExtraLosses(c.image_channels, c.adv_weight, c.disc_start, c.disc_ndf, c.perceptual_weight,
                       c.perceptual_weights)


def build_autoencoder(c: ConvAEConfig, encoder_z_channels: int | None = None) -> tuple[Encoder, Decoder]:
    """Encoder (to ``encoder_z_channels``, default ``z_channels``) and decoder (from ``z_channels``)."""
    kw = dict(ch=c.ch, ch_mult=c.ch_mult, num_res_blocks=c.num_res_blocks, groups=c.groups, attn_lowest=c.attn)
    return (Encoder(in_ch=c.image_channels, z_ch=encoder_z_channels or c.z_channels, **kw),
            Decoder(out_ch=c.image_channels, z_ch=c.z_channels, level_attn=c.decoder_level_attn, **kw))


def recon_loss(kind: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(x, y) if kind == "l1" else F.mse_loss(x, y)


def kmeans(x_NC: torch.Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None) -> torch.Tensor:
    """Plain Lloyd k-means; an empty cluster is re-seeded with a random point. Returns (k, C) centres."""
    n = x_NC.shape[0]
    idx = torch.randperm(n, generator=generator, device="cpu")[:k].to(x_NC.device)
    if n < k:  # fewer points than codes: repeat them with jitter
        idx = torch.randint(n, (k,), generator=generator, device="cpu").to(x_NC.device)
    centres = x_NC[idx].clone()
    for _ in range(iters):
        assign = torch.cdist(x_NC, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, x_NC)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1).to(x_NC.dtype)
        empty = counts.squeeze(1) == 0
        centres = torch.where(empty.unsqueeze(1), centres, sums / counts.clamp(min=1))
        if empty.any():
            refill = torch.randint(n, (int(empty.sum()),), generator=generator, device="cpu").to(x_NC.device)
            centres[empty] = x_NC[refill]
    return centres


class Codebook(nn.Module):
    """A (V, C) codebook with nearest-neighbour lookup and the standard fixes against collapse.

    ``usage_SV`` counts (as an EMA) how often each code is hit, per scale S (1 for
    single-scale tokenizers); it is what ``codebook usage`` and the dead-code
    restart read. These updates are made once per optimizer step (``end_step``), from the
    hits and candidate vectors of the whole global batch: summed over micro-batches and ranks,
    gathered in batch order. So every rank keeps the same codebook, and N ranks the one that
    one process keeps.
    """

    def __init__(self, codebook_size: int, dim: int, num_scales: int = 1, l2_norm: bool = False,
                 usage_decay: float = 0.99):
        super().__init__()
        self.l2_norm = l2_norm
        self.embedding = nn.Embedding(codebook_size, dim)
        nn.init.uniform_(self.embedding.weight, -1 / codebook_size, 1 / codebook_size)
        self.register_buffer("usage_SV", torch.zeros(num_scales, codebook_size))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.long))
        self.usage_decay = usage_decay
        self._hits_SV: torch.Tensor | None = None     # this step's hits, summed over its micro-batches
        self._candidates: list[list[torch.Tensor]] = []  # per micro-batch, per scale: restart candidates

    @property
    def codebook_size(self) -> int:
        return self.embedding.num_embeddings

    def codes(self) -> torch.Tensor:
        w = self.embedding.weight
        return F.normalize(w, dim=-1) if self.l2_norm else w

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        return F.embedding(idx, self.codes())

    def nearest(self, z_NC: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row (squared L2; cosine when codes are l2-normalised)."""
        e = self.codes()
        if self.l2_norm:
            return (F.normalize(z_NC, dim=-1) @ e.t()).argmax(-1)
        d = z_NC.pow(2).sum(-1, keepdim=True) - 2 * z_NC @ e.t() + e.pow(2).sum(-1)
        return d.argmin(-1)

    @torch.no_grad()
    def record_usage(self, idx: torch.Tensor, scale: int = 0) -> None:
        """Count this micro-batch's hits of ``scale``; ``end_step`` applies them."""
        if self._hits_SV is None:
            self._hits_SV = torch.zeros_like(self.usage_SV)
        self._hits_SV[scale] += torch.bincount(idx.flatten(), minlength=self.codebook_size).to(self.usage_SV.dtype)

    def keep_candidates(self, per_scale: list[torch.Tensor]) -> None:
        """Keep this micro-batch's vectors (per scale) as restart candidates for ``end_step``."""
        self._candidates.append([x.detach() for x in per_scale])

    @torch.no_grad()
    def end_step(self, combine, threshold: float) -> int:
        """Apply the step's statistics: the usage EMA from the hits of the global batch, then (when candidates
        were kept) restart dead codes from ``combine(per-scale candidates of the global batch)``. Returns the
        number of codes restarted."""
        if self._hits_SV is not None:
            hits_SV = shard.all_sum(self._hits_SV)
            seen_S = hits_SV.sum(1) > 0
            share_SV = hits_SV / hits_SV.sum(1, keepdim=True).clamp(min=1)
            d = self.usage_decay
            self.usage_SV[seen_S] = d * self.usage_SV[seen_S] + (1 - d) * share_SV[seen_S]
        self._hits_SV = None
        restarted = 0
        if self._candidates:
            per_scale = [shard.gather(torch.cat(parts)) for parts in zip(*self._candidates)]
            restarted = self.restart_dead(combine(per_scale), threshold)
        self._candidates = []
        return restarted

    @torch.no_grad()
    def init_codes(self, candidates_NC: torch.Tensor) -> None:
        """k-means initialisation from vectors of the first global batch (the same on every rank)."""
        x = F.normalize(candidates_NC, dim=-1) if self.l2_norm else candidates_NC
        self.embedding.weight.copy_(kmeans(x.float(), self.codebook_size))
        self.initialized.fill_(1)
        # Start the usage EMA at uniform so restarts only hit codes that really stay unused.
        self.usage_SV.fill_(1.0 / self.codebook_size)

    @torch.no_grad()
    def restart_dead(self, candidates_NC: torch.Tensor, threshold: float) -> int:
        """Replace codes whose summed hit share is below ``threshold / V`` with random candidates."""
        V = self.codebook_size
        dead = self.usage_SV.sum(0) < threshold / V * self.usage_SV.shape[0]
        n_dead = int(dead.sum())
        if n_dead == 0:
            return 0
        pick = torch.randint(candidates_NC.shape[0], (n_dead,), device="cpu").to(candidates_NC.device)
        new = candidates_NC[pick].to(self.embedding.weight.dtype)
        new = new + 0.01 * new.std() * torch.randn_like(new)
        self.embedding.weight.data[dead] = new
        self.usage_SV[:, dead] = 1.0 / V  # give new codes a grace period
        return n_dead


class CodebookTraining:
    """The training steps outside the gradient of a tokenizer with a ``Codebook`` (``self.quantize``) and a
    ``train_steps`` buffer; the trainer calls ``begin_training`` once before a fresh run's first step (with
    this rank's part of that step's batch) and ``end_step`` after every optimizer step. A tokenizer gives
    ``init_vectors(images)`` (per scale, for k-means) and ``combine(per_scale)`` (one candidate set)."""

    @torch.no_grad()
    def begin_training(self, batch) -> None:
        """k-means initialisation of the codebook from the first global batch (gathered from every rank)."""
        if self.config.kmeans_init and not bool(self.quantize.initialized):
            per_scale = [shard.gather(x) for x in self.init_vectors(batch[0])]
            self.quantize.init_codes(self.combine(per_scale))

    def restart_due(self) -> bool:
        """Whether this step ends with a dead-code restart (so its micro-batches keep candidates)."""
        every = self.config.restart_every
        return self.training and every > 0 and (int(self.train_steps) + 1) % every == 0

    def end_step(self) -> dict[str, float]:
        """Usage statistics and restarts of the global batch; counts the step."""
        restarted = self.quantize.end_step(self.combine, self.config.restart_threshold)
        due = self.restart_due()
        self.train_steps += 1
        return {"restarted": restarted} if due else {}


def usage_stats(idx: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Fraction of codes used and perplexity exp(H) of the code distribution in ``idx``."""
    counts = torch.bincount(idx.flatten(), minlength=codebook_size).double()
    p = counts / counts.sum()
    ent = -(p[p > 0] * p[p > 0].log()).sum()
    return {"usage": float((counts > 0).double().mean()), "perplexity": float(ent.exp())}
