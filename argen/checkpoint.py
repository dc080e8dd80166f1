"""Checkpoint folders: ``config.json`` + ``model.safetensors`` (+ ``train_state.safetensors``).

Layout of a checkpoint folder::

    config.json               a CheckpointRecord: {"argen_version", "class", "preset", "config": {...}, "meta": {...}}
    model.safetensors         inference weights (the EMA weights when training kept an EMA)
    train_state.safetensors   only while/after training: raw weights, EMA, optimizer, RNG states;
                              step, data position and train config in its JSON metadata
    tokenizer/                generators only: a full copy of the tokenizer checkpoint

Nothing is pickled. Every file is written under a temporary name and renamed
into place, so a crash leaves either the old file or the new one, never half.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from argen.errors import CheckpointError
from argen.version import __version__

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TRAIN_STATE = "train_state.safetensors"
TOKENIZER_DIR = "tokenizer"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def _atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path`` (same folder, so the rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; checkpoints are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | Path, obj: Any) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")

    _atomic_write(Path(path), write)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    # safetensors refuses non-contiguous tensors and tensors sharing storage (tied weights, views):
    # make those plain copies, and leave the rest as they are (no second copy of a large model).
    flat, seen = {}, set()
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous()
        ptr = v.untyped_storage().data_ptr()
        flat[k] = v.clone() if ptr in seen or v.numel() != v.untyped_storage().nbytes() // v.element_size() else v
        seen.add(ptr)
    _atomic_write(Path(path), lambda tmp: save_file(flat, tmp, metadata=metadata))


def load_tensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing weights file {path}")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"corrupt weights file {path}: {str(e).splitlines()[0]}") from None


def read_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"corrupt file {path}: {str(e).splitlines()[0]}") from None


@dataclass(frozen=True)
class CheckpointRecord:
    """What ``config.json`` says of a checkpoint: the model class, its config, and where it came from.

    ``meta`` holds the rest: the training command and data, the default sampler settings of a
    generator (``meta["sampler"]``), evaluation results (``meta["eval"]``), a converter's source."""

    cls: str                      # model class name, e.g. "VAR"
    config: dict[str, Any]        # the model config's fields
    preset: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    argen_version: str = __version__

    def to_json(self) -> dict[str, Any]:
        return {"argen_version": self.argen_version, "class": self.cls, "preset": self.preset,
                "config": self.config, "meta": self.meta}

    def replace_meta(self, **updates: Any) -> CheckpointRecord:
        return CheckpointRecord(self.cls, self.config, self.preset, {**self.meta, **updates}, self.argen_version)


def read_config(ckpt_dir: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint folder, with one-line errors for the usual mistakes."""
    d = Path(ckpt_dir)
    if not d.exists():
        raise CheckpointError(f"checkpoint not found: {d}")
    if not (d / CONFIG).is_file():
        raise CheckpointError(f"not an argen checkpoint (no {CONFIG}): {d}")
    try:
        cfg = json.loads((d / CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupt {d / CONFIG}: {e}") from None
    if not isinstance(cfg, dict) or "class" not in cfg or not isinstance(cfg.get("config"), dict):
        raise CheckpointError(f"corrupt {d / CONFIG}: expected a 'class' name and a 'config' object")
    return cfg


def read_record(ckpt_dir: str | Path) -> CheckpointRecord:
    cfg = read_config(ckpt_dir)
    return CheckpointRecord(cfg["class"], cfg["config"], cfg.get("preset"), cfg.get("meta") or {},
                            cfg.get("argen_version") or "unknown")


def write_record(ckpt_dir: str | Path, record: CheckpointRecord) -> None:
    write_json(Path(ckpt_dir) / CONFIG, record.to_json())


def record_of(model: torch.nn.Module, *, preset: str | None = None, meta: dict[str, Any] | None = None
              ) -> CheckpointRecord:
    """The record of ``model`` (its class name and config) as this version of argen writes it."""
    return CheckpointRecord(type(model).__name__, model.config.to_dict(), preset, dict(meta or {}))


def save_model(ckpt_dir: str | Path, model: torch.nn.Module, *, preset: str | None = None,
               meta: dict[str, Any] | None = None, state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``model.safetensors`` and ``config.json`` (``state_dict`` overrides the model's own, e.g. EMA)."""
    d = Path(ckpt_dir)
    save_tensors(d / WEIGHTS, state_dict if state_dict is not None else model.state_dict())
    write_record(d, record_of(model, preset=preset, meta=meta))


def load_weights(model: torch.nn.Module, ckpt_dir: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Fill ``model`` from ``ckpt_dir/model.safetensors`` (strict: every tensor must match by name and shape)."""
    path = Path(ckpt_dir) / WEIGHTS
    state = load_tensors(path, device)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = [x.strip() for x in str(e).splitlines() if x.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise CheckpointError(f"weights in {path} do not fit {type(model).__name__}: {detail}") from None
    return model.eval()


def copy_tokenizer(tokenizer_dir: str | Path, generator_dir: str | Path) -> None:
    """Copy a tokenizer checkpoint (config + weights only) into ``generator_dir/tokenizer``."""
    src, dst = Path(tokenizer_dir), Path(generator_dir) / TOKENIZER_DIR
    if src.resolve() == dst.resolve():
        return
    dst.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG, WEIGHTS):
        tmp = dst / f".{name}.copy"
        shutil.copyfile(src / name, tmp)
        tmp.replace(dst / name)


# ---- training state: flat tensors + JSON, no pickle ------------------------------------------------

def flatten_state(prefix: str, obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Move every tensor of a nested dict/list into ``tensors`` and leave a ``{"__t": key}`` marker."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj
        return {"__t": prefix}
    if isinstance(obj, dict):
        return {str(k): flatten_state(f"{prefix}/{k}", v, tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [flatten_state(f"{prefix}/{i}", v, tensors) for i, v in enumerate(obj)]
    return obj


def unflatten_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__t"}:
            return tensors[obj["__t"]]
        return {k: unflatten_state(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unflatten_state(v, tensors) for v in obj]
    return obj


def save_train_state(ckpt_dir: str | Path, state: dict[str, Any]) -> None:
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten_state("s", state, tensors)
    save_tensors(Path(ckpt_dir) / TRAIN_STATE, tensors, metadata={"state": json.dumps(skeleton)})


def load_train_state(ckpt_dir: str | Path) -> dict[str, Any]:
    path = Path(ckpt_dir) / TRAIN_STATE
    if not path.is_file():
        raise CheckpointError(f"--resume: no training state in {ckpt_dir} (missing {TRAIN_STATE})")
    meta = read_metadata(path)
    tensors = load_tensors(path)
    try:
        return unflatten_state(json.loads(meta["state"]), tensors)
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"corrupt training state {path}: {e}") from None
