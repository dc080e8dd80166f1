"""Flow matching on the straight path between data and noise (rectified flow), integrated by Euler or Heun.

Training: x_t = (1 - t) x0 + t noise with t in [0, 1]; the network predicts the velocity
dx_t/dt = noise - x0. Sampling integrates dx/dt = v from t = 1 (noise) to t = 0 (data) in
``steps`` equal steps of size dt = 1 / steps, the k-th starting at t = 1 - k dt. Euler takes
one network call per step; Heun (the trapezoid corrector) two, except on the last step, which
is a plain Euler step onto t = 0 (Heun's corrector would evaluate the network at t = 0, where
a velocity prediction is least reliable; EDM does the same).

Times here are in [0, 1]; a head may feed its network a rescaled t (``FlowHead`` multiplies by
its ``train_steps``).
"""

from __future__ import annotations

import torch

from argen.config import check

SOLVERS = ("euler", "heun")


def _check_steps(steps: int) -> None:
    check(isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1,
          f"steps must be an int >= 1, got {steps!r}")


def net_calls(steps: int, solver: str = "euler") -> int:
    """Network calls of a ``steps``-step solve, with or without CFG: Euler ``steps``, Heun ``2 steps - 1``."""
    _check_steps(steps)
    check(solver in SOLVERS, f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    return steps if solver == "euler" else 2 * steps - 1


# ---- training ------------------------------------------------------------------------------------

def add_noise(x0_MC: torch.Tensor, noise_MC: torch.Tensor, t_M1: torch.Tensor) -> torch.Tensor:
    """The point of the straight path at time t: x_t = (1 - t) x0 + t noise."""
    return (1 - t_M1) * x0_MC + t_M1 * noise_MC


def velocity(x0_MC: torch.Tensor, noise_MC: torch.Tensor) -> torch.Tensor:
    """The training target: the path's velocity dx_t/dt = noise - x0 (the same at every t)."""
    return noise_MC - x0_MC


# ---- sampling ------------------------------------------------------------------------------------

def timesteps(steps: int) -> list[float]:
    """Start times of the ``steps`` steps from t = 1 to 0: 1 - k dt, dt = 1 / steps (the step size)."""
    _check_steps(steps)
    dt = 1.0 / steps
    return [1.0 - k * dt for k in range(steps)]


def euler_step(x_NC: torch.Tensor, v_NC: torch.Tensor, dt: float) -> torch.Tensor:
    """x(t - dt) ~ x(t) - dt v(x(t), t)."""
    return x_NC - dt * v_NC


def heun_step(x_NC: torch.Tensor, v1_NC: torch.Tensor, v2_NC: torch.Tensor, dt: float) -> torch.Tensor:
    """x(t - dt) ~ x(t) - dt (v1 + v2) / 2, with v1 at (x(t), t) and v2 at the Euler point (x(t) - dt v1, t - dt)."""
    return x_NC - dt * 0.5 * (v1_NC + v2_NC)
