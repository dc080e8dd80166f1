"""Checkpoint folders: ``config.json`` + ``model.safetensors`` (+ ``train_state.safetensors``).

Layout of a checkpoint folder::

    config.json               a CheckpointRecord: {"format", "argen_version", "class", "preset", "config": {...},
                              "meta": {...}}
    model.safetensors         inference weights (the EMA weights when training kept an EMA)
    train_state.safetensors   only while/after training: raw weights, EMA, optimizer, RNG states;
                              step, data position and train config in its JSON metadata
    tokenizer/                generators only: a full copy of the tokenizer checkpoint
    README.md                 finished checkpoints only: the model card, generated from config.json (argen.card)

Versions: ``format`` numbers the folder layout and the meaning of ``config.json``. It grows only
when an older argen could not read the folder right; a config field added with a default or a
renamed one (``Config.ADDED`` / ``Config.RENAMED``) does not change it. A folder of a newer format
is refused in one line that says to upgrade; older ones load (a folder without ``format`` is
format 1, as argen 0.1 wrote it). ``argen_version`` records the writer, for people.

Nothing is pickled. Every file is written under a temporary name and renamed
into place, so a crash leaves either the old file or the new one, never half.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
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
LOG = "log.jsonl"
FORMAT = 1  # the checkpoint folder format this argen writes and the newest it reads (see the module doc)
METRICS = "metrics.json"
CARD = "README.md"  # the model card (argen.card); the name the Hugging Face Hub shows

log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def _atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path`` (same folder, so the rename is atomic).

    The temporary name is unique (mkstemp), so two processes never write the same one; on any
    failure (a full disk included) it is removed and ``path`` keeps its old bytes."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; checkpoints are meant to be shared
        os.replace(tmp, path)
    except (OSError, SafetensorError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
        raise CheckpointError(f"cannot write {path}: {reason} (the previous file, if any, is kept)") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _strict(obj: Any) -> Any:
    """``obj`` with NaN and infinities as None: JSON files stay strict JSON (json.dump would write NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def json_text(obj: Any) -> str:
    """``obj`` as argen writes JSON files: indented, sorted, strict (NaN and infinities as null)."""
    return json.dumps(_strict(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_text(path: str | Path, text: str) -> None:
    _atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json_text(obj))


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
    format: int = FORMAT

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "argen_version": self.argen_version, "class": self.cls,
                "preset": self.preset, "config": self.config, "meta": self.meta}

    def replace_meta(self, **updates: Any) -> CheckpointRecord:
        return replace(self, meta={**self.meta, **updates})


MAX_CONFIG_BYTES = 16 * 2**20  # a config.json is a few kB; a larger one is not a checkpoint's


def read_config(ckpt_dir: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint folder, with one-line errors for the usual mistakes."""
    d = Path(ckpt_dir)
    path = d / CONFIG
    if not d.exists():
        raise CheckpointError(f"checkpoint not found: {d}")
    if not path.is_file():
        raise CheckpointError(f"not an argen checkpoint (no {CONFIG}): {d}")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise CheckpointError(f"corrupt {path}: {path.stat().st_size:,} bytes, more than a config.json's "
                              f"limit of {MAX_CONFIG_BYTES:,}")
    try:
        cfg = json.loads(path.read_text())
    except RecursionError:  # json nests by recursion: 200,000 brackets deep would overflow the stack
        raise CheckpointError(f"corrupt {path}: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:  # ValueError: bad JSON, or an integer of over 4,300 digits
        why = "an integer of over 4,300 digits" if "integer string conversion" in str(e) else str(e).splitlines()[0]
        raise CheckpointError(f"corrupt {path}: {why[:200]}") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("class"), str) or not isinstance(cfg.get("config"), dict):
        raise CheckpointError(f"corrupt {path}: expected a 'class' name and a 'config' object")
    for key, kind in (("meta", dict), ("preset", str), ("argen_version", str), ("format", int)):
        if cfg.get(key) is not None and (not isinstance(cfg[key], kind) or isinstance(cfg[key], bool)):
            what = {dict: "an object", str: "a string", int: "an integer"}[kind]
            raise CheckpointError(f"corrupt {path}: '{key}' must be {what}, got {type(cfg[key]).__name__}")
    if cfg.get("format", 1) > FORMAT:
        raise CheckpointError(f"{d} is a checkpoint of format {cfg['format']} (written by argen "
                              f"{cfg.get('argen_version') or '?'}); argen {__version__} reads formats up to {FORMAT}: "
                              "upgrade argen (pip install -U argen)")
    return cfg


def read_record(ckpt_dir: str | Path) -> CheckpointRecord:
    cfg = read_config(ckpt_dir)
    return CheckpointRecord(cfg["class"], cfg["config"], cfg.get("preset"), cfg.get("meta") or {},
                            cfg.get("argen_version") or "unknown", cfg.get("format", 1))


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
    """Fill ``model`` from ``ckpt_dir/model.safetensors`` (strict: every tensor must match by name and shape).

    The file's header is checked first: names, shapes and kinds of dtype (a float16 file fills a float32
    model; int32 where float32 is expected does not). On the meta device that check is all (``argen info``);
    otherwise every floating tensor must be finite: NaN weights would only give NaN images later."""
    path = Path(ckpt_dir) / WEIGHTS
    _check_header(model, path)
    if torch.device(device).type == "meta":
        return model.eval()
    state = load_tensors(path, device)
    for k, v in state.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"weights in {path}: tensor {k} holds NaN or infinite values")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = [x.strip() for x in str(e).splitlines() if x.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise CheckpointError(f"weights in {path} do not fit {type(model).__name__}: {detail}") from None
    return model.eval()


def _check_header(model: torch.nn.Module, path: Path) -> None:
    """Names, shapes and dtypes of the file's tensors against ``model``'s, from the header alone."""
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"missing weights file {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = f.keys()  # a safe_open handle is not iterable itself
            header = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in keys}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"corrupt weights file {path}: {str(e).splitlines()[0]}") from None
    own = model.state_dict()
    fit = f"weights in {path} do not fit {type(model).__name__}"
    missing, unexpected = sorted(own.keys() - header.keys()), sorted(header.keys() - own.keys())
    if missing or unexpected:
        named = [f"{what} {len(keys)} tensor(s): {', '.join(keys[:3])}" for what, keys in
                 (("missing", missing), ("unexpected", unexpected)) if keys]
        raise CheckpointError(f"{fit}: {'; '.join(named)}")
    for k, t in own.items():
        shape, dtype = header[k]
        if shape != tuple(t.shape):
            raise CheckpointError(f"{fit}: size mismatch for {k}: {list(shape)} in the file, "
                                  f"{list(t.shape)} in the model its config describes")
        # safetensors names dtypes F16, F32, BF16, F64, I32, ...: any float fills a float, else the same dtype
        if not (t.is_floating_point() and dtype in ("F16", "BF16", "F32", "F64")) and dtype != _SAFE_DTYPES.get(t.dtype):
            raise CheckpointError(f"{fit}: {k} is {dtype}, the model keeps {str(t.dtype).removeprefix('torch.')}")


_SAFE_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
                torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
                torch.bool: "BOOL"}


def copy_tokenizer(tokenizer_dir: str | Path, generator_dir: str | Path) -> None:
    """Copy a tokenizer checkpoint (config + weights only) into ``generator_dir/tokenizer``."""
    src, dst = Path(tokenizer_dir), Path(generator_dir) / TOKENIZER_DIR
    if src.resolve() == dst.resolve():
        return
    for name in (CONFIG, WEIGHTS):
        _atomic_write(dst / name, lambda tmp, name=name: shutil.copyfile(src / name, tmp))


# ---- the training log ----------------------------------------------------------------------------

def append_log(path: str | Path, row: dict) -> None:
    """Append one row to a ``log.jsonl`` (strict JSON; a failed write is a one-line CheckpointError)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(_strict(row), allow_nan=False) + "\n")
    except OSError as e:
        raise CheckpointError(f"cannot write {path}: {e.strerror or e}") from None


def read_log(path: str | Path) -> list[dict]:
    """The rows of a ``log.jsonl``. A torn last line (a run killed or a disk full mid-append) is dropped
    with a warning; a broken line before it means the file is corrupt."""
    path = Path(path)
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    rows = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise TypeError("not a row with an integer 'step'")
        except (ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
            if i == len(lines) - 1:
                log.warning("%s: dropping a torn last line (%s)", path, str(e).splitlines()[0])
                break
            raise CheckpointError(f"corrupt {path}: line {i + 1}: {str(e).splitlines()[0]}") from None
        rows.append(row)
    return rows


def truncate_log(path: str | Path, step: int) -> None:
    """Keep the rows up to ``step``: a resumed run drops what a killed run logged after its last checkpoint."""
    path = Path(path)
    if path.exists():
        rows = [r for r in read_log(path) if r["step"] <= step]
        _atomic_write(path, lambda tmp: Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in rows)))


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
