"""Named presets: ``"var-digits" -> config``, the single source of CLI choices.

A preset is a zero-argument function returning a frozen config; the config's
type says which model class it builds (see ``MODEL_CLASSES``). Presets also
carry the training defaults (steps, batch size, learning rate) that make
``argen train --preset P`` train a good model with no other flag.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from argen.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    name: str
    kind: str  # "tokenizer" | "generator" | "classifier"
    make_config: Callable[[], object]
    train: dict  # TrainConfig overrides (steps, batch_size, lr, ...)
    data: str  # default dataset name
    description: str
    sampler: dict  # default sampler settings of a generator (saved in its checkpoint)


# One training budget for every Fashion-MNIST generator preset, so that the families compare on
# equal terms: 1500 steps of 64 images (1.6 epochs), about 20-30 min on one CPU core for ~1M-parameter models.
FMNIST_TRAIN = dict(steps=1500, batch_size=64, lr=1e-3, warmup=100, ema=0.995, weight_decay=0.05)

_PRESETS: dict[str, Preset] = {}
_MODELS: dict[str, type] = {}
KINDS = ("tokenizer", "generator", "classifier")


def register_model(cls: type) -> type:
    """Class decorator: checkpoints name their model class, and ``load`` finds it here."""
    _MODELS[cls.__name__] = cls
    return cls


def model_for_config(config: object) -> type:
    """The model class whose ``config_class`` is the type of ``config``."""
    _load_all()
    for cls in _MODELS.values():
        if type(config) is cls.config_class:
            return cls
    raise ConfigError(f"no model class takes a {type(config).__name__}")


def model_class(name: str) -> type:
    _load_all()
    if name not in _MODELS:
        raise ConfigError(f"unknown model class {name!r}; known: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def register(name: str, kind: str, *, data: str, train: dict | None = None, sampler: dict | None = None,
             description: str = ""):
    """Decorator: register a zero-argument config factory under ``name``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def deco(fn: Callable[[], object]) -> Callable[[], object]:
        if name in _PRESETS:
            raise ValueError(f"preset {name!r} registered twice")
        _PRESETS[name] = Preset(name, kind, fn, dict(train or {}), data, description or (fn.__doc__ or "").strip(),
                                dict(sampler or {}))
        return fn

    return deco


def _load_all() -> None:
    # Presets live beside their model code; importing the modules registers them.
    import argen.evaluation.classifier
    import argen.generators.mar
    import argen.generators.maskgit
    import argen.generators.raster
    import argen.generators.var
    import argen.tokenizers.kl
    import argen.tokenizers.msvq
    import argen.tokenizers.vq  # noqa: F401


def list_presets(kind: str | None = None) -> list[str]:
    _load_all()
    return sorted(n for n, p in _PRESETS.items() if kind is None or p.kind == kind)


def get_preset(name: str, kind: str | None = None) -> Preset:
    _load_all()
    p = _PRESETS.get(name)
    if p is None or (kind is not None and p.kind != kind):
        raise ConfigError(f"unknown {kind or 'model'} preset {name!r}; available: {', '.join(list_presets(kind))}")
    return p
