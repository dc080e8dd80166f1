"""Per-token heads for continuous tokens: p(x | z) for one token x (C channels) given a condition z.

MAR's body gives every masked position a condition vector z; a head turns z into a token.
Both heads share one network, ``AdaLNMLP`` (the official "SimpleMLPAdaLN", parameter names
kept so that official checkpoints load by key map), and one interface:

    head.loss(target_NC, cond_ND) -> scalar        # rows repeated batch_mul times with fresh t and noise
    head.sample(cond_ND, steps=..., temperature=..., cfg=..., generator=...) -> x_NC
    head.net_calls(steps, solver) -> int           # network evaluations per sample() call

* ``DiffusionHead``: DDPM with improved DDPM's cosine schedule and epsilon prediction,
  optionally with a learned variance ("learned range", trained with the VLB term on a
  stop-gradient mean, the hybrid loss of improved DDPM and the official MAR code); sampled
  by ancestral steps over ``steps`` respaced timesteps. The temperature scales the noise
  added at each step, not the initial noise (as the official code). ``clip_x0`` (off by
  default, as the official code) bounds each step's x0 estimate: without it an undertrained
  head's samples blow up (see the class docstring).
* ``FlowHead``: flow matching on the straight path x_t = (1 - t) x0 + t noise with
  t ~ U(0, 1), velocity prediction, integrated from t = 1 to 0 by Euler or Heun. The
  temperature scales the initial noise (the only noise there is).

Classifier-free guidance: ``cond_ND`` holds 2N rows ``[cond; uncond]``; both halves share the
current sample (so they start from the same noise), the network runs once per step on the 2N
rows, and the guided prediction is ``cond + cfg * (cond - uncond)`` (argen's convention:
cfg = 0 is off; the official scale s is 1 + cfg). ``cfg`` may be a float tensor (N,) of
per-row weights. A learned variance is taken from the cond half, as the official code does.

Speed: every step moves the whole (N, C) batch at once; ``cond_embed`` runs once per
``sample`` call and the timestep embedding once per step on a single row (all rows share t),
so a step costs the residual blocks only. Schedules are computed in float64 on the CPU once
per step count and cast once per (device, dtype); nothing is saved in checkpoints.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from argen.config import check
from argen.sampling.processors import guide

HEAD_KINDS = ("diffusion", "flow")
SOLVERS = ("euler", "heun")


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


# ---- shared plumbing ------------------------------------------------------------------------------

def _check_head_args(token_dim: int, cond_dim: int, width: int, depth: int, train_steps: int, batch_mul: int) -> None:
    for name, v in (("token_dim", token_dim), ("cond_dim", cond_dim), ("width", width), ("depth", depth),
                    ("batch_mul", batch_mul)):
        check(isinstance(v, int) and v >= 1, f"{name} must be an int >= 1, got {v!r}")
    check(isinstance(train_steps, int) and train_steps >= 2, f"train_steps must be an int >= 2, got {train_steps!r}")


def _check_steps(steps: int) -> None:
    check(isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1,
          f"steps must be an int >= 1, got {steps!r}")


def _sample_args(cond_ND: torch.Tensor, steps: int, temperature: float, cfg) -> tuple[int, float | torch.Tensor]:
    """Validate the sampling arguments (one-line errors). Returns N, the number of tokens to sample, and
    the guidance weight: 0.0 (off), a float, or an (N, 1) column of per-row weights."""
    _check_steps(steps)
    check(temperature > 0, f"temperature must be > 0, got {temperature}")
    check(cond_ND.dim() == 2, f"cond must be (rows, cond_dim), got shape {tuple(cond_ND.shape)}")
    if torch.is_tensor(cfg):  # per-row weights: always guided (a zero row is the conditional model alone)
        check(cond_ND.shape[0] % 2 == 0 and cfg.shape == (cond_ND.shape[0] // 2,),
              f"cfg as a tensor must have shape (N,) for cond rows [cond; uncond] (2N), got cfg "
              f"{tuple(cfg.shape)} and {cond_ND.shape[0]} cond rows")
        check(cfg.is_floating_point(), f"cfg as a tensor must be floating point, got {cfg.dtype}")
        return cond_ND.shape[0] // 2, cfg[:, None]
    check(cfg >= 0, f"cfg must be >= 0 (0 = off), got {cfg}")
    if cfg == 0:
        return cond_ND.shape[0], 0.0
    check(cond_ND.shape[0] % 2 == 0, f"cfg > 0 needs cond rows [cond; uncond] (an even number), got {cond_ND.shape[0]}")
    return cond_ND.shape[0] // 2, float(cfg)


def _predict(net: AdaLNMLP, x_NC: torch.Tensor, t: float, cond_emb: torch.Tensor, w, C: int):
    """One network call at time ``t`` (network units). Returns the (guided) prediction (N, C) and the other
    output channels (N, O - C), a learned variance, from the cond half."""
    guided = torch.is_tensor(w) or w > 0
    x_in = torch.cat([x_NC, x_NC]) if guided else x_NC  # both halves see the same sample
    out = net(x_in, torch.full((1,), float(t), device=x_NC.device), cond_emb_NW=cond_emb)
    if not guided:
        return out[:, :C], out[:, C:]
    if torch.is_tensor(w):
        w = w.to(device=out.device, dtype=out.dtype)
    return guide(out[:, :C], w), out[: x_NC.shape[0], C:]


def _dtype(net: AdaLNMLP) -> torch.dtype:
    return net.cond_embed.weight.dtype


def _noise(x_NC: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x_NC.shape, generator=generator, device=x_NC.device, dtype=x_NC.dtype)


# ---- diffusion -----------------------------------------------------------------------------------

def cosine_alphas_cumprod(train_steps: int) -> torch.Tensor:
    """alpha_bar_t, t = 0..T-1, of improved DDPM's cosine schedule (each beta capped at 0.999), float64."""
    s = torch.arange(train_steps + 1, dtype=torch.float64) / train_steps
    f = torch.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, 0)


