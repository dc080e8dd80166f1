"""DDPM: improved DDPM's cosine schedule, respacing, and the posterior of one reverse step.

The forward process noises a target x0 to x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps; the
network predicts eps; a reverse step goes from x_t to x_{t-1} ~ N(mean, var), where the mean
is the posterior mean q(x_{t-1} | x_t, x0) at the x0 that eps implies, and the variance is the
posterior's or, with a learned variance, an interpolation (in log space) between the
posterior's and beta_t (improved DDPM's "learned range", as official MAR checkpoints have).

``DDPMScheduler`` holds one chain of kept timesteps: all ``train_steps`` of them (training) or
a respaced subset (sampling in fewer steps; betas are recomputed between consecutive kept
steps, so a respaced chain is a proper DDPM of its own). Index ``i`` below is the i-th kept
step, not the timestep value. Tables are computed once in float64 on the CPU and cast once per
(device, dtype), so every step reads the same numbers whatever the batch; nothing here is saved
in checkpoints.
"""

from __future__ import annotations

import math

import torch

from argen.config import check


def _check_steps(steps: int) -> None:
    check(isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1,
          f"steps must be an int >= 1, got {steps!r}")


def net_calls(steps: int) -> int:
    """Network calls of ancestral sampling over ``steps`` steps: one per step, with or without CFG."""
    _check_steps(steps)
    return steps


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


Index = int | torch.Tensor  # a kept step: an int (sampling, one step for all rows) or (M, 1) long (training)


