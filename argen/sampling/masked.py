"""Masked parallel decoding: MaskGIT (discrete tokens) and MAR (continuous tokens, ``sample_continuous``).

MaskGIT: T steps, each commits the most confident of the masked tokens.

Per step t of T:
  1. one transformer call on the current map (with CFG: [cond; uncond] stacked as one 2B batch);
  2. CFG, then temperature / top-k / top-p; draw a token for every position at once;
  3. confidence of each drawn token = log p(token) + choice_temperature * (1 - (t + 1) / T) * Gumbel
     (the annealed noise of google-research/maskgit: explore early, be greedy late); tokens that
     were already committed, or given in ``known``, get +inf so they are never re-masked;
  4. keep everything except the ``mask_counts[t]`` least confident positions, which go back to [MASK].
The number still masked follows the schedule ``gamma`` over the *unknown* positions only, and
reaches 0 at step T, so exactly T forward calls are made and none synchronises with the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from argen.config import Config, check
from argen.errors import ArgenError, ConfigError
from argen.sampling.processors import CFG_SCHEDULES, apply, build_processors, check_knobs, guide, sample_categorical
from argen.sampling.schedules import MASK_SCHEDULES, mask_counts, mask_counts_batched


@dataclass(frozen=True)
class MaskedSamplerConfig(Config):
    steps: int = 8                 # T: forward calls per image (batched 2B with cfg > 0)
    schedule: str = "cosine"       # mask schedule gamma: fraction still masked after progress r
    temperature: float = 1.0
    top_k: int = 0                 # 0: off
    top_p: float = 1.0             # 1.0: off
    cfg: float = 0.0               # guidance weight w: logits = cond + w (cond - uncond); 0: off
    cfg_schedule: str = "constant"  # "linear": w_t = w * (t + 1) / T
    choice_temperature: float = 4.5  # scale of the Gumbel noise on confidences at step 0 (annealed to 0)

    def __post_init__(self):
        super().__post_init__()
        check(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        check(self.schedule in MASK_SCHEDULES,
              f"schedule must be one of {', '.join(MASK_SCHEDULES)}, got {self.schedule!r}")
        check_knobs(self)
        check(self.choice_temperature >= 0, f"choice_temperature must be >= 0, got {self.choice_temperature}")


def _gumbel(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    # -log(-log U); U is kept away from 0 so that 0 * noise (the last step) is never 0 * inf = NaN.
    u = torch.rand(shape, generator=generator, device=device).clamp_(min=1e-20)
    return -torch.log(-torch.log(u))


@torch.no_grad()
def sample(model, tokenizer, labels_B: torch.Tensor, config: MaskedSamplerConfig = MaskedSamplerConfig(),
           generator: torch.Generator | None = None,
           known: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Sample token maps for class ids ``labels_B``: (B, h, w) long, every id < vocab_size.

    ``known = (idx, known_mask)``, each (B, h*w) or (B, h, w): positions where ``known_mask`` is
    true start with ``idx``'s token and are never resampled or re-masked (inpainting,
    outpainting); the schedule then runs over the unknown positions. Without ``known``,
    ``steps`` must be <= h*w; an unknown region smaller than ``steps`` commits one token per
    step and then nothing (the call count stays T). ``tokenizer`` is only checked for its grid.
    """
    c = model.config
    (h, w), B, T = c.grid, labels_B.shape[0], config.steps
    N, mask_id, device = h * w, c.vocab_size, labels_B.device
    if tokenizer is not None and tuple(tokenizer.grid) != tuple(c.grid):
        raise ConfigError(f"tokenizer grid {tuple(tokenizer.grid)} does not match the generator's grid {c.grid}")
    if known is None:
        if T > N:
            raise ConfigError(f"steps ({T}) must be <= the number of tokens ({N} = {h}x{w})")
        idx_BN = torch.full((B, N), mask_id, dtype=torch.long, device=device)
    else:
        if known[0].numel() != B * N or known[1].numel() != B * N:
            raise ArgenError(f"known: expected (idx, mask) of shape ({B}, {N}) or ({B}, {h}, {w}) each, got "
                             f"{tuple(known[0].shape)} and {tuple(known[1].shape)}")
        given_BN, known_BN = known[0].reshape(B, N).long(), known[1].reshape(B, N).bool()
        idx_BN = torch.where(known_BN, given_BN, mask_id)
    counts_BT = mask_counts_batched(T, (idx_BN == mask_id).sum(1), config.schedule)  # (B, T)

    use_cfg = config.cfg > 0
    labels = torch.cat([labels_B, torch.full_like(labels_B, c.num_classes)]) if use_cfg else labels_B
    procs = build_processors(config.temperature, config.top_k, config.top_p)
    for t in range(T):
        logits_BNV = model(torch.cat([idx_BN, idx_BN]) if use_cfg else idx_BN, labels).float()
        if use_cfg:
            w_t = config.cfg * ((t + 1) / T if config.cfg_schedule == "linear" else 1.0)
            logits_BNV = guide(logits_BNV, w_t)
        # Confidence comes from the guided logits before truncation: under top_k=1 every kept
        # token would have p = 1 and the order in which positions are committed would be lost.
        logp_BNV = torch.log_softmax(logits_BNV, -1)
        drawn_BN = sample_categorical(apply(logits_BNV, procs, {"step": t, "num_steps": T}), generator)

        masked_BN = idx_BN == mask_id
        drawn_BN = torch.where(masked_BN, drawn_BN, idx_BN)  # committed and known tokens stay
        conf_BN = logp_BNV.gather(-1, drawn_BN[..., None])[..., 0]
        noise_scale = config.choice_temperature * (1.0 - (t + 1) / T)
        conf_BN = conf_BN + noise_scale * _gumbel((B, N), generator, device)
        conf_BN = conf_BN.masked_fill(~masked_BN, float("inf"))
        # Re-mask the counts_BT[:, t] least confident positions: a rank (stable on ties) rather
        # than a threshold, so that exactly that many go back even when confidences tie.
        rank_BN = conf_BN.argsort(dim=-1, stable=True).argsort(-1)
        idx_BN = torch.where(rank_BN < counts_BT[:, t : t + 1], mask_id, drawn_BN)
    return idx_BN.view(B, h, w)


