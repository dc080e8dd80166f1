"""Frozen dataclass configs: validated on construction, saved as JSON.

Every model, tokenizer, sampler and training run is described by one frozen
dataclass. ``Config.to_dict`` / ``Config.from_dict`` round-trip through plain
JSON (tuples become lists and back), and unknown keys are an error so a typo in
a checkpoint or an override never passes silently.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, ClassVar, TypeVar

from typing_extensions import Self

from argen.errors import ConfigError

C = TypeVar("C", bound="Config")


def _type_ok(value: Any, hint: Any) -> bool:
    """Does ``value`` fit the annotation ``hint`` (int, float, bool, str, None, unions, tuple[X, ...])?"""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        return isinstance(value, tuple) and all(_type_ok(v, args[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


@dataclasses.dataclass(frozen=True)
class Config:
    """Base class: subclasses are ``@dataclass(frozen=True)`` and validate in ``__post_init__``.

    Field types are checked on construction too, so a value from JSON or ``--set`` that has
    the wrong type fails here with the field's name, not deep inside torch.

    ``RENAMED`` maps field names of earlier versions to today's, so that old ``config.json``
    files and old ``--set`` names still work (every family says ``width``, ``depth``, ``heads``,
    ``label_drop`` today). ``DROPPED`` names removed fields: an old file holding the value that is now
    the only behaviour loads; any other value is an error that says the field is gone."""

    RENAMED: ClassVar[dict[str, str]] = {}
    DROPPED: ClassVar[dict[str, Any]] = {}  # removed fields -> the one value old files may still hold

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, list):  # JSON and the CLI give lists where the config keeps tuples
                v = tuple(v)
                object.__setattr__(self, f.name, v)
            if not _type_ok(v, hints[f.name]):
                raise ConfigError(f"{type(self).__name__}.{f.name} must be {_type_name(hints[f.name])}, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def _upgrade(cls, d: dict[str, Any]) -> dict[str, Any]:
        """Old field names -> today's; giving both names of one field is an error; dropped fields go."""
        out = dict(d)
        for name, only in cls.DROPPED.items():
            if name in out and out.pop(name) != only:
                raise ConfigError(f"{cls.__name__}: {name!r} was removed; only {name}={only!r} is left")
        for old, new in cls.RENAMED.items():
            if old in out:
                if new in out:
                    raise ConfigError(f"{cls.__name__}: {old!r} is the old name of {new!r}; give one of them")
                out[new] = out.pop(old)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        d = cls._upgrade(d)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown field(s) {unknown}; allowed: {sorted(names)}")
        return cls(**d)  # lists from JSON become tuples in __post_init__

    def replace(self, **overrides: Any) -> Self:
        """A copy with some fields changed (validated again); unknown names are an error."""
        overrides = self._upgrade(overrides)
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"{type(self).__name__}: unknown field(s) {unknown}; allowed: {sorted(names)}")
        return dataclasses.replace(self, **overrides)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def check(cond: bool, message: str) -> None:
    """Raise a one-line ConfigError unless ``cond`` holds (used by ``__post_init__``)."""
    if not cond:
        raise ConfigError(message)
