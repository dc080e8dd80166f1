"""Models by name or by folder: ``build(preset)``, ``load_model(path)``, ``load_checkpoint(path)``.

The one module that knows every model class: it imports ``argen.presets``, which registers
every preset and, through the architectures the presets build, every model class. Layers
below it (config, registry, checkpoint, nn, the architectures) never import it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

import argen.checkpoint as ckpt
import argen.presets  # noqa: F401  (registers every preset and model class)
from argen.errors import CheckpointError, ConfigError
from argen.registry import MODELS, get_preset, list_presets, model_for_config


def build(preset: str, device: str | torch.device = "cpu", **overrides) -> nn.Module:
    """The model of a named preset with random weights; ``overrides`` replace config fields."""
    config = get_preset(preset).make_config().replace(**overrides)
    check_size(config)
    with torch.device(device):
        return model_for_config(config)(config)


# What a config.json may ask for before anything is built. Layers are built one by one, so a depth of
# 10^6 would take minutes even on the meta device: the plain numbers are bounded first, then the model
# is built on meta (no memory) and counted.
MAX_DEPTH = 1024             # any field ending in "depth", and num_res_blocks / convs_per_block
MAX_SIZE = 10**7             # any other int field or tuple entry that sizes the network
MAX_TUPLE = 64               # entries of a tuple field (scales, ch_mult, widths)
MAX_VALUES = 20e9            # parameters and buffers together (80 GB in float32)
_STEP_FIELDS = ("disc_start", "restart_every")  # counts of training steps, not sizes
_DEPTH_FIELDS = ("num_res_blocks", "convs_per_block")


def _numbers(config) -> dict[str, float]:
    """Every number of a config that sizes the network, tuples by their length and largest entry."""
    out = {}
    for name, value in config.to_dict().items():
        if isinstance(value, (list, tuple)):
            value = [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
            out[f"{name}#len"], out[name] = len(value), max(value, default=0)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = value
    return out


@functools.cache
def _preset_maxima(config_class: type) -> dict[str, float]:
    """Field by field, the largest value among the registered presets of ``config_class``."""
    maxima: dict[str, float] = {}
    for name in list_presets():
        config = get_preset(name).make_config()
        if type(config) is config_class:
            for k, v in _numbers(config).items():
                maxima[k] = max(maxima.get(k, v), v)
    return maxima


def check_size(config) -> None:
    """Refuse, in one line, a config whose model is too large to build (``ConfigError``)."""
    for name, value in config.to_dict().items():
        if name in _STEP_FIELDS:
            continue
        limit = MAX_DEPTH if name.endswith("depth") or name in _DEPTH_FIELDS else MAX_SIZE
        values = value if isinstance(value, (list, tuple)) else [value]
        if len(values) > MAX_TUPLE:
            raise ConfigError(f"{name} may have at most {MAX_TUPLE} entries, got {len(values)}")
        for v in values:
            if isinstance(v, int) and not isinstance(v, bool) and v > limit:
                raise ConfigError(f"{name} must be at most {limit:,}, got {v:,}")
    # A network grows with each of these numbers: one no larger, field by field, than the largest registered
    # preset of its class (at most a few billion parameters) needs no count. Counting builds the model on the
    # meta device, whose first use imports torch._dynamo: a second of every CLI call that loads a model.
    maxima = _preset_maxima(type(config))
    if maxima and all(v <= maxima.get(k, v) for k, v in _numbers(config).items()):
        return
    try:
        with torch.device("meta"):
            model = model_for_config(config)(config)
        n = sum(t.numel() for t in (*model.parameters(), *model.buffers()))
    except (RuntimeError, OverflowError) as e:  # a tensor whose element count overflows int64, e.g. a 10^7 grid
        raise ConfigError(f"the config describes a model too large to build ({str(e).splitlines()[0][:100]})") from None
    if n > MAX_VALUES:
        raise ConfigError(f"the config describes a model of {n:.3g} parameters and buffers; "
                          f"argen builds at most {MAX_VALUES:.3g}")


def build_from_record(record: ckpt.CheckpointRecord, device: str | torch.device = "cpu") -> nn.Module:
    """The (randomly initialised) model a checkpoint record describes: every config field must be
    stated (the saved file is the whole truth) and the model must be of a buildable size."""
    cls = MODELS.get(record.cls)
    config = cls.config_class.from_dict(record.config, complete=True)
    check_size(config)
    with torch.device(device):
        return cls(config)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ckpt.CheckpointRecord]:
    """Rebuild a model from its folder alone, in eval mode, with the folder's record.

    On ``device="meta"`` nothing is allocated: the config and the weights' header are checked only."""
    record = ckpt.read_record(path)
    try:
        model = build_from_record(record, device)
    except ConfigError as e:
        raise CheckpointError(f"{Path(path) / ckpt.CONFIG}: {e}") from None
    return ckpt.load_weights(model, path, device), record


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """``load_checkpoint`` without the record."""
    return load_checkpoint(path, device)[0]
