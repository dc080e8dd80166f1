"""Image files: read an image or a mask into a tensor, write samples as ``.npz`` + a PNG grid.

Tensors are (N, C, H, W) floats in [-1, 1] everywhere in argen; files are uint8. Writes go
to unique temporary names first and are renamed into place together, as checkpoint writes are.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from argen.checkpoint import _UMASK
from argen.errors import ArgenError

# Images are resized to a model's few hundred pixels; anything past this is a mistake or a decompression
# bomb (a small file that decodes to gigabytes). Checked from the header, before any pixel is decoded.
MAX_IMAGE_PIXELS = 8192 * 8192


def open_image(path: str | Path):
    """The PIL image of ``path``, its header read only; one-line ArgenError for unreadable or too large files."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        # PIL only warns between its limit and twice it: a warning here is as much a bomb as the error
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ArgenError(f"image {path} is too large (at most {MAX_IMAGE_PIXELS} pixels)") from None
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise ArgenError(f"cannot read image {path}: {e}") from None
    w, h = img.size
    if w * h > MAX_IMAGE_PIXELS:
        img.close()
        raise ArgenError(f"image {path} is too large: {w} x {h} pixels, at most {MAX_IMAGE_PIXELS}")
    return img


def load_image(path: str | Path, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """An image file -> (1, C, H, W) in [-1, 1], converted to ``channels`` and resized to ``size`` (H, W)."""
    from PIL import Image

    try:
        with open_image(path) as img:
            img = img.convert("L" if channels == 1 else "RGB").resize((size[1], size[0]), Image.BICUBIC)
    except OSError as e:  # a truncated or corrupt file shows only when its pixels are decoded
        raise ArgenError(f"cannot read image {path}: {e}") from None
    x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()) / 127.5 - 1
    return (x.unsqueeze(0) if channels == 1 else x.permute(2, 0, 1)).unsqueeze(0)


def load_mask(path: str | Path, size: tuple[int, int]) -> torch.Tensor:
    """A mask image -> (1, 1, H, W) floats: 1 where the file is light (> 50%: regenerate), 0 elsewhere."""
    m = load_image(path, 1, size)
    return (m > 0).float()


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def grid_image(images_u8: np.ndarray, nrow: int, scale: int = 1, pad: int = 1):
    """(N, H, W, C) uint8 images -> a PIL image of a grid with ``nrow`` images per row, upscaled by ``scale``."""
    from PIL import Image

    n, h, w, c = images_u8.shape
    rows = -(-n // nrow)
    H, W = h * scale + pad, w * scale + pad
    grid = np.full((rows * H + pad, nrow * W + pad, c), 255, dtype=np.uint8)
    for i, im in enumerate(images_u8):
        r, q = divmod(i, nrow)
        big = im.repeat(scale, 0).repeat(scale, 1)
        grid[pad + r * H: pad + r * H + h * scale, pad + q * W: pad + q * W + w * scale] = big
    return Image.fromarray(grid[..., 0] if c == 1 else grid)


def write_files(files: dict[Path, Callable]) -> None:
    """Write every ``path: write(file object)`` or none: each to a unique temporary name in its folder
    (two processes writing the same --out never share one), then all renamed into place. Temporary
    files are removed on any failure (a full disk, a folder in the way)."""
    for path in files:
        if path.is_dir():
            raise ArgenError(f"cannot write {path}: it is a folder")
    tmps: list[Path] = []
    path = next(iter(files))
    try:
        for path, write in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            tmps.append(Path(tmp))
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; samples are meant to be shared
        for tmp, path in zip(tmps, files):
            tmp.replace(path)
    except OSError as e:
        raise ArgenError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


def save_grid(images_u8: np.ndarray, path: str | Path, nrow: int, scale: int = 1, pad: int = 1) -> None:
    """Write (N, H, W, C) uint8 images as a PNG grid with ``nrow`` images per row, upscaled by ``scale``."""
    img = grid_image(images_u8, nrow, scale, pad)
    write_files({Path(path): lambda f: img.save(f, format="PNG")})


SAMPLE_FORMATS = ("argen", "adm")


def save_samples(images: torch.Tensor, labels: Sequence[int], out: str | Path, nrow: int,
                 meta: dict | None = None, fmt: str = "argen", prompts: Sequence[str] | None = None) -> tuple[Path, Path]:
    """Write ``OUT.npz`` and ``OUT.png`` (a grid), both or neither. ``fmt="argen"``: images uint8
    N x H x W x C, labels int64 N, and ``meta`` (how they were made, a JSON string). ``fmt="adm"``: the
    layout the standard FID suites read (guided-diffusion's evaluator): ``arr_0`` uint8 N x H x W x 3
    (grey images repeated over RGB) and ``arr_1`` the labels, with ``meta`` beside them. ``prompts``: a text
    model's prompts, stored as ``prompts``, each image's label being its prompt's index."""
    if fmt not in SAMPLE_FORMATS:
        raise ArgenError(f"--format must be one of {', '.join(SAMPLE_FORMATS)}, got {fmt!r}")
    out = Path(out)
    stem = out.with_suffix("") if out.suffix in (".png", ".npz") else out
    u8 = to_uint8(images)
    npz, png = stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".png")
    grid = grid_image(u8, nrow=nrow, scale=max(1, 64 // u8.shape[1]))
    arrays = {"meta": np.asarray(json.dumps(meta, sort_keys=True))} if meta is not None else {}
    labels = np.asarray(labels, dtype=np.int64)
    if prompts is not None:
        arrays["prompts"] = np.asarray(list(prompts), dtype=str)
    if fmt == "adm":
        arrays.update(arr_0=np.repeat(u8, 3, axis=-1) if u8.shape[-1] == 1 else u8, arr_1=labels)
    else:
        arrays.update(images=u8, labels=labels)
    write_files({npz: lambda f: np.savez(f, **arrays), png: lambda f: grid.save(f, format="PNG")})
    return npz, png
