"""Device selection: explicit names, a best-available default, one-line errors."""

from __future__ import annotations

import torch

from argen.errors import ArgenError

DEVICES = ("cpu", "cuda", "mps")


def best_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_device(name: str | None) -> torch.device:
    """``None`` -> best available; otherwise check that the named device exists here."""
    if name is None:
        return torch.device(best_device())
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise ArgenError(f"--device must be one of {', '.join(DEVICES)} (optionally cuda:N), got {name!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ArgenError("--device cuda: no CUDA device is available on this machine")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ArgenError("--device mps: MPS is not available on this machine")
    return torch.device(name)
