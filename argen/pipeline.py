"""Pipeline: tokenizer + generator + default sampler settings -> images.

    pipe = Pipeline.from_pretrained("argen-demo/generator")
    images = pipe(labels=[0, 1, 2], seed=0)          # (3, C, H, W) in [-1, 1]

A generator checkpoint folder holds its tokenizer in ``tokenizer/`` and its
default sampler settings in ``config.json`` (``meta.sampler``), so the folder
alone is enough to sample.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from argen import checkpoint as ckpt
from argen.config import Config
from argen.errors import ArgenError
from argen.sampling import next_scale

# family -> (sampler config class, sample(model, tokenizer, labels, config, generator) -> tokens)
SAMPLERS: dict[str, tuple[type[Config], Callable]] = {
    "var": (next_scale.NextScaleConfig, next_scale.sample),
}


class Pipeline:
    def __init__(self, tokenizer: nn.Module, generator: nn.Module, sampler: dict[str, Any] | None = None):
        self.tokenizer = tokenizer.eval()
        self.generator = generator.eval()
        config_cls, self._sample = SAMPLERS[generator.family]
        self.sampler = config_cls.from_dict(sampler or {})

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @property
    def num_classes(self) -> int:
        return self.generator.config.num_classes

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> Pipeline:
        path = Path(path)
        generator = ckpt.load_model(path, device)
        if not hasattr(generator, "family"):
            raise ArgenError(f"{path} is a tokenizer checkpoint; sampling needs a generator checkpoint")
        if not (path / ckpt.TOKENIZER_DIR).is_dir():
            raise ArgenError(f"generator checkpoint {path} has no {ckpt.TOKENIZER_DIR}/ folder")
        tokenizer = ckpt.load_model(path / ckpt.TOKENIZER_DIR, device)
        return cls(tokenizer, generator, (generator.checkpoint_meta.get("meta") or {}).get("sampler"))

    def save_pretrained(self, path: str | Path, tokenizer_dir: str | Path | None = None, meta: dict | None = None) -> None:
        path = Path(path)
        ckpt.save_model(path, self.generator, meta=dict(meta or {}, sampler=self.sampler.to_dict()))
        if tokenizer_dir is not None:
            copy_tokenizer(tokenizer_dir, path)
        else:
            ckpt.save_model(path / ckpt.TOKENIZER_DIR, self.tokenizer)

    def check_labels(self, labels: Sequence[int]) -> None:
        bad = [x for x in labels if not 0 <= int(x) < self.num_classes]
        if bad:
            raise ArgenError(f"--labels: {bad[0]} is out of range; this model has classes 0..{self.num_classes - 1}")

    @torch.inference_mode()
    def __call__(self, labels: Sequence[int], seed: int = 0, batch_size: int = 256, progress: bool = False,
                 **sampler_overrides) -> torch.Tensor:
        """Sample one image per label: (N, C, H, W) in [-1, 1]. Same seed, same images."""
        self.check_labels(labels)
        config = self.sampler.replace(**sampler_overrides)
        labels_t = torch.as_tensor(list(labels), dtype=torch.long, device=self.device)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        out = []
        for i in tqdm(range(0, len(labels_t), batch_size), disable=not progress, desc="sample"):
            tokens = self._sample(self.generator, self.tokenizer, labels_t[i:i + batch_size], config, gen)
            out.append(self.tokenizer.decode(tokens).float().cpu())
        return torch.cat(out)


def copy_tokenizer(tokenizer_dir: str | Path, generator_dir: str | Path) -> None:
    """Copy a tokenizer checkpoint (config + weights only) into ``generator_dir/tokenizer``."""
    src, dst = Path(tokenizer_dir), Path(generator_dir) / ckpt.TOKENIZER_DIR
    if src.resolve() == dst.resolve():
        return
    dst.mkdir(parents=True, exist_ok=True)
    for name in (ckpt.CONFIG, ckpt.WEIGHTS):
        tmp = dst / f".{name}.copy"
        shutil.copyfile(src / name, tmp)
        tmp.replace(dst / name)


# ---- image files ------------------------------------------------------------------------------------

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