def respaced_timesteps(train_steps: int, steps: int) -> list[int]:
    """``steps`` evenly spaced timesteps of 0..train_steps-1, both ends included, rounded as improved DDPM's
    ``space_timesteps`` does. One step keeps T-1 only (improved DDPM keeps 0, which would return the noise)."""
    _check_steps(steps)
    check(steps <= train_steps, f"steps ({steps}) must be <= the head's train_steps ({train_steps})")
    if steps == 1:
        return [train_steps - 1]
    stride = (train_steps - 1) / (steps - 1)
    return [round(i * stride) for i in range(steps)]


class _Chain:
    """A diffusion chain over the kept timesteps ``ts`` (all of them, or a respaced subset), float64.

    Betas are recomputed between consecutive kept steps from alpha_bar, so a respaced chain is a
    proper DDPM of its own (improved DDPM's respacing). Index i is the i-th kept step."""

    def __init__(self, abar_full: torch.Tensor, ts: list[int]):
        self.ts = ts
        abar = abar_full[ts]
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        betas = 1 - abar / abar_prev
        post_var = betas * (1 - abar_prev) / (1 - abar)
        # posterior variance is 0 at the first step: its log takes the next value, as DDPM's "clipped" log
        # (a one-step chain never needs it: its only step returns the mean)
        post_logvar = torch.log(torch.cat([post_var[1:2], post_var[1:]]) if len(ts) > 1 else betas)
        coef_x0 = betas * abar_prev.sqrt() / (1 - abar)            # posterior mean = coef_x0 x0 + coef_xt x_t
        coef_xt = (1 - abar_prev) * (1 - betas).sqrt() / (1 - abar)
        self.f64 = {
            "t": torch.tensor(ts, dtype=torch.float64),
            "sqrt_abar": abar.sqrt(), "sqrt_1m_abar": (1 - abar).sqrt(),
            "x0_x": abar.rsqrt(), "x0_eps": (1 / abar - 1).sqrt(),  # x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)
            "coef_x0": coef_x0, "coef_xt": coef_xt,
            "post_logvar": post_logvar, "log_beta": torch.log(betas),
        }
        self._cast: dict = {}

    def on(self, like: torch.Tensor) -> dict[str, torch.Tensor]:
        """The chain's tensors in ``like``'s device and dtype (one host-to-device copy per chain and device)."""
        key = (like.device, like.dtype)
        if key not in self._cast:
            self._cast[key] = {k: v.to(like.device, like.dtype) for k, v in self.f64.items()}
        return self._cast[key]


