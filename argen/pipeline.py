"""Pipeline: tokenizer + generator + default sampler settings -> images.

    pipe = Pipeline.from_pretrained("argen-demo/generator")
    images = pipe(labels=[0, 1, 2], seed=0)          # (3, C, H, W) in [-1, 1]

A generator checkpoint folder holds its tokenizer in ``tokenizer/`` and its
default sampler settings in ``config.json`` (``meta.sampler``), so the folder
alone is enough to sample.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from argen import checkpoint as ckpt
from argen.errors import ArgenError
from argen.sampling import sampler_for

PRECISIONS = ("fp32", "bf16")


class Pipeline:
    """``precision="bf16"`` samples and decodes under bf16 autocast: matmuls and convs in bf16,
    sampling arithmetic (softmax, the diffusion chain) in fp32. About 2x faster where the hardware
    has bf16 units (GPUs; CPUs with AVX512-BF16 or AMX); outputs differ slightly from fp32."""

    def __init__(self, tokenizer: nn.Module, generator: nn.Module, sampler: dict[str, Any] | None = None,
                 precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ArgenError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.tokenizer = tokenizer.eval()
        self.generator = generator.eval()
        config_cls, self._sample = sampler_for(generator.family)
        self.sampler = config_cls.from_dict(sampler or {})
        self.precision = precision

    def _autocast(self):
        # fp32 enters no context at all: autocast(enabled=False) would switch off a caller's own autocast
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @property
    def num_classes(self) -> int:
        return self.generator.config.num_classes

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu", precision: str = "fp32") -> Pipeline:
        """A generator checkpoint folder, or the name of a model shipped with argen (``"fmnist-var"``)."""
        from argen.pretrained import list_models, model_path

        path = Path(path)
        if not path.exists() and str(path) in list_models():
            path = model_path(str(path))
        generator = ckpt.load_model(path, device)
        if not hasattr(generator, "family"):
            raise ArgenError(f"{path} is a tokenizer checkpoint; sampling needs a generator checkpoint")
        if not (path / ckpt.TOKENIZER_DIR).is_dir():
            raise ArgenError(f"generator checkpoint {path} has no {ckpt.TOKENIZER_DIR}/ folder")
        tokenizer = ckpt.load_model(path / ckpt.TOKENIZER_DIR, device)
        return cls(tokenizer, generator, (generator.checkpoint_meta.get("meta") or {}).get("sampler"), precision)

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

    # no_grad, not inference_mode: only outside inference mode does autocast keep the bf16 copy of
    # each weight for the whole call (inside it, every matmul casts its weight again)
    @torch.no_grad()
    def __call__(self, labels: Sequence[int], seed: int = 0, batch_size: int = 256, progress: bool = False,
                 **sampler_overrides) -> torch.Tensor:
        """Sample one image per label: (N, C, H, W) in [-1, 1]. Same seed, same images."""
        self.check_labels(labels)
        config = self.sampler.replace(**sampler_overrides)
        labels_t = torch.as_tensor(list(labels), dtype=torch.long, device=self.device)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        out = []
        for i in tqdm(range(0, len(labels_t), batch_size), disable=not progress, desc="sample"):
            with self._autocast():
                tokens = self._sample(self.generator, self.tokenizer, labels_t[i:i + batch_size], config, gen)
                out.append(self.tokenizer.decode(tokens).float().cpu())
        return torch.cat(out)


    @torch.no_grad()
    def edit(self, image: torch.Tensor, mask: torch.Tensor, labels: Sequence[int], seed: int = 0,
             keep_scales: int | None = None, **sampler_overrides) -> torch.Tensor:
        """Regenerate the region ``mask`` of ``image`` under each class in ``labels``: (N, C, H, W).

        ``image``: (1, C, H, W) in [-1, 1]; ``mask``: (1, 1, H, W), 1 = regenerate, 0 = keep. A token
        is kept (exactly) when its whole cell on the token grid lies outside the mask; every family
        fills the rest its own way (raster: in raster order, attending to the known tokens; masked:
        starting from the known tokens; VAR: forcing the known tokens at every scale). For VAR,
        ``keep_scales=k`` instead keeps the image's first k scales whole and regenerates the finer ones.
        """
        self.check_labels(labels)
        n = len(labels)
        image, mask = image.to(self.device).expand(n, -1, -1, -1), mask.to(self.device).expand(n, -1, -1, -1)
        config = self.sampler.replace(**sampler_overrides)
        labels_t = torch.as_tensor(list(labels), dtype=torch.long, device=self.device)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        with self._autocast():
            tok = self.tokenizer
            if hasattr(tok, "scales"):
                idx = tok.encode_scales(image)
                if keep_scales is not None:
                    if not 0 <= keep_scales <= len(tok.scales):
                        raise ArgenError(f"--keep-scales must be in 0..{len(tok.scales)}, got {keep_scales}")
                    known = [torch.full_like(i, si < keep_scales, dtype=torch.bool) for si, i in enumerate(idx)]
                else:
                    known = [F.adaptive_max_pool2d(mask, pn)[:, 0] < 0.5 for pn in tok.scales]
                tokens = self._sample(self.generator, tok, labels_t, config, gen, known=(idx, known))
            else:
                if keep_scales is not None:
                    raise ArgenError("--keep-scales applies to multi-scale (VAR) models only")
                idx = tok.encode(image)  # (N, h, w) ids, or (N, C, h, w) continuous tokens
                known = F.adaptive_max_pool2d(mask, tok.grid)[:, 0] < 0.5  # (N, h, w)
                tokens = self._sample(self.generator, tok, labels_t, config, gen, known=(idx, known))
            return tok.decode(tokens).float().cpu()


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
