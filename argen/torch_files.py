"""Reading PyTorch files argen did not write (official checkpoints, Inception weights), safely.

``torch.load(weights_only=True)`` with an allow-list: tensors, containers and the classes a
caller names (MAR's and LlamaGen's ``argparse.Namespace``), nothing else is ever unpickled.
The converters and ``argen eval --inception-weights`` both read through here.
"""

from __future__ import annotations

import pickle
import pickletools
import re
import warnings
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
        with torch.serialization.safe_globals(allow), warnings.catch_warnings():
            # torch warns about any pickle protocol but 2 before it refuses or reads the file: the error
            # (or nothing) is what the user needs, on one line
            warnings.simplefilter("ignore")
            # mmap: a multi-GB checkpoint is paged in as tensors are used, not read up front
            # (only zip-format files can be mapped; older torch.save files are read whole)
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        names = ", ".join(f"{c.__module__}.{c.__qualname__}" for c in allow) or "none"
        # torch's wording: "Unsupported global: GLOBAL a.B ..." or "... unsupported GLOBAL a.b whose module ..."
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = found.group(1) if found else _first_foreign_global(path, allow)
        if what:
            raise ConvertError(f"{path}: holds a {what} object, which argen will not unpickle "
                               f"(allowed besides tensors: {names})") from None
        raise ConvertError(f"{path}: not a PyTorch checkpoint argen can read safely ({_detail(e)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ConvertError(f"{path}: not a readable PyTorch checkpoint, truncated or corrupt ({first})") from None
    except Exception:  # noqa: BLE001  the unpickler raises whatever a stream of garbage bytes leads it to
        raise ConvertError(f"{path}: not a PyTorch checkpoint (its bytes are no pickle torch.load reads)") from None


def _first_foreign_global(path: Path, allow: list[type]) -> str | None:
    """The first class a plain pickle file names that is neither torch's nor allowed, read without
    unpickling anything (torch refuses pickle protocols above 2 before it reaches the class)."""
    ok = {f"{c.__module__}.{c.__qualname__}" for c in allow}
    strings: list[str] = []
    try:
        with open(path, "rb") as f:
            for op, arg, _ in pickletools.genops(f):
                if isinstance(arg, str) and "UNICODE" in op.name:
                    strings = [*strings[-1:], arg]
                name = arg.replace(" ", ".") if op.name == "GLOBAL" else (
                    ".".join(strings) if op.name == "STACK_GLOBAL" and len(strings) == 2 else None)
                if name and name not in ok and not name.startswith(("torch.", "collections.OrderedDict")):
                    return name
    except Exception:  # noqa: BLE001  not a plain pickle: there is no class to name
        return None
    return None


def _detail(e: Exception) -> str:
    """The line of torch's long weights-only message that says what was refused."""
    boiler = ("Weights only load failed", "Please file an issue", "Check the documentation", "In PyTorch")
    lines = [x.strip() for x in str(e).splitlines() if x.strip() and not x.strip().startswith(boiler)]
    return lines[0][:200] if lines else "refused by the weights-only unpickler"


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
