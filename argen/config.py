"""Frozen dataclass configs: validated on construction, saved as JSON.

Every model, tokenizer, sampler and training run is described by one frozen
dataclass. ``Config.to_dict`` / ``Config.from_dict`` round-trip through plain
JSON (tuples become lists and back), and unknown keys are an error so a typo in
a checkpoint or an override never passes silently.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from argen.errors import ConfigError

if TYPE_CHECKING:  # for type checkers only: typing.Self is Python 3.11+, and typing_extensions no dependency
    from typing_extensions import Self

C = TypeVar("C", bound="Config")

MAX_INT = 2**63 - 1  # every int field fits an int64 (a 5,000-digit integer is no size of anything)


def _bad_number(value: Any) -> str | None:
    """What is wrong with a number (or a tuple of them) that passed the type check: NaN, inf, too large."""
    for v in value if isinstance(value, tuple) else (value,):
        if isinstance(v, float) and not math.isfinite(v):
            return "a finite number"
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_INT:
            return f"an integer of at most {MAX_INT} in size"
    return None


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
    ADDED: ClassVar[dict[str, Any]] = {}    # fields added later -> the behaviour of files written before them

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, list):  # JSON and the CLI give lists where the config keeps tuples
                v = tuple(v)
                object.__setattr__(self, f.name, v)
            if not _type_ok(v, hints[f.name]):
                raise ConfigError(f"{type(self).__name__}.{f.name} must be {_type_name(hints[f.name])}, got {_short(v)}")
            bad = _bad_number(v)
            if bad:
                raise ConfigError(f"{type(self).__name__}.{f.name} must be {bad}, got {_short(v)}")

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
    def from_dict(cls, d: dict[str, Any], complete: bool = False) -> Self:
        """The config of ``d``; ``complete``: every field must be there (a saved checkpoint states all
        of them, so a missing one means a damaged file, not "the default"), old names and ``ADDED`` aside."""
        d = cls._upgrade(d)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown field(s) {unknown}; allowed: {sorted(names)}")
        if complete:
            d = {**cls.ADDED, **d}
            missing = sorted(names - set(d))
            if missing:
                raise ConfigError(f"{cls.__name__}: missing field(s) {missing}; a saved config states every field")
        return cls(**d)  # lists from JSON become tuples in __post_init__

    def replace(self, **overrides: Any) -> Self:
        """A copy with some fields changed (validated again); unknown names are an error."""
        overrides = self._upgrade(overrides)
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"{type(self).__name__}: unknown field(s) {unknown}; allowed: {sorted(names)}")
        return dataclasses.replace(self, **overrides)


def _short(value: Any, limit: int = 60) -> str:
    """``repr`` cut to one short line (a value from a hostile file may be megabytes long)."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print in decimal
        return f"an integer of {value.bit_length()} bits"
    return text if len(text) <= limit else text[:limit] + "..."


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def check(cond: bool, message: str) -> None:
    """Raise a one-line ConfigError unless ``cond`` holds (used by ``__post_init__``)."""
    if not cond:
        raise ConfigError(message)
