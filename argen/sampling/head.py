"""Sampling a per-token head: N tokens (N, C) from conditions z, by the head's scheduler.

``sample_head(head, cond_ND, steps=..., ...)`` drives a ``DiffusionHead`` (ancestral DDPM steps
over ``steps`` respaced timesteps, ``argen.schedulers.ddpm``) or a ``FlowHead`` (Euler or Heun
from t = 1 to 0 in ``steps`` equal steps, ``argen.schedulers.flow``). MAR calls it once per AR
step on the to-be-predicted tokens of every image together.

Temperature: a diffusion head scales the noise added at each step, not the initial noise (as
the official MAR code); a flow head scales the initial noise (the only noise there is).

Classifier-free guidance: a guided ``cond_ND`` holds 2N rows ``[cond; uncond]``; both halves
share the current sample (so they start from the same noise), the network runs once per step
on the 2N rows, and ``argen.sampling.guidance.guide`` mixes them: ``cond + cfg (cond - uncond)``
(cfg = 0 is the conditional model alone; the official scale s is 1 + cfg). ``cfg`` may be a
float tensor (N,) of per-row weights. A learned variance is taken from the cond half, as the
official code does. Whether the batch is guided follows the rows (``guided``), not the
weight: a MAR step outside its guidance interval passes 2N rows with weight 0 and gets the
cond half's prediction.

Speed: every step moves the whole (N, C) batch at once; ``cond_embed`` runs once per call and
the timestep embedding once per step on a single row (all rows share t), so a step costs the
residual blocks only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from argen.config import check
from argen.generators.heads import AdaLNMLP, DiffusionHead, FlowHead
from argen.sampling.base import knob
from argen.sampling.guidance import GuidanceConfig, guide
from argen.schedulers import flow

# How head steps go from ``head_steps`` (first AR step, progress r = 0) to ``head_steps_end`` (last, r = 1):
# the fraction of the way there after progress r = t / (T - 1).
HEAD_SCHEDULES = {
    "linear": lambda r: r,
    "cosine": lambda r: (1 - math.cos(math.pi * r)) / 2,  # flat at both ends, fastest in the middle
}


@dataclass(frozen=True)
class HeadSamplerConfig(GuidanceConfig):
    """The settings of samplers that draw continuous tokens with a head, AR step by AR step (MAR, xAR).

    Head-step annealing (DiSA, Zhao et al. 2025): tokens drawn late, with most of the image known,
    are well predicted, so the head may take fewer steps there (``head_step_counts``)."""

    head_steps: int = 8            # diffusion steps (respaced) or flow steps per AR step (the first, if annealed)
    temperature: float = 1.0       # diffusion: scales the noise of each step; flow: the initial noise
    solver: str = knob("euler", "flow head only: euler (head_steps calls per AR step) or heun (2 head_steps - 1)")
    head_steps_end: int = knob(0, "head steps at the last AR step (annealed from --head-steps at the "
                                  "first); 0 = head_steps at every step (constant)")
    head_schedule: str = knob("linear", "how head steps go from head_steps to head_steps_end over the "
                                        "AR steps: " + ", ".join(HEAD_SCHEDULES))

    def __post_init__(self):
        super().__post_init__()
        check(self.head_steps >= 1, f"head_steps must be >= 1, got {self.head_steps}")
        check(math.isfinite(self.temperature) and self.temperature > 0,
              f"temperature must be a finite number > 0, got {self.temperature}")
        check(self.solver in flow.SOLVERS, f"solver must be one of {', '.join(flow.SOLVERS)}, got {self.solver!r}")
        check(self.head_steps_end >= 0,
              f"head_steps_end must be >= 1, or 0 for head_steps at every AR step, got {self.head_steps_end}")
        check(self.head_schedule in HEAD_SCHEDULES,
              f"head_schedule must be one of {', '.join(HEAD_SCHEDULES)}, got {self.head_schedule!r}")


def head_step_counts(config: HeadSamplerConfig, ar_steps: int) -> list[int]:
    """Head steps of each of ``ar_steps`` AR steps: ``head_steps`` at every step when ``head_steps_end`` is 0,
    else n_t = round(a + (b - a) f(t / (T - 1))) with a = head_steps, b = head_steps_end, T = ar_steps and f
    the ``head_schedule`` (linear: f(r) = r; cosine: f(r) = (1 - cos(pi r)) / 2), halves rounded up. So
    n_0 = a and n_{T-1} = b, every n_t lies between them, and one AR step runs a steps."""
    check(isinstance(ar_steps, int) and ar_steps >= 1, f"ar_steps must be an int >= 1, got {ar_steps!r}")
    a, b = config.head_steps, config.head_steps_end
    if b == 0 or ar_steps == 1:
        return [a] * ar_steps
    f = HEAD_SCHEDULES[config.head_schedule]
    return [math.floor(a + (b - a) * f(t / (ar_steps - 1)) + 0.5) for t in range(ar_steps)]


def _sample_args(head: DiffusionHead | FlowHead, cond_ND: torch.Tensor, steps: int, temperature: float, cfg,
                 guided: bool | None) -> tuple[int, float | torch.Tensor, bool]:
    """Validate the sampling arguments (one-line errors). Returns N, the number of tokens to sample, the
    guidance weight (a float, or an (N, 1) column of per-row weights), and whether the rows are [cond; uncond]."""
    head.net_calls(steps)  # validates steps
    check(temperature > 0, f"temperature must be > 0, got {temperature}")
    check(cond_ND.dim() == 2, f"cond must be (rows, cond_dim), got shape {tuple(cond_ND.shape)}")
    rows = cond_ND.shape[0]
    if torch.is_tensor(cfg):  # per-row weights: always guided (a zero row is the conditional model alone)
        check(guided is not False, "cfg as a tensor needs guided rows [cond; uncond], got guided=False")
        check(rows % 2 == 0 and cfg.shape == (rows // 2,),
              f"cfg as a tensor must have shape (N,) for cond rows [cond; uncond] (2N), got cfg "
              f"{tuple(cfg.shape)} and {rows} cond rows")
        check(cfg.is_floating_point(), f"cfg as a tensor must be floating point, got {cfg.dtype}")
        return rows // 2, cfg[:, None], True
    check(cfg >= 0, f"cfg must be >= 0 (0 = off), got {cfg}")
    if guided is None:
        guided = cfg > 0
    if not guided:
        check(cfg == 0, f"cfg > 0 needs guided rows [cond; uncond], got cfg {cfg} with guided=False")
        return rows, 0.0, False
    check(rows % 2 == 0, f"cfg > 0 needs cond rows [cond; uncond] (an even number), got {rows}"
          if cfg > 0 else f"guided=True needs cond rows [cond; uncond] (an even number), got {rows}")
    return rows // 2, float(cfg), True


def _predict(net: AdaLNMLP, x_NC: torch.Tensor, t: float, cond_emb: torch.Tensor, w, guided: bool, C: int):
    """One network call at time ``t`` (network units). Returns the (guided) prediction (N, C) and the other
    output channels (N, O - C), a learned variance, from the cond half."""
    x_in = torch.cat([x_NC, x_NC]) if guided else x_NC  # both halves see the same sample
    out = net(x_in, torch.full((1,), float(t), device=x_NC.device), cond_emb_NW=cond_emb)
    if not guided:
        return out[:, :C], out[:, C:]
    if torch.is_tensor(w):
        w = w.to(device=out.device, dtype=out.dtype)
    return guide(out[:, :C], w), out[: x_NC.shape[0], C:]


@torch.no_grad()
def sample_head(head: DiffusionHead | FlowHead, cond_ND: torch.Tensor, *, steps: int, temperature: float = 1.0,
                cfg: float | torch.Tensor = 0.0, generator: torch.Generator | None = None, solver: str = "euler",
                guided: bool | None = None) -> torch.Tensor:
    """Sample N tokens (N, C) from conditions ``cond_ND``: exactly ``head.net_calls(steps, solver)`` network calls.

    ``guided`` (None: guided iff ``cfg`` is a tensor or > 0): ``cond_ND`` is [cond; uncond] (2N rows) and N
    tokens come back; with a weight of 0 they are the cond half's. ``solver`` ("euler", "heun") applies to
    a flow head; a diffusion head has one (ancestral) and ignores it. ``generator`` must be on cond's device.
    """
    check(isinstance(head, (DiffusionHead, FlowHead)),
          f"head must be a DiffusionHead or a FlowHead, got {type(head).__name__}")
    N, w, guided = _sample_args(head, cond_ND, steps, temperature, cfg, guided)
    if isinstance(head, DiffusionHead):
        return _sample_diffusion(head, cond_ND, N, steps, temperature, w, guided, generator)
    return _sample_flow(head, cond_ND, N, steps, temperature, w, guided, generator, solver)


def _sample_diffusion(head: DiffusionHead, cond_ND: torch.Tensor, N: int, steps: int, temperature: float, w,
                      guided: bool, generator: torch.Generator | None) -> torch.Tensor:
    """Ancestral sampling over ``steps`` respaced timesteps, from noise (not scaled by the temperature)."""
    sched = head.scheduler(steps)
    cond_emb = head.net.cond_embed(cond_ND)
    # x in the weights' dtype, not cond's: under autocast cond_emb is half precision, the chain should not be
    x = torch.randn(N, head.token_dim, generator=generator, device=cond_ND.device,
                    dtype=head.net.cond_embed.weight.dtype)
    for i in reversed(range(steps)):
        eps, v = _predict(head.net, x, sched.ts[i], cond_emb, w, guided, head.token_dim)
        x = sched.step(eps, i, x, v_NC=v if head.learn_sigma else None, clip_x0=head.clip_x0,
                       temperature=temperature, generator=generator)
    return x


def _sample_flow(head: FlowHead, cond_ND: torch.Tensor, N: int, steps: int, temperature: float, w, guided: bool,
                 generator: torch.Generator | None, solver: str) -> torch.Tensor:
    """Integrate dx/dt = v from t = 1 (noise x temperature) to t = 0 in ``steps`` equal steps."""
    head.net_calls(steps, solver)  # validates the solver
    cond_emb = head.net.cond_embed(cond_ND)
    x = temperature * torch.randn(N, head.token_dim, generator=generator, device=cond_ND.device,
                                  dtype=head.net.cond_embed.weight.dtype)
    T, C, dt = head.train_steps, head.token_dim, 1.0 / steps  # the network sees t * train_steps
    for k, t in enumerate(flow.timesteps(steps)):
        v1, _ = _predict(head.net, x, t * T, cond_emb, w, guided, C)
        if solver == "heun" and k < steps - 1:
            v2, _ = _predict(head.net, flow.euler_step(x, v1, dt), (t - dt) * T, cond_emb, w, guided, C)
            x = flow.heun_step(x, v1, v2, dt)
        else:
            x = flow.euler_step(x, v1, dt)
    return x