class DDPMScheduler:
    """The chain of ``steps`` respaced kept timesteps of a ``train_steps``-step cosine DDPM (None: all).

    Training: ``add_noise``, ``timestep`` (the network's t input) and ``vlb_terms``; sampling: ``step``.
    """

    def __init__(self, train_steps: int, steps: int | None = None):
        check(isinstance(train_steps, int) and train_steps >= 2, f"train_steps must be an int >= 2, got {train_steps!r}")
        self.train_steps = train_steps
        self.ts = respaced_timesteps(train_steps, train_steps if steps is None else steps)
        abar = cosine_alphas_cumprod(train_steps)[self.ts]
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        betas = 1 - abar / abar_prev
        post_var = betas * (1 - abar_prev) / (1 - abar)
        # posterior variance is 0 at the first step: its log takes the next value, as DDPM's "clipped" log
        # (a one-step chain never needs it: its only step returns the mean)
        post_logvar = torch.log(torch.cat([post_var[1:2], post_var[1:]]) if len(self.ts) > 1 else betas)
        coef_x0 = betas * abar_prev.sqrt() / (1 - abar)            # posterior mean = coef_x0 x0 + coef_xt x_t
        coef_xt = (1 - abar_prev) * (1 - betas).sqrt() / (1 - abar)
        self.f64 = {
            "t": torch.tensor(self.ts, dtype=torch.float64),
            "sqrt_abar": abar.sqrt(), "sqrt_1m_abar": (1 - abar).sqrt(),
            "x0_x": abar.rsqrt(), "x0_eps": (1 / abar - 1).sqrt(),  # x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)
            "coef_x0": coef_x0, "coef_xt": coef_xt,
            "post_logvar": post_logvar, "log_beta": torch.log(betas),
        }
        self._cast: dict = {}

    @property
    def num_steps(self) -> int:
        return len(self.ts)

    def tables(self, like: torch.Tensor) -> dict[str, torch.Tensor]:
        """The chain's tables in ``like``'s device and dtype (one host-to-device copy per device and dtype)."""
        key = (like.device, like.dtype)
        if key not in self._cast:
            self._cast[key] = {k: v.to(like.device, like.dtype) for k, v in self.f64.items()}
        return self._cast[key]

    # ---- training ----------------------------------------------------------------------------------

    def timestep(self, i: Index, like: torch.Tensor) -> torch.Tensor:
        """The timestep value(s) of kept step(s) ``i``, the network's t input, in ``like``'s dtype."""
        return self.tables(like)["t"][i]

    def add_noise(self, x0_MC: torch.Tensor, noise_MC: torch.Tensor, i: Index) -> torch.Tensor:
        """x_t = sqrt(abar) x0 + sqrt(1 - abar) noise: a sample of q(x_t | x0). The training target is ``noise``."""
        s = self.tables(x0_MC)
        return s["sqrt_abar"][i] * x0_MC + s["sqrt_1m_abar"][i] * noise_MC

    def vlb_terms(self, x0_MC: torch.Tensor, x_t_MC: torch.Tensor, eps_MC: torch.Tensor, v_MC: torch.Tensor,
                  i_M1: torch.Tensor) -> torch.Tensor:
        """Per-element VLB terms in nats (M, C): KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) with p's mean
        from ``eps_MC`` and its learned variance from ``v_MC``; at t = 0 the NLL of x0 under p instead.

        The caller detaches ``eps_MC`` when the term should train the variance only (improved DDPM's hybrid loss).
        """
        mean = self.mean_from_eps(x_t_MC, eps_MC, i_M1)
        logvar = self.log_variance(x_t_MC, i_M1, v_MC)
        true_mean = self.posterior_mean(x0_MC, x_t_MC, i_M1)
        true_logvar = self.tables(x_t_MC)["post_logvar"][i_M1]
        kl = 0.5 * (-1 + logvar - true_logvar + (true_logvar - logvar).exp()
                    + (true_mean - mean) ** 2 * (-logvar).exp())
        # t = 0 scores the data itself. Images use a discretised (8-bit) Gaussian there; tokens are
        # continuous, so this is the continuous Gaussian NLL (1/T of the rows, a tiny part of the loss).
        nll = 0.5 * (math.log(2 * math.pi) + logvar + (x0_MC - mean) ** 2 * (-logvar).exp())
        return torch.where(i_M1 == 0, nll, kl)

    # ---- the reverse process -----------------------------------------------------------------------

    def posterior_mean(self, x0: torch.Tensor, x_t: torch.Tensor, i: Index) -> torch.Tensor:
        """Mean of q(x_{i-1} | x_i, x0)."""
        s = self.tables(x_t)
        return s["coef_x0"][i] * x0 + s["coef_xt"][i] * x_t

    def mean_from_eps(self, x_t: torch.Tensor, eps: torch.Tensor, i: Index,
                      clip_x0: float | None = None) -> torch.Tensor:
        """Mean of p(x_{i-1} | x_i): the posterior mean at the x0 that ``eps`` implies, that x0 clamped to
        [-clip_x0, clip_x0] if given (improved DDPM's ``clip_denoised`` with a range)."""
        s = self.tables(x_t)
        x0 = s["x0_x"][i] * x_t - s["x0_eps"][i] * eps
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
        return self.posterior_mean(x0, x_t, i)

    def log_variance(self, like: torch.Tensor, i: Index, v: torch.Tensor | None = None) -> torch.Tensor:
        """Log variance of p(x_{i-1} | x_i): the posterior's (``v`` None), or the learned interpolation
        towards log beta, v in [-1, 1] (v = -1: the posterior's, v = 1: beta's)."""
        s = self.tables(like)
        lo, hi = s["post_logvar"][i], s["log_beta"][i]
        if v is None:
            return lo
        frac = (v + 1) / 2
        return frac * hi + (1 - frac) * lo

    def step(self, eps_NC: torch.Tensor, i: int, x_NC: torch.Tensor, *, v_NC: torch.Tensor | None = None,
             clip_x0: float | None = None, temperature: float = 1.0,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """One ancestral step from kept step ``i`` to ``i - 1``: mean + std * temperature * noise.

        The last step (i = 0) returns the mean and draws nothing, as DDPM does. The noise (one draw of
        ``x_NC``'s shape, dtype and device from ``generator``) is scaled by ``temperature``, the official
        MAR code's temperature (the initial noise is not)."""
        mean = self.mean_from_eps(x_NC, eps_NC, i, clip_x0)
        if i == 0:
            return mean
        std = (0.5 * self.log_variance(x_NC, i, v_NC)).exp()
        noise = torch.randn(x_NC.shape, generator=generator, device=x_NC.device, dtype=x_NC.dtype)
        return mean + std * (temperature * noise)
