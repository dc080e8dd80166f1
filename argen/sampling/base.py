"""What every sampler shares: its registry entry, the knobs of discrete sampling, and input checks.

A sampler is a function ``sample(model, tokenizer, labels_B, config, generator, known=None)``
plus its frozen config class, registered by name for a generator family::

    @register_sampler("raster", family="raster", config=RasterSamplerConfig)
    def sample(model, tokenizer, labels_B, config, generator=None, known=None): ...

The first sampler registered for a family is its default (what ``Pipeline`` uses); the
accelerated samplers of a family register under their own names beside it, with configs that
extend the default's, so a checkpoint's saved settings (``meta.sampler``) load into any of them.

A config field declared with ``knob(default, help)`` is a knob: the CLI offers it as
``--name-with-dashes`` on ``sample``, ``edit``, ``bench`` and ``eval`` for the samplers that have
it, and ``argen info CHECKPOINT`` lists it; a new sampler needs no CLI change. A config whose
``lossy`` property is true draws from a distribution other than the model's (a speed-for-exactness
trade); samples and evaluations record it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields
from typing import Any

import torch

from argen.config import check
from argen.errors import ArgenError
from argen.registry import SAMPLERS
from argen.sampling.guidance import GuidanceConfig
from argen.sampling.processors import Processor, build_processors
from argen.tokens import check_fit


@dataclass(frozen=True)
class Sampler:
    name: str
    family: str                 # the generator family it samples (``Generator.family``)
    config_class: type          # its frozen config; a checkpoint's ``meta.sampler`` holds its fields
    sample: Callable[..., object]
    # Config fields naming other generator checkpoints (e.g. CoDe's ``refiner``): ``Pipeline`` loads
    # each one that is set and passes the model to ``sample`` as a keyword of the same name.
    models: tuple[str, ...] = ()
    speculative: bool = False   # drafts and verifies tokens: ``argen bench`` reports tokens per pass


def knob(default: Any, help: str) -> Any:
    """A config field the command line exposes (``--name-with-dashes``, parsed as the default's type)."""
    return field(default=default, metadata={"help": help})


def knobs(config_class: type) -> dict[str, Field]:
    """The knob fields of a sampler config class, by field name."""
    return {f.name: f for f in fields(config_class) if "help" in f.metadata}


def knob_catalog() -> dict[str, tuple[type, str, list[str]]]:
    """Every registered sampler's knobs: name -> (type, help, the samplers that have it)."""
    out: dict[str, tuple[type, str, list[str]]] = {}
    for s in SAMPLERS.values():
        for name, f in knobs(s.config_class).items():
            kind = type(f.default)
            if name in out and out[name][0] is not kind:
                raise ArgenError(f"knob {name} is a {kind.__name__} in {s.name} but a {out[name][0].__name__} "
                                 f"in {out[name][2][0]}")
            kind_, help_, owners = out.setdefault(name, (kind, f.metadata["help"], []))
            if f.metadata["help"] not in help_:  # one name, another meaning in another sampler: say both
                out[name] = (kind_, f"{help_}; {f.metadata['help']}", owners)
            owners.append(s.name)
    return out


def is_lossy(config: object) -> bool:
    """Whether ``config`` samples from a distribution other than the model's (see the module doc)."""
    return bool(getattr(config, "lossy", False))


_DEFAULTS: dict[str, str] = {}  # family -> name of its default sampler


def register_sampler(name: str, *, family: str, config: type, models: tuple[str, ...] = (),
                     speculative: bool = False):
    """Decorator: register ``sample`` under ``name`` for generators of ``family``."""

    def deco(fn: Callable[..., object]) -> Callable[..., object]:
        SAMPLERS.add(name, Sampler(name, family, config, fn, models, speculative))
        _DEFAULTS.setdefault(family, name)
        return fn

    return deco


def samplers_of(family: str) -> list[Sampler]:
    """Every sampler of ``family``, its default first."""
    found = [s for s in SAMPLERS.values() if s.family == family]
    return sorted(found, key=lambda s: s.name != _DEFAULTS.get(family))


def sampler_for(family: str, name: str | None = None) -> Sampler:
    """The sampler ``name`` (default: the family's default), checked to sample ``family``."""
    if name is None:
        if family not in _DEFAULTS:
            raise ArgenError(f"no sampler for generator family {family!r}; known: {', '.join(sorted(_DEFAULTS))}")
        name = _DEFAULTS[family]
    sampler = SAMPLERS.get(name) if name in SAMPLERS else None
    if sampler is None or sampler.family != family:
        raise ArgenError(f"--sampler {name!r} does not sample {family} models; they have: "
                         f"{', '.join(s.name for s in samplers_of(family))}")
    return sampler


@dataclass(frozen=True)
class DiscreteSamplerConfig(GuidanceConfig):
    """Guidance plus the logit processors of samplers that draw discrete tokens."""

    temperature: float = 1.0
    top_k: int = 0                  # 0: off
    top_p: float = 1.0              # 1.0: off

    def __post_init__(self):
        super().__post_init__()
        check(math.isfinite(self.temperature) and self.temperature > 0,
              f"temperature must be a finite number > 0, got {self.temperature}")
        check(self.top_k >= 0, f"top_k must be >= 0 (0 = off), got {self.top_k}")
        check(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")

    def processors(self) -> list[Processor]:
        """Temperature, then top-k, then top-p (the order of VAR, LlamaGen and transformers)."""
        return build_processors(self.temperature, self.top_k, self.top_p)


def check_inputs(model, tokenizer, labels_B: torch.Tensor) -> None:
    """One-line errors for the arguments every sampler takes (a host sync or two, before any loop)."""
    c = model.config
    if labels_B.ndim != 1 or labels_B.dtype != torch.long:
        raise ArgenError(f"labels_B must be a 1-d long tensor of class ids, got {tuple(labels_B.shape)} "
                         f"{labels_B.dtype}")
    if labels_B.numel() and not bool(((labels_B >= 0) & (labels_B <= c.num_classes)).all()):
        raise ArgenError(f"labels_B must be class ids in [0, {c.num_classes}] ({c.num_classes} = unconditional)")
    if tokenizer is not None:
        check_fit(tokenizer.token_spec, model.token_spec, f"tokenizer {type(tokenizer).__name__}",
                  f"generator {type(model).__name__}")
