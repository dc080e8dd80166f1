"""argparse value types of the ``argen`` command: each refuses a bad value with one line naming the flag
and the allowed range (argparse then exits with code 2). Imports no torch: ``--help`` stays fast."""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

# Upper bounds of numbers that size work: a typo (an extra zero or ten) ends in one line, not in an
# allocation of every image at once or a machine thrashing on a million threads.
MAX_IMAGES = 100_000                            # images per sampling command (all labels and batches)
MAX_THREADS = 4 * (os.cpu_count() or 1)         # more threads than that only slows torch down
MAX_SEED = 2**63 - 1                            # torch.Generator.manual_seed takes a signed 64-bit seed
MIN_EVAL_SAMPLES = 6                            # = evaluation.evaluate.MIN_SAMPLES (not imported: torch is slow)


def int_flag(name, lo=1, hi=None, why=""):
    """An integer flag within [lo, hi]; the one-line error names the flag and the range."""
    def parse(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {s!r}") from None
        if v < lo or (hi is not None and v > hi):
            allowed = f">= {lo}" if hi is None else f"in [{lo}, {hi}]{why}"
            raise argparse.ArgumentTypeError(f"{name} must be {allowed}, got {v}")
        return v
    return parse


def positive(name, hi=None, why=""):
    return int_flag(name, 1, hi, why)


seed = int_flag("--seed", 0, MAX_SEED)
threads = int_flag("--threads", 1, MAX_THREADS, f" (4 x the {os.cpu_count() or 1} CPU cores)")


def omp_threads() -> int | None:
    """OMP_NUM_THREADS when it holds a usable thread count (torch itself reads it the same way)."""
    try:
        v = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return min(v, MAX_THREADS) if v >= 1 else None


def finite(name, lo=None, hi=None):
    """A finite float flag (inf and nan would sample garbage silently), optionally within [lo, hi]."""
    def parse(s):
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {s!r}") from None
        if not math.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
            allowed = "a finite number" + (f" in [{lo}, {hi}]" if lo is not None and hi is not None else
                                           f" >= {lo}" if lo is not None else "")
            raise argparse.ArgumentTypeError(f"{name} must be {allowed}, got {s}")
        return v
    return parse


def boolean(name):
    """true / false (also yes / no, on / off, 1 / 0)."""
    def parse(s):
        v = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
        if s.lower() not in v:
            raise argparse.ArgumentTypeError(f"{name} must be true or false, got {s!r}")
        return v[s.lower()]
    return parse


def out_file(s: str) -> str:
    """--out of `sample` / `edit`: a path whose name becomes OUT.npz and OUT.png."""
    if not s.strip() or Path(s).name in ("", ".", ".."):
        raise argparse.ArgumentTypeError(f"--out must name a file (OUT.npz and OUT.png are written), got {s!r}")
    return s


def writable_file(name):
    """A file flag written at the end of a long run: refuse at once a path that could not be written then."""
    def parse(s):
        path = Path(s)
        parent = path.parent if str(path.parent) else Path(".")
        if not s.strip() or path.name in ("", ".", "..") or path.is_dir():
            raise argparse.ArgumentTypeError(f"{name} must name a file, got {s!r}" +
                                             (" (a folder)" if path.is_dir() else ""))
        if not parent.is_dir() or not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise argparse.ArgumentTypeError(f"cannot write {s}: its folder is missing or not writable")
        return s
    return parse


def batch_sizes(s: str) -> tuple[int, ...]:
    parse = positive("--batch-sizes", MAX_IMAGES)
    try:
        sizes = tuple(parse(x) for x in s.split(","))
    except argparse.ArgumentTypeError:
        sizes = ()
    if not sizes:
        raise argparse.ArgumentTypeError(f"--batch-sizes must be comma-separated integers in [1, {MAX_IMAGES}], "
                                         f"got {s!r}")
    return sizes


def out_dir(s: str) -> str:
    """--out of the commands that write a folder of files: not empty, not a file-system root."""
    if not s.strip() or Path(s).resolve() == Path(Path(s).resolve().anchor):
        raise argparse.ArgumentTypeError(f"--out must name a folder to write into (not empty, not the "
                                         f"file-system root), got {s!r}")
    return s


def labels(s: str) -> list[int]:
    try:
        return [int(x) for x in s.split(",") if x.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--labels must be comma-separated integers, got {s!r}") from None


def key_value(flag: str):
    """``KEY=VALUE`` with VALUE read as JSON where it parses (``depth=6``, ``betas=[0.9,0.95]``), else a string."""
    def parse(s: str) -> tuple[str, object]:
        if "=" not in s:
            raise argparse.ArgumentTypeError(f"{flag} expects KEY=VALUE, got {s!r}")
        k, v = s.split("=", 1)
        try:
            return k, json.loads(v)
        except json.JSONDecodeError:
            return k, v
    return parse