class DiffusionHead(nn.Module):
    """DDPM head (module ``diffloss`` in MAR, network ``net``: keys ``diffloss.net.*``).

    ``learn_sigma``: the network outputs 2C channels, eps and v in [-1, 1] that interpolates the log
    variance of each step between the posterior's (v = -1) and beta's (v = 1), as official checkpoints do.

    ``clip_x0`` (None: off, the official behaviour; an attribute, may be changed after construction):
    clamp each step's x0 estimate to [-clip_x0, clip_x0], improved DDPM's ``clip_denoised`` with a
    range. Why it exists: the cosine schedule caps the last beta at 0.999, so alpha_bar(T-1) ~ 2.4e-9
    and x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) multiplies the network's eps error at t = T-1 by
    ~2e4; the first respaced step passes it on times ~0.016 (100 of 1000 steps, more for fewer steps).
    A well-trained network predicts eps there to ~1e-4 and nothing happens; an undertrained one (the
    official code's black or NaN samples early in training, LTH14/mar #36, #70) gives samples
    hundreds of units off. Any bound above the data's range is a no-op for an accurate network, since
    the exact x0 estimate E[x0 | x_t] lies within the data's range.
    """

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int, *, train_steps: int = 1000,
                 learn_sigma: bool = False, batch_mul: int = 4, clip_x0: float | None = None):
        super().__init__()
        _check_head_args(token_dim, cond_dim, width, depth, train_steps, batch_mul)
        check(clip_x0 is None or clip_x0 > 0, f"clip_x0 must be None (off) or > 0, got {clip_x0}")
        self.token_dim, self.train_steps, self.batch_mul = token_dim, train_steps, batch_mul
        self.learn_sigma, self.clip_x0 = learn_sigma, clip_x0
        self.net = AdaLNMLP(token_dim, width, 2 * token_dim if learn_sigma else token_dim, cond_dim, depth)
        self._chains: dict[int, _Chain] = {}

    def chain(self, steps: int) -> _Chain:
        """The respaced chain of ``steps`` steps (``train_steps``: the training chain), built once."""
        if steps not in self._chains:
            self._chains[steps] = _Chain(cosine_alphas_cumprod(self.train_steps),
                                         respaced_timesteps(self.train_steps, steps))
        return self._chains[steps]

    def net_calls(self, steps: int, solver: str | None = None) -> int:
        """Network calls per ``sample(steps=steps)``: one per step, with or without CFG. ``solver`` is
        ignored (there is one, ancestral sampling); it is accepted so that callers treat both heads alike."""
        _check_steps(steps)
        return steps

    def _mean(self, s: dict[str, torch.Tensor], i, x_t: torch.Tensor, eps: torch.Tensor,
              clip: float | None) -> torch.Tensor:
        """Mean of p(x_{i-1} | x_i): the posterior mean q(x_{i-1} | x_i, x0) at the x0 that eps implies."""
        x0 = s["x0_x"][i] * x_t - s["x0_eps"][i] * eps
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        return s["coef_x0"][i] * x0 + s["coef_xt"][i] * x_t

    def _logvar(self, s: dict[str, torch.Tensor], i, v_NC: torch.Tensor | None) -> torch.Tensor:
        """Log variance of p(x_{i-1} | x_i): the posterior's, or the learned interpolation towards log beta."""
        lo, hi = s["post_logvar"][i], s["log_beta"][i]
        if v_NC is None:
            return lo
        frac = (v_NC + 1) / 2
        return frac * hi + (1 - frac) * lo

    def loss(self, target_NC: torch.Tensor, cond_ND: torch.Tensor) -> torch.Tensor:
        """Epsilon MSE over batch_mul noisy copies of each row (t ~ U{0..T-1}); with ``learn_sigma`` plus the
        VLB term (in bits per channel) of the learned variance, the mean held fixed (stop-gradient)."""
        x0_MC, cond_MD = target_NC.repeat(self.batch_mul, 1), cond_ND.repeat(self.batch_mul, 1)
        C, M = self.token_dim, x0_MC.shape[0]
        s = self.chain(self.train_steps).on(x0_MC)
        i_M = torch.randint(self.train_steps, (M,), device=x0_MC.device)
        i_M1 = i_M[:, None]
        noise_MC = torch.randn_like(x0_MC)
        x_t = s["sqrt_abar"][i_M1] * x0_MC + s["sqrt_1m_abar"][i_M1] * noise_MC
        out = self.net(x_t, s["t"][i_M], cond_MD)
        eps = out[:, :C]
        loss = F.mse_loss(eps, noise_MC)
        if not self.learn_sigma:
            return loss
        # Improved DDPM's hybrid loss: the VLB trains only the variance, so the mean uses a detached eps.
        mean = self._mean(s, i_M1, x_t, eps.detach(), None)
        logvar = self._logvar(s, i_M1, out[:, C:])
        true_mean = s["coef_x0"][i_M1] * x0_MC + s["coef_xt"][i_M1] * x_t
        true_logvar = s["post_logvar"][i_M1]
        kl = 0.5 * (-1 + logvar - true_logvar + (true_logvar - logvar).exp()
                    + (true_mean - mean) ** 2 * (-logvar).exp())
        # t = 0 scores the data itself. Images use a discretised (8-bit) Gaussian there; tokens are
        # continuous, so this is the continuous Gaussian NLL (1/T of the rows, a tiny part of the loss).
        nll = 0.5 * (math.log(2 * math.pi) + logvar + (x0_MC - mean) ** 2 * (-logvar).exp())
        return loss + torch.where(i_M1 == 0, nll, kl).mean() / math.log(2.0)

    @torch.no_grad()
    def sample(self, cond_ND: torch.Tensor, *, steps: int = 100, temperature: float = 1.0,
               cfg: float | torch.Tensor = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Ancestral sampling over ``steps`` respaced timesteps: exactly ``steps`` network calls.

        ``cfg`` > 0 (or a tensor (N,)): ``cond_ND`` is [cond; uncond] (2N rows) and N tokens come back.
        ``temperature`` scales the noise added at each step. ``generator`` must be on cond's device."""
        N, w = _sample_args(cond_ND, steps, temperature, cfg)
        ch = self.chain(steps)
        cond_emb = self.net.cond_embed(cond_ND)
        # x in the weights' dtype, not cond's: under autocast cond_emb is half precision, the chain should not be
        x = torch.randn(N, self.token_dim, generator=generator, device=cond_ND.device, dtype=_dtype(self.net))
        s = ch.on(x)
        for i in reversed(range(steps)):
            eps, v = _predict(self.net, x, ch.ts[i], cond_emb, w, self.token_dim)
            mean = self._mean(s, i, x, eps, self.clip_x0)
            if i == 0:  # the last step returns the mean, as DDPM does
                return mean
            std = (0.5 * self._logvar(s, i, v if self.learn_sigma else None)).exp()
            x = mean + std * (temperature * _noise(x, generator))
        raise AssertionError("unreachable")


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
        """Network calls per ``sample(steps=steps, solver=solver)``, with or without CFG: Euler one per step;
        Heun two per step except the last, which is a plain Euler step onto t = 0 (2 steps - 1)."""
        _check_steps(steps)
        check(solver in SOLVERS, f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
        return steps if solver == "euler" else 2 * steps - 1

    def loss(self, target_NC: torch.Tensor, cond_ND: torch.Tensor) -> torch.Tensor:
        """Velocity MSE over batch_mul noisy copies of each row, t ~ U(0, 1)."""
        x0_MC, cond_MD = target_NC.repeat(self.batch_mul, 1), cond_ND.repeat(self.batch_mul, 1)
        t_M1 = torch.rand(x0_MC.shape[0], 1, device=x0_MC.device, dtype=x0_MC.dtype)
        noise_MC = torch.randn_like(x0_MC)
        x_t = (1 - t_M1) * x0_MC + t_M1 * noise_MC
        return F.mse_loss(self.net(x_t, t_M1[:, 0] * self.train_steps, cond_MD), noise_MC - x0_MC)

    @torch.no_grad()
    def sample(self, cond_ND: torch.Tensor, *, steps: int = 4, temperature: float = 1.0,
               cfg: float | torch.Tensor = 0.0, generator: torch.Generator | None = None,
               solver: str = "euler") -> torch.Tensor:
        """Integrate dx/dt = v from t = 1 (noise x temperature) to t = 0 in ``steps`` equal steps.

        Network calls: ``net_calls(steps, solver)`` = steps (Euler) or 2 steps - 1 (Heun), with or without
        CFG. ``cfg`` > 0 (or a tensor (N,)): ``cond_ND`` is [cond; uncond] (2N rows) and N tokens come back."""
        N, w = _sample_args(cond_ND, steps, temperature, cfg)
        self.net_calls(steps, solver)  # validates the solver
        cond_emb = self.net.cond_embed(cond_ND)
        x = temperature * torch.randn(N, self.token_dim, generator=generator, device=cond_ND.device,
                                      dtype=_dtype(self.net))
        T, C, dt = self.train_steps, self.token_dim, 1.0 / steps
        for k in range(steps):
            t = 1.0 - k * dt
            v1, _ = _predict(self.net, x, t * T, cond_emb, w, C)
            if solver == "heun" and k < steps - 1:
                v2, _ = _predict(self.net, x - dt * v1, (t - dt) * T, cond_emb, w, C)
                x = x - dt * 0.5 * (v1 + v2)
            else:
                x = x - dt * v1
        return x


def make_head(kind: str, token_dim: int, cond_dim: int, width: int, depth: int, **kw) -> DiffusionHead | FlowHead:
    """The head called ``kind`` ("diffusion" or "flow"); ``kw`` go to its constructor."""
    check(kind in HEAD_KINDS, f"kind must be one of {', '.join(HEAD_KINDS)}, got {kind!r}")
    return (DiffusionHead if kind == "diffusion" else FlowHead)(token_dim, cond_dim, width, depth, **kw)
