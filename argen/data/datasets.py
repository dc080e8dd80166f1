"""Image data sets held in memory as ``uint8`` tensors.

``load_dataset(name, split, path, image_size)`` returns an :class:`ImageDataset` whose
``images`` are ``(N, C, H, W)`` ``uint8`` in 0..255 and whose ``labels`` are ``(N,)`` ``int64``.
``ImageDataset.batch(idx)`` gives float32 images in [-1, 1] (``x / 127.5 - 1``) and labels.

Data sets (``DATASETS``) and splits (``SPLITS`` = train, test, all):

``digits``
    scikit-learn's bundled ``load_digits()`` data: 1797 grayscale 8x8 images, classes "0".."9".
    Pixel values 0..16 become ``uint8`` as ``floor(v * 255 / 16 + 0.5)`` (so 16 -> 255).
    Fixed stratified split: one ``numpy.random.RandomState(0)`` is created, then for each
    class c = 0, 1, ..., 9 in that order, the (ascending) indices of class c are shuffled with
    ``idx[rng.permutation(len(idx))]``; the last ``len(idx) // 5`` of the shuffled indices go to
    "test", the rest to "train". Each split is then returned in ascending original index order.
    This gives 1442 train / 355 test images, every class in both splits, and the same split on
    every call and machine (``RandomState`` streams are frozen by numpy). ``path`` is ignored.

``fashion-mnist``
    The IDX files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each plain or ``.gz``) in ``path``,
    default ``/usr/share/datasets/fashion-mnist/`` (Debian package ``dataset-fashion-mnist``).
    "train" is the 60000-image train file, "test" the 10000-image t10k file, "all" both (train
    first). 1 channel, 28x28.

``folder``
    An image folder ``path`` with one sub-folder per class; the sorted sub-folder names are the
    classes. Images (png, jpg, jpeg, bmp, gif, webp, tif, tiff; hidden files skipped) are loaded
    with PIL, converted to RGB and resized with bicubic resampling to ``image_size`` x
    ``image_size`` (default 32). Split: within each class, files are sorted by name and the 10th,
    20th, 30th, ... file (0-based position ``i % 10 == 9``) goes to "test", the others to "train".

For ``digits`` and ``fashion-mnist`` a given ``image_size`` different from the native size
resizes every image bilinearly (``torch.nn.functional.interpolate`` on float, antialiased when
shrinking, then rounded back to ``uint8``).

Every user-fixable problem (unknown name or split, missing or corrupt files, an empty split)
raises :class:`argen.errors.DataError` with a one-line message.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from argen.errors import DataError

__all__ = [
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DEFAULT_DIR",
    "SPLITS",
    "ImageDataset",
    "load_dataset",
]

DATASETS = ("digits", "fashion-mnist", "folder", "shapes")
SPLITS = ("train", "test", "all")

FASHION_MNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist/"
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FMNIST_HINT = (
    "install it with `sudo apt-get install dataset-fashion-mnist` (or `make data`) "
    "or pass --data-path DIR"
)
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_DEFAULT_FOLDER_SIZE = 32


@dataclass(frozen=True)
class ImageDataset:
    """A labelled image data set held in memory.

    ``images``: ``(N, C, H, W)`` ``uint8`` in 0..255; ``labels``: ``(N,)`` ``int64`` in
    ``0..len(classes) - 1``.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    captions: tuple[str, ...] | None = None  # one per image for captioned data sets (shapes), else None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be a (N, C, H, W) uint8 tensor, got {tuple(self.images.shape)} "
                f"{self.images.dtype}"
            )
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(f"labels must be a (N,) int64 tensor, got {self.labels.dtype}")
        if self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(f"{self.images.shape[0]} images but {self.labels.shape[0]} labels")
        object.__setattr__(self, "classes", tuple(self.classes))
        if self.captions is not None:
            object.__setattr__(self, "captions", tuple(self.captions))
            if len(self.captions) != self.images.shape[0]:
                raise ValueError(f"{self.images.shape[0]} images but {len(self.captions)} captions")

    def captions_of(self, idx: torch.Tensor | Sequence[int]) -> list[str]:
        """The captions of images ``idx`` (a captioned data set's)."""
        if self.captions is None:
            raise DataError(f"{self.name}: this data set has no captions")
        return [self.captions[i] for i in torch.as_tensor(idx, dtype=torch.long).reshape(-1).tolist()]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, idx: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``idx`` as float32 in [-1, 1] (``x / 127.5 - 1``) and their labels."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        x = self.images[idx].to(torch.float32) / 127.5 - 1.0
        return x, self.labels[idx]

    def __repr__(self) -> str:
        c, h, w = self.images.shape[1:]
        return (
            f"ImageDataset(name={self.name!r}, n={len(self)}, shape=({c}, {h}, {w}), "
            f"num_classes={self.num_classes})"
        )


