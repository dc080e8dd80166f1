"""Image files: read an image or a mask into a tensor, write samples as ``.npz`` + a PNG grid.

Tensors are (N, C, H, W) floats in [-1, 1] everywhere in argen; files are uint8. Writes go
to a temporary name first and are renamed into place, as checkpoint writes are.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from argen.errors import ArgenError


def load_image(path: str | Path, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """An image file -> (1, C, H, W) in [-1, 1], converted to ``channels`` and resized to ``size`` (H, W)."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        img = img.convert("L" if channels == 1 else "RGB").resize((size[1], size[0]), Image.BICUBIC)
    except (OSError, UnidentifiedImageError) as e:
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


def save_grid(images_u8: np.ndarray, path: str | Path, nrow: int, scale: int = 1, pad: int = 1) -> None:
    """Write (N, H, W, C) uint8 images as a PNG grid with ``nrow`` images per row, upscaled by ``scale``."""
    from PIL import Image

    n, h, w, c = images_u8.shape
    rows = -(-n // nrow)
    H, W = h * scale + pad, w * scale + pad
    grid = np.full((rows * H + pad, nrow * W + pad, c), 255, dtype=np.uint8)
    for i, im in enumerate(images_u8):
        r, q = divmod(i, nrow)
        big = im.repeat(scale, 0).repeat(scale, 1)
        grid[pad + r * H: pad + r * H + h * scale, pad + q * W: pad + q * W + w * scale] = big
    img = Image.fromarray(grid[..., 0] if c == 1 else grid)
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    img.save(tmp, format="PNG")
    tmp.replace(path)


def save_samples(images: torch.Tensor, labels: Sequence[int], out: str | Path, nrow: int) -> tuple[Path, Path]:
    """Write ``OUT.npz`` (images uint8 N x H x W x C, labels int64 N) and ``OUT.png`` (a grid)."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix in (".png", ".npz") else out
    stem.parent.mkdir(parents=True, exist_ok=True)
    u8 = to_uint8(images)
    npz, png = stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".png")
    tmp = stem.with_name(f".{stem.name}.tmp.npz")
    np.savez(tmp, images=u8, labels=np.asarray(labels, dtype=np.int64))
    tmp.replace(npz)
    save_grid(u8, png, nrow=nrow, scale=max(1, 64 // u8.shape[1]))
    return npz, png
