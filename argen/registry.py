"""Name -> object tables: model classes, presets, samplers and converters, one kind of table for all.

A leaf module: it imports no model, sampler or converter. Modules register themselves when they
are imported (``@MODELS.register`` on a class, ``PRESETS.add(...)`` in ``argen.presets``,
``SAMPLERS.add(...)`` in ``argen.sampling``, ``CONVERTERS.add(...)`` in ``argen.convert``); the
upper layers import the packages whose entries they need (``argen.models`` imports
``argen.presets``, the pipeline imports ``argen.sampling``). The CLI's choices come from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from argen.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> entries; a second entry under one name is a programming error, an unknown name a user's."""

    def __init__(self, what: str):
        self.what = what  # "model class", "preset", ...: named in error messages
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} registered twice")
        self._entries[name] = entry
        return entry

    def register(self, obj):
        """Class decorator: register ``obj`` under its ``__name__``."""
        return self.add(obj.__name__, obj)

    def get(self, name: str, arg: str = "") -> T:
        """The entry ``name``; a one-line ConfigError lists the known names otherwise (``arg``: the flag)."""
        if name not in self._entries:
            prefix = f"{arg}: " if arg else ""
            raise ConfigError(f"{prefix}unknown {self.what} {name!r}; known: {', '.join(self.names()) or 'none'}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def values(self) -> Iterator[T]:
        return iter(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries


@dataclass(frozen=True)
class Preset:
    """A named, zero-argument config factory plus what makes ``argen train --preset P`` work unaided."""

    name: str
    kind: str  # one of KINDS
    make_config: Callable[[], object]
    data: str  # the default dataset
    description: str
    train: dict = field(default_factory=dict)    # TrainConfig overrides (steps, batch_size, lr, ...)
    sampler: dict = field(default_factory=dict)  # a generator's default sampler settings (saved in its checkpoint)


KINDS = ("tokenizer", "generator", "classifier")

MODELS: Registry[type] = Registry("model class")
PRESETS: Registry[Preset] = Registry("preset")
SAMPLERS: Registry[object] = Registry("sampler")      # name -> argen.sampling.base.Sampler
CONVERTERS: Registry[Callable] = Registry("converter")  # official family -> convert(checkpoint, vae, out, ema)


def register_model(cls: type) -> type:
    """Class decorator: checkpoints name their model class, and loading finds it here."""
    return MODELS.register(cls)


def preset(name: str, kind: str, *, data: str, train: dict | None = None, sampler: dict | None = None,
           description: str = ""):
    """Decorator: register a zero-argument config factory as preset ``name``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def deco(fn: Callable[[], object]) -> Callable[[], object]:
        PRESETS.add(name, Preset(name, kind, fn, data, description or (fn.__doc__ or "").strip(),
                                 dict(train or {}), dict(sampler or {})))
        return fn

    return deco


def list_presets(kind: str | None = None) -> list[str]:
    return [n for n in PRESETS.names() if kind is None or PRESETS.get(n).kind == kind]


def get_preset(name: str, kind: str | None = None) -> Preset:
    p = PRESETS.get(name) if name in PRESETS else None
    if p is None or (kind is not None and p.kind != kind):
        raise ConfigError(f"unknown {kind or 'model'} preset {name!r}; available: {', '.join(list_presets(kind))}")
    return p


def model_for_config(config: object) -> type:
    """The model class whose ``config_class`` is the type of ``config``."""
    for cls in MODELS.values():
        if type(config) is cls.config_class:
            return cls
    raise ConfigError(f"no model class takes a {type(config).__name__}")
