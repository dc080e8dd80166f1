"""Frozen dataclass configs: validated on construction, saved as JSON.

Every model, tokenizer, sampler and training run is described by one frozen
dataclass. ``Config.to_dict`` / ``Config.from_dict`` round-trip through plain
JSON (tuples become lists and back), and unknown keys are an error so a typo in
a checkpoint or an override never passes silently.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, TypeVar

from argen.errors import ConfigError

C = TypeVar("C", bound="Config")


@dataclasses.dataclass(frozen=True)
class Config:
    """Base class: subclasses are ``@dataclass(frozen=True)`` and validate in ``__post_init__``."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown field(s) {unknown}; allowed: {sorted(names)}")
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for k, v in d.items():
            # JSON has no tuples: restore them where the field is declared as one.
            if isinstance(v, list) and "tuple" in str(hints.get(k, "")):
                v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
            kwargs[k] = v
        return cls(**kwargs)

    def replace(self: C, **overrides: Any) -> C:
        """A copy with some fields changed (validated again); unknown names are an error."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"{type(self).__name__}: unknown field(s) {unknown}; allowed: {sorted(names)}")
        return dataclasses.replace(self, **overrides)


def check(cond: bool, message: str) -> None:
    """Raise a one-line ConfigError unless ``cond`` holds (used by ``__post_init__``)."""
    if not cond:
        raise ConfigError(message)