def load_dataset(
    name: str,
    split: str = "train",
    path: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
) -> ImageDataset:
    """Load data set ``name`` (one of ``DATASETS``), split ``split`` (one of ``SPLITS``)."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of: {', '.join(DATASETS)}")
    if key == "shapes":  # procedural captioned scenes with their own splits: argen/data/shapes.py
        from argen.data.shapes import load_shapes

        images, labels, classes, captions = load_shapes(split, image_size)
        return ImageDataset(name=key, images=images, labels=labels, classes=classes, captions=captions)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise DataError(f"image size must be a positive integer, got {image_size!r}")

    if key == "digits":
        images, labels, classes = _load_digits(split)
    elif key == "fashion-mnist":
        images, labels, classes = _load_fashion_mnist(split, path)
    else:
        images, labels, classes = _load_folder(split, path, image_size or _DEFAULT_FOLDER_SIZE)
    if key != "folder" and image_size is not None:
        images = _resize_uint8(images, image_size)
    if images.shape[0] == 0:
        raise DataError(f"{key}: split {split!r} has no images")
    return ImageDataset(name=key, images=images, labels=labels, classes=classes)


# --------------------------------------------------------------------------------------- digits


def _digits_split_indices(target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) index arrays of the fixed digits split (see the module docstring)."""
    rng = np.random.RandomState(0)
    train, test = [], []
    for c in range(10):
        idx = np.flatnonzero(target == c)
        shuffled = idx[rng.permutation(len(idx))]
        n_test = len(idx) // 5
        train.append(shuffled[: len(idx) - n_test])
        test.append(shuffled[len(idx) - n_test :])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ((1797, 8, 8) float 0..16, (1797,) int), read-only.

    Reads the ``digits.csv.gz`` file bundled with scikit-learn directly (the file that
    ``sklearn.datasets.load_digits`` parses), which skips the ~1 s ``import sklearn``; falls
    back to ``load_digits()`` when that file is not where expected.
    """
    spec = importlib.util.find_spec("sklearn")
    csv = None
    if spec is not None and spec.origin:
        csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    data = None
    if csv is not None and csv.is_file():
        try:
            with gzip.open(csv, "rt") as fh:
                data = np.loadtxt(fh, delimiter=",")
        except (OSError, EOFError, ValueError, zlib.error):
            data = None
    if data is not None and data.shape == (1797, 65):
        images, target = data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    else:
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise DataError(
                "digits: scikit-learn is not installed; install it with `pip install scikit-learn`"
            ) from None
        bunch = load_digits()
        images, target = bunch.images, bunch.target.astype(np.int64)
    images.setflags(write=False)
    target.setflags(write=False)
    return images, target


def _load_digits(split: str) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    raw, target = _digits_arrays()
    pixels = np.floor(raw * (255.0 / 16.0) + 0.5).clip(0, 255).astype(np.uint8)
    if split != "all":
        train_idx, test_idx = _digits_split_indices(target)
        sel = train_idx if split == "train" else test_idx
        pixels, target = pixels[sel], target[sel]
    images = torch.from_numpy(np.ascontiguousarray(pixels[:, None, :, :]))
    labels = torch.from_numpy(np.array(target, dtype=np.int64))
    return images, labels, tuple(str(c) for c in range(10))


# -------------------------------------------------------------------------------- fashion-mnist


def _find_idx_file(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"fashion-mnist: missing {stem}(.gz) in {directory}; {_FMNIST_HINT}")


def _read_bytes(file: Path) -> bytes:
    try:
        if file.name.endswith(".gz"):
            with gzip.open(file, "rb") as fh:
                return fh.read()
        return file.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"fashion-mnist: cannot read {file}: {exc}") from None


def _read_idx_images(file: Path) -> np.ndarray:
    data = _read_bytes(file)
    if len(data) < 16:
        raise DataError(f"fashion-mnist: {file} is truncated (no 16-byte IDX image header)")
    magic, n, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != 2051:
        raise DataError(
            f"fashion-mnist: {file} is not an IDX image file (magic {magic}, want 2051)"
        )
    expected = 16 + n * rows * cols
    if len(data) != expected:
        raise DataError(
            f"fashion-mnist: {file} has {len(data)} bytes but its header ({n}x{rows}x{cols}) "
            f"needs {expected} (truncated or corrupt)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows, cols).copy()


def _read_idx_labels(file: Path) -> np.ndarray:
    data = _read_bytes(file)
    if len(data) < 8:
        raise DataError(f"fashion-mnist: {file} is truncated (no 8-byte IDX label header)")
    magic, n = struct.unpack(">II", data[:8])
    if magic != 2049:
        raise DataError(
            f"fashion-mnist: {file} is not an IDX label file (magic {magic}, want 2049)"
        )
    if len(data) != 8 + n:
        raise DataError(
            f"fashion-mnist: {file} has {len(data)} bytes but its header ({n} labels) needs "
            f"{8 + n} (truncated or corrupt)"
        )
    labels = np.frombuffer(data, dtype=np.uint8, offset=8).astype(np.int64)
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise DataError(f"fashion-mnist: {file} has label {labels.max()}, want 0..9")
    return labels


def _load_fashion_mnist_part(directory: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    image_file = _find_idx_file(directory, f"{prefix}-images-idx3-ubyte")
    label_file = _find_idx_file(directory, f"{prefix}-labels-idx1-ubyte")
    images = _read_idx_images(image_file)
    labels = _read_idx_labels(label_file)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"fashion-mnist: {image_file} has {images.shape[0]} images but {label_file} has "
            f"{labels.shape[0]} labels"
        )
    return images, labels


def _load_fashion_mnist(
    split: str, path: str | os.PathLike[str] | None
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    directory = Path(path if path is not None else FASHION_MNIST_DEFAULT_DIR).expanduser()
    if not directory.is_dir():
        raise DataError(f"fashion-mnist: directory {directory} does not exist; {_FMNIST_HINT}")
    prefixes = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}[split]
    parts = [_load_fashion_mnist_part(directory, p) for p in prefixes]
    shapes = {p[0].shape[1:] for p in parts}
    if len(shapes) != 1:
        raise DataError(f"fashion-mnist: train and t10k images differ in size in {directory}")
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    return (
        torch.from_numpy(np.ascontiguousarray(images[:, None, :, :])),
        torch.from_numpy(np.ascontiguousarray(labels)),
        FASHION_MNIST_CLASSES,
    )


# ------------------------------------------------------------------------------------- folder


def _load_folder(
    split: str, path: str | os.PathLike[str] | None, image_size: int
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    from PIL import Image, UnidentifiedImageError

    from argen.errors import ArgenError
    from argen.images import open_image

    if path is None:
        raise DataError(
            "folder: the folder data set needs --data-path DIR (one sub-folder per class)"
        )
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"folder: directory {root} does not exist")
    classes = tuple(
        sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    )
    if not classes:
        raise DataError(f"folder: {root} has no class sub-folders (want one sub-folder per class)")

    images: list[np.ndarray] = []
    labels: list[int] = []
    resample = Image.Resampling.BICUBIC
    for label, cls in enumerate(classes):
        files = sorted(
            f
            for f in (root / cls).iterdir()
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in _IMAGE_EXTENSIONS
        )
        if not files:
            raise DataError(f"folder: class folder {root / cls} has no images")
        for i, file in enumerate(files):
            is_test = i % 10 == 9
            if (split == "train" and is_test) or (split == "test" and not is_test):
                continue
            try:
                with open_image(file) as im:  # refuses decompression bombs before decoding them
                    rgb = im.convert("RGB")
            except ArgenError as exc:
                raise DataError(f"folder: {exc}") from None
            except (OSError, UnidentifiedImageError, ValueError) as exc:
                raise DataError(f"folder: cannot read image {file}: {exc}") from None
            if rgb.size != (image_size, image_size):
                rgb = rgb.resize((image_size, image_size), resample=resample)
            images.append(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise DataError(
            f"folder: split {split!r} of {root} has no images (every 10th file of a class is "
            "test; use split 'all' for small folders)"
        )
    return (
        torch.from_numpy(np.stack(images)),
        torch.tensor(labels, dtype=torch.int64),
        classes,
    )


# ------------------------------------------------------------------------------------- resize


def _resize_uint8(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Bilinear resize of ``(N, C, H, W)`` uint8 images to ``size`` x ``size``."""
    if tuple(images.shape[2:]) == (size, size):
        return images
    shrink = size < images.shape[2] or size < images.shape[3]
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].to(torch.float32)
        y = F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink
        )
        out[start : start + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out
