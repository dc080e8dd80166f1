"""Captions of a ``folder`` data set: a ``captions.jsonl`` in the folder, or a ``.txt`` file beside each image.

Every problem is a one-line :class:`DataError` that names the file (and line) at fault, raised when the data set
is loaded, never at some training step.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from argen.errors import DataError

__all__ = ["CAPTIONS_FILE", "folder_captions"]

CAPTIONS_FILE = "captions.jsonl"


def folder_captions(root: Path, images: Sequence[Path], texts: set[Path]) -> Callable[[Path], str] | None:
    """``image -> caption`` for a captioned folder (``captions.jsonl``, else a ``.txt`` beside each image),
    None for a folder without captions. Every image of every split is checked now, so that a missing caption
    fails at load time whichever split is loaded."""
    listing = root / CAPTIONS_FILE
    if listing.is_file():
        return _jsonl_captions(listing, images).__getitem__
    sidecars = [f.with_suffix(".txt") for f in images]
    if not any(t in texts for t in sidecars):
        return None
    missing = [f for f, t in zip(images, sidecars) if t not in texts]
    if missing:
        raise DataError(f"folder: {missing[0]} has no caption file {missing[0].with_suffix('.txt').name} beside it "
                        f"({len(missing)} of {len(images)} images have none; other images have one, and every "
                        "image needs its caption)")
    # Only the loaded split's caption files are read; the other split's were checked to exist above.
    return lambda image: _read_caption(image.with_suffix(".txt"))


def _read_caption(file: Path) -> str:
    try:  # utf-8-sig: UTF-8, with or without the byte-order mark some Windows editors write
        caption = file.read_text(encoding="utf-8-sig").strip()
    except UnicodeDecodeError as exc:
        raise DataError(f"folder: caption file {file} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"folder: cannot read caption file {file}: {exc}") from None
    if not caption:
        raise DataError(f"folder: caption file {file} is empty")
    return caption


def _jsonl_captions(listing: Path, images: Sequence[Path]) -> dict[Path, str]:
    """The captions of ``images`` from ``listing``: one ``{"file": ..., "caption": ...}`` a line, files relative
    to the folder that holds it; a bad line, a file that is not one of ``images`` or an image without a line is
    a one-line DataError."""
    by_path = {os.path.abspath(f): f for f in images}  # one spelling of each path: "./a/x.png" is "a/x.png"
    try:
        lines = listing.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"folder: {listing} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"folder: cannot read {listing}: {exc}") from None
    captions: dict[Path, str] = {}
    first_line: dict[Path, int] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{listing}:{n}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"folder: {where}: not JSON ({exc.msg} at column {exc.colno})") from None
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str)
                and isinstance(entry.get("caption"), str)):
            raise DataError(f'folder: {where}: want {{"file": "relative/path.png", "caption": "..."}}, '
                            f"got {line.strip()[:60]}")
        name = entry["file"]
        target = os.path.abspath(listing.parent / name)
        if target not in by_path:
            why = ("does not exist" if not os.path.exists(target) else
                   "is not an image of this data set (want an image file in a class folder, or in the folder "
                   "itself when it has no class folders)")
            raise DataError(f"folder: {where}: {name} {why}")
        image = by_path[target]
        if image in first_line:
            raise DataError(f"folder: {where}: {name} is listed again (first on line {first_line[image]})")
        caption = entry["caption"].strip()
        if not caption:
            raise DataError(f"folder: {where}: the caption of {name} is empty")
        captions[image], first_line[image] = caption, n
    missing = [f for f in images if f not in captions]
    if missing:
        raise DataError(f"folder: {missing[0]} has no caption in {listing} ({len(missing)} of {len(images)} images "
                        "are not listed; every image needs one)")
    return captions
