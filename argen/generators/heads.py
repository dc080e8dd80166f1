"""Per-token heads for continuous tokens: p(x | z) for one token x (C channels) given a condition z.

MAR's body gives every masked position a condition vector z; a head turns z into a token.
A head is a network plus a scheduler, kept apart as diffusers and the official MAR code keep
them. Both heads share one network, ``AdaLNMLP`` (the official "SimpleMLPAdaLN", parameter
names kept so that official checkpoints load by key map: ``diffloss.net.*`` in MAR), and one
interface:

    head.loss(target_BNC, cond_BND, mask_BN) -> scalar   # tokens repeated batch_mul times, fresh t and noise
    head.net_calls(steps, solver) -> int           # network evaluations per sampling call

* ``DiffusionHead``: DDPM with improved DDPM's cosine schedule and epsilon prediction,
  optionally with a learned variance ("learned range", trained with the VLB term on a
  stop-gradient mean, the hybrid loss of improved DDPM and the official MAR code); its
  arithmetic is ``argen.schedulers.ddpm``. ``clip_x0`` (off by default, as the official code)
  bounds each sampling step's x0 estimate: without it an undertrained head's samples blow up
  (see the class docstring).
* ``FlowHead``: flow matching on the straight path x_t = (1 - t) x0 + t noise with
  t ~ U(0, 1) and velocity prediction (``argen.schedulers.flow``).

Sampling (the loops, classifier-free guidance, temperature) is ``argen.sampling.head.sample_head``:
a head knows how it is trained and what its network predicts, not how a sampler drives it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from argen.config import check
from argen.nn import shard
from argen.schedulers import ddpm, flow

HEAD_KINDS = ("diffusion", "flow")


# ---- the network ----------------------------------------------------------------------------------

def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """t (N,) float -> (N, width): [cos, sin] of 256 geometric frequencies (DiT's), then ``mlp.0``, SiLU, ``mlp.2``."""

    def __init__(self, width: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t_N: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        # float32 whatever the weights: t up to 1000 times a frequency needs the mantissa
        freqs_F = torch.exp(-math.log(10000.0) / half * torch.arange(half, device=t_N.device, dtype=torch.float32))
        args_NF = t_N.float()[:, None] * freqs_F[None]
        return self.mlp(torch.cat([torch.cos(args_NF), torch.sin(args_NF)], -1).to(self.mlp[0].weight.dtype))


class ResBlock(nn.Module):
    """x + gate * MLP(modulate(LN(x), shift, scale)); shift, scale, gate come from the condition y."""

    def __init__(self, width: int):
        super().__init__()
        self.in_ln = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x_NW: torch.Tensor, y_NW: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.adaLN_modulation(y_NW).chunk(3, -1)
        return x_NW + gate * self.mlp(_modulate(self.in_ln(x_NW), shift, scale))


class FinalLayer(nn.Module):
    def __init__(self, width: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x_NW: torch.Tensor, y_NW: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(y_NW).chunk(2, -1)
        return self.linear(_modulate(self.norm_final(x_NW), shift, scale))


class AdaLNMLP(nn.Module):
    """(x (N, in_channels), t (N,), c (N, cond_dim)) -> (N, out_channels): residual MLP blocks modulated
    by y = time_embed(t) + cond_embed(c). The official SimpleMLPAdaLN, with its parameter names."""

    def __init__(self, in_channels: int, width: int, out_channels: int, cond_dim: int, depth: int):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("width", width), ("out_channels", out_channels),
                        ("cond_dim", cond_dim), ("depth", depth)):
            check(isinstance(v, int) and v >= 1, f"{name} must be an int >= 1, got {v!r}")
        self.time_embed = TimestepEmbedder(width)
        self.cond_embed = nn.Linear(cond_dim, width)
        self.input_proj = nn.Linear(in_channels, width)
        self.res_blocks = nn.ModuleList(ResBlock(width) for _ in range(depth))
        self.final_layer = FinalLayer(width, out_channels)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # The official init: Xavier-uniform linears with zero bias, N(0, 0.02) timestep MLP, and zeros on
        # every modulation and on the output, so that each block starts as the identity and the output as 0.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for lin in (self.time_embed.mlp[0], self.time_embed.mlp[2]):
            nn.init.normal_(lin.weight, std=0.02)
        for lin in [b.adaLN_modulation[-1] for b in self.res_blocks] + [self.final_layer.adaLN_modulation[-1],
                                                                        self.final_layer.linear]:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x_NC: torch.Tensor, t_N: torch.Tensor, c_ND: torch.Tensor | None = None, *,
                cond_emb_NW: torch.Tensor | None = None) -> torch.Tensor:
        """``t_N`` may have one row, shared by all N (samplers: one timestep per step). ``cond_emb_NW``
        (= ``cond_embed(c_ND)``, computed once per sample call) may be given instead of ``c_ND``."""
        if cond_emb_NW is None:
            cond_emb_NW = self.cond_embed(c_ND)
        y_NW = self.time_embed(t_N) + cond_emb_NW
        x_NW = self.input_proj(x_NC)
        for block in self.res_blocks:
            x_NW = block(x_NW, y_NW)
        return self.final_layer(x_NW, y_NW)


# ---- the heads: a network and a scheduler -----------------------------------------------------

def _check_head_args(token_dim: int, cond_dim: int, width: int, depth: int, train_steps: int, batch_mul: int) -> None:
    for name, v in (("token_dim", token_dim), ("cond_dim", cond_dim), ("width", width), ("depth", depth),
                    ("batch_mul", batch_mul)):
        check(isinstance(v, int) and v >= 1, f"{name} must be an int >= 1, got {v!r}")
    check(isinstance(train_steps, int) and train_steps >= 2, f"train_steps must be an int >= 2, got {train_steps!r}")


# ---- diffusion -----------------------------------------------------------------------------------

class DiffusionHead(nn.Module):
    """DDPM head (module ``diffloss`` in MAR, network ``net``: keys ``diffloss.net.*``).

    ``learn_sigma``: the network outputs 2C channels, eps and v in [-1, 1] that interpolates the log
    variance of each step between the posterior's (v = -1) and beta's (v = 1), as official checkpoints do.

    ``clip_x0`` (None: off, the official behaviour; an attribute, may be changed after construction):
    clamp each sampling step's x0 estimate to [-clip_x0, clip_x0], improved DDPM's ``clip_denoised``
    with a range. Why it exists: the cosine schedule caps the last beta at 0.999, so alpha_bar(T-1) ~
    2.4e-9 and x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) multiplies the network's eps error at
    t = T-1 by ~2e4; the first respaced step passes it on times ~0.016 (100 of 1000 steps, more for
    fewer steps). A well-trained network predicts eps there to ~1e-4 and nothing happens; an
    undertrained one (the official code's black or NaN samples early in training, LTH14/mar #36, #70)
    gives samples hundreds of units off. Any bound above the data's range is a no-op for an accurate
    network, since the exact x0 estimate E[x0 | x_t] lies within the data's range.
    """

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int, *, train_steps: int = 1000,
                 learn_sigma: bool = False, batch_mul: int = 4, clip_x0: float | None = None):
        super().__init__()
        _check_head_args(token_dim, cond_dim, width, depth, train_steps, batch_mul)
        check(clip_x0 is None or clip_x0 > 0, f"clip_x0 must be None (off) or > 0, got {clip_x0}")
        self.token_dim, self.train_steps, self.batch_mul = token_dim, train_steps, batch_mul
        self.learn_sigma, self.clip_x0 = learn_sigma, clip_x0
        self.net = AdaLNMLP(token_dim, width, 2 * token_dim if learn_sigma else token_dim, cond_dim, depth)
        self._schedulers: dict[int, ddpm.DDPMScheduler] = {}

    def scheduler(self, steps: int) -> ddpm.DDPMScheduler:
        """The chain respaced to ``steps`` steps (``train_steps``: the training chain), built once per count."""
        if steps not in self._schedulers:
            self._schedulers[steps] = ddpm.DDPMScheduler(self.train_steps, steps)
        return self._schedulers[steps]

    def net_calls(self, steps: int, solver: str | None = None) -> int:
        """Network calls per sampling call of ``steps`` steps: one per step, with or without CFG. ``solver``
        is ignored (there is one, ancestral sampling); it is accepted so that callers treat both heads alike."""
        return ddpm.net_calls(steps)

    def loss(self, target_BNC: torch.Tensor, cond_BND: torch.Tensor, mask_BN: torch.Tensor | None = None) -> torch.Tensor:
        """Epsilon MSE over batch_mul noisy copies of each token (t ~ U{0..T-1}); with ``learn_sigma`` plus the
        VLB term (in bits per channel) of the learned variance, the mean held fixed (stop-gradient).
        See ``training_rows`` for the shapes and ``mask_BN``."""
        x0, cond, rows = training_rows(target_BNC, cond_BND, mask_BN, self.batch_mul)
        C = self.token_dim
        sched = self.scheduler(self.train_steps)
        i_M = rows(shard.randint(self.train_steps, x0.shape[:3], batch_dim=1, device=x0.device))
        i_M1 = i_M[:, None]
        noise_MC = rows(shard.randn_like(x0, batch_dim=1))
        x0_MC, cond_MD = rows(x0), rows(cond)
        x_t = sched.add_noise(x0_MC, noise_MC, i_M1)
        out = self.net(x_t, sched.timestep(i_M, x0_MC), cond_MD)
        eps = out[:, :C]
        loss = F.mse_loss(eps, noise_MC)
        if not self.learn_sigma:
            return loss
        # Improved DDPM's hybrid loss: the VLB trains only the variance, so the mean uses a detached eps.
        return loss + sched.vlb_terms(x0_MC, x_t, eps.detach(), out[:, C:], i_M1).mean() / math.log(2.0)


