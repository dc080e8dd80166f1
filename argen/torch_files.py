"""Reading PyTorch files argen did not write (official checkpoints, Inception weights), safely.

``torch.load(weights_only=True)`` with an allow-list: tensors, containers and the classes a
caller names (MAR's and LlamaGen's ``argparse.Namespace``), nothing else is ever unpickled.
The converters and ``argen eval --inception-weights`` both read through here.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from argen.errors import ConvertError


def _names(keys: Iterable[str], limit: int = 4) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def read_official(path: str | Path, allow: Iterable[type] = ()) -> Any:
    """``torch.load`` a checkpoint safely: tensors, containers and the ``allow`` classes only."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError) as e:
            raise ConvertError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
    allow = list(allow)
    try:
        with torch.serialization.safe_globals(allow):
            # mmap: a multi-GB checkpoint is paged in as tensors are used, not read up front
            # (only zip-format files can be mapped; older torch.save files are read whole)
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = found.group(1) if found else str(e).strip().splitlines()[-1]
        names = ", ".join(f"{c.__module__}.{c.__qualname__}" for c in allow) or "none"
        raise ConvertError(f"{path}: holds a {what} object, which argen will not unpickle "
                           f"(allowed besides tensors: {names})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConvertError(f"{path}: not a readable PyTorch checkpoint, truncated or corrupt ({first})") from None


def pick(obj: Any, path: Path | str, candidates: Iterable[str]) -> tuple[dict[str, torch.Tensor], str]:
    """The first state dict found at one of the dotted ``candidates`` ("" = the object itself).

    Returns it with the candidate used, e.g. ``"model_ema"``, so the caller can say what it read.
    """
    for cand in candidates:
        node = obj
        for part in filter(None, cand.split(".")):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and node and all(isinstance(v, torch.Tensor) for v in node.values()):
            return dict(node), cand or "(top level)"
    top = _names(obj) if isinstance(obj, dict) else type(obj).__name__
    raise ConvertError(f"{path}: no state dict at any of {', '.join(c or '(top level)' for c in candidates)}; "
                       f"the file holds {top}")