# ---- MAR: continuous tokens, random order, a head per step ------------------------------------------

HEAD_SOLVERS = ("euler", "heun")


@dataclass(frozen=True)
class ContinuousSamplerConfig(Config):
    ar_steps: int = 64             # body calls per image (each batched 2B with cfg > 0)
    head_steps: int = 100          # diffusion steps (respaced) or flow steps per AR step
    schedule: str = "cosine"       # fraction of tokens still masked after progress r
    temperature: float = 1.0       # diffusion: scales the noise of each step; flow: the initial noise
    cfg: float = 0.0               # guidance weight w on the head's prediction: cond + w (cond - uncond); 0: off
    cfg_schedule: str = "linear"   # "linear" (MAR): w_t = w * (tokens known after step t) / N
    solver: str = "euler"          # flow head only: "euler" (head_steps calls) or "heun" (2 head_steps - 1)

    def __post_init__(self):
        super().__post_init__()
        check(self.ar_steps >= 1, f"ar_steps must be >= 1, got {self.ar_steps}")
        check(self.head_steps >= 1, f"head_steps must be >= 1, got {self.head_steps}")
        check(self.schedule in MASK_SCHEDULES,
              f"schedule must be one of {', '.join(MASK_SCHEDULES)}, got {self.schedule!r}")
        check(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        check(self.cfg >= 0, f"cfg must be >= 0 (0 = off), got {self.cfg}")
        check(self.cfg_schedule in CFG_SCHEDULES, f"cfg_schedule must be one of {CFG_SCHEDULES}")
        check(self.solver in HEAD_SOLVERS, f"solver must be one of {HEAD_SOLVERS}, got {self.solver!r}")


@torch.no_grad()
def sample_continuous(model, tokenizer, labels_B: torch.Tensor,
                      config: ContinuousSamplerConfig = ContinuousSamplerConfig(),
                      generator: torch.Generator | None = None,
                      known: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Sample continuous token maps for class ids ``labels_B``: (B, C, h, w), ready for ``tokenizer.decode``.

    Each image gets a random order over its unknown positions; after step t of T the first
    ``mask_counts[t]`` of that order are still masked, so step t predicts the tokens ranked in
    [counts[t], counts[t-1]). Per step the body runs once (2B rows with CFG) and the head runs
    once on the to-be-predicted tokens of every image together (2M rows with CFG), so an image
    costs ``ar_steps`` body rows and ``ar_steps * head_steps`` head evaluations (an inpainting
    region of U < ar_steps tokens takes U steps, one token each).

    ``known = (tokens, known_mask)``: tokens (B, C, h, w) or (B, N, C), mask (B, N) or (B, h, w);
    known tokens are kept exactly and only the rest is sampled. Every image of the batch must
    have the same number of unknown tokens (the body drops masked tokens, as MAE does).
    """
    c = model.config
    (h, w), B, T, C = c.grid, labels_B.shape[0], config.ar_steps, c.token_dim
    N, device = h * w, labels_B.device
    if tokenizer is not None and (tuple(tokenizer.grid) != tuple(c.grid) or tokenizer.token_dim != C):
        raise ConfigError(f"tokenizer tokens {tuple(tokenizer.grid)} x {tokenizer.token_dim} do not match the "
                          f"generator's {c.grid} x {C}")
    tokens_BNC = torch.zeros(B, N, C, device=device)
    known_BN = torch.zeros(B, N, dtype=torch.bool, device=device)
    if known is not None:
        given, mask = known
        if given.dim() == 4:  # (B, C, h, w) -> (B, N, C)
            given = given.flatten(2).transpose(1, 2)
        if given.shape != (B, N, C) or mask.numel() != B * N:
            raise ArgenError(f"known: expected tokens ({B}, {C}, {h}, {w}) and a mask ({B}, {h}, {w}), got "
                             f"{tuple(known[0].shape)} and {tuple(mask.shape)}")
        known_BN = mask.reshape(B, N).bool()
        tokens_BNC = torch.where(known_BN[..., None], given.to(tokens_BNC.dtype), tokens_BNC)
    n_unknown = (~known_BN).sum(1)
    if bool((n_unknown != n_unknown[0]).any()):
        raise ArgenError("known: every image of a batch must have the same number of unknown tokens")
    U = int(n_unknown[0])
    if known is None and T > N:
        raise ConfigError(f"ar_steps ({T}) must be <= the number of tokens ({N} = {h}x{w})")
    if U == 0:
        return tokens_BNC.transpose(1, 2).reshape(B, C, h, w)
    counts = [U] + mask_counts(min(T, U), U, config.schedule)  # still masked before / after each step
    # A random rank among the unknown positions (known ones rank last and are never masked).
    noise_BN = torch.rand(B, N, generator=generator, device=device).masked_fill(known_BN, 2.0)
    rank_BN = noise_BN.argsort(1).argsort(1)

    use_cfg = config.cfg > 0
    labels = torch.cat([labels_B, torch.full_like(labels_B, c.num_classes)]) if use_cfg else labels_B
    head_kw = {"solver": config.solver} if c.head == "flow" else {}
    for t in range(len(counts) - 1):
        mask_BN = rank_BN < counts[t]
        pred_BN = mask_BN & ~(rank_BN < counts[t + 1])
        two = (lambda x: torch.cat([x, x])) if use_cfg else (lambda x: x)
        z_BND = model(two(tokens_BNC), two(mask_BN), labels)
        w_t = config.cfg * ((N - counts[t + 1]) / N if config.cfg_schedule == "linear" else 1.0)
        # Rows of the head batch: the predicted tokens of every image, then (CFG) the same ones unconditioned.
        cond_MD = torch.cat([z_BND[:B][pred_BN], z_BND[B:][pred_BN]]) if use_cfg else z_BND[pred_BN]
        x_MC = model.diffloss.sample(cond_MD, steps=config.head_steps, temperature=config.temperature,
                                     cfg=w_t, generator=generator, **head_kw)
        tokens_BNC[pred_BN] = x_MC.to(tokens_BNC.dtype)
    return tokens_BNC.transpose(1, 2).reshape(B, C, h, w)