# ---- flow matching -------------------------------------------------------------------------------

class FlowHead(nn.Module):
    """Flow-matching head: x_t = (1 - t) x0 + t noise, the network predicts the velocity noise - x0.

    t ~ U(0, 1) in training (uniform, not logit-normal: the few-step samplers spend equal steps over
    [0, 1], and a 2-channel token has no high-resolution detail that would want mid-range t).
    The network sees t * ``train_steps`` (1000 by default), the range of the diffusion head's
    timesteps, so the same sinusoidal embedder resolves it equally well. ``learn_sigma`` must be False.
    """

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int, *, train_steps: int = 1000,
                 learn_sigma: bool = False, batch_mul: int = 4):
        super().__init__()
        _check_head_args(token_dim, cond_dim, width, depth, train_steps, batch_mul)
        check(not learn_sigma, "learn_sigma applies to the diffusion head only (a flow head predicts a velocity)")
        self.token_dim, self.train_steps, self.batch_mul = token_dim, train_steps, batch_mul
        self.net = AdaLNMLP(token_dim, width, token_dim, cond_dim, depth)

    def net_calls(self, steps: int, solver: str = "euler") -> int:
        """Network calls per sampling call of ``steps`` steps, with or without CFG: Euler one per step;
        Heun two per step except the last, which is a plain Euler step onto t = 0 (2 steps - 1)."""
        return flow.net_calls(steps, solver)

    def loss(self, target_BNC: torch.Tensor, cond_BND: torch.Tensor, mask_BN: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity MSE over batch_mul noisy copies of each token, t ~ U(0, 1) (shapes: ``training_rows``)."""
        x0, cond, rows = training_rows(target_BNC, cond_BND, mask_BN, self.batch_mul)
        t_M1 = rows(shard.rand(*x0.shape[:3], 1, batch_dim=1, device=x0.device, dtype=x0.dtype))
        noise_MC = rows(shard.randn_like(x0, batch_dim=1))
        x0_MC, cond_MD = rows(x0), rows(cond)
        x_t = flow.add_noise(x0_MC, noise_MC, t_M1)
        return F.mse_loss(self.net(x_t, t_M1[:, 0] * self.train_steps, cond_MD), flow.velocity(x0_MC, noise_MC))


def training_rows(target_BNC: torch.Tensor, cond_BND: torch.Tensor, mask_BN: torch.Tensor | None, batch_mul: int):
    """The rows a head trains on: ``target`` (B, N, C) or (B, C) and its conditions repeated batch_mul
    times, as (batch_mul, B, N, .) views, and ``rows`` mapping such a tensor to the trained rows (M, .):
    every token, or those where ``mask_BN`` is true, copy-major. Noise and times are drawn per token in
    that (batch_mul, B, N) shape (the batch on dim 1), so they are defined for the global batch (``shard``)
    whichever tokens are kept; shards must keep equal numbers of rows for the mean to be global (MAR masks
    the same count in every image of a batch)."""
    if target_BNC.ndim == 2:
        target_BNC, cond_BND = target_BNC[:, None], cond_BND[:, None]
    x0 = target_BNC.expand(batch_mul, *target_BNC.shape)
    cond = cond_BND.expand(batch_mul, *cond_BND.shape)
    if mask_BN is None:
        return x0, cond, lambda x: x.flatten(0, 2)
    return x0, cond, lambda x: x[:, mask_BN].flatten(0, 1)


def make_head(kind: str, token_dim: int, cond_dim: int, width: int, depth: int, **kw) -> DiffusionHead | FlowHead:
    """The head called ``kind`` ("diffusion" or "flow"); ``kw`` go to its constructor."""
    check(kind in HEAD_KINDS, f"kind must be one of {', '.join(HEAD_KINDS)}, got {kind!r}")
    return (DiffusionHead if kind == "diffusion" else FlowHead)(token_dim, cond_dim, width, depth, **kw)
