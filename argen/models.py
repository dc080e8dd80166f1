"""Models by name or by folder: ``build(preset)``, ``load_model(path)``, ``load_checkpoint(path)``.

The one module that knows every model class: it imports ``argen.presets``, which registers
every preset and, through the architectures the presets build, every model class. Layers
below it (config, registry, checkpoint, nn, the architectures) never import it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import argen.checkpoint as ckpt
import argen.presets  # noqa: F401  (registers every preset and model class)
from argen.errors import CheckpointError, ConfigError
from argen.registry import MODELS, get_preset, list_presets, model_for_config  # noqa: F401 (list_presets: re-exported)


def build(preset: str, device: str | torch.device = "cpu", **overrides) -> nn.Module:
    """The model of a named preset with random weights; ``overrides`` replace config fields."""
    config = get_preset(preset).make_config().replace(**overrides)
    with torch.device(device):
        return model_for_config(config)(config)


def build_from_record(record: ckpt.CheckpointRecord, device: str | torch.device = "cpu") -> nn.Module:
    """The (randomly initialised) model a checkpoint record describes."""
    cls = MODELS.get(record.cls)
    config = cls.config_class.from_dict(record.config)
    with torch.device(device):
        return cls(config)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ckpt.CheckpointRecord]:
    """Rebuild a model from its folder alone, in eval mode, with the folder's record."""
    record = ckpt.read_record(path)
    try:
        model = build_from_record(record, device)
    except ConfigError as e:
        raise CheckpointError(f"{Path(path) / ckpt.CONFIG}: {e}") from None
    return ckpt.load_weights(model, path, device), record


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """``load_checkpoint`` without the record."""
    return load_checkpoint(path, device)[0]
