"""Image data sets: ``uint8`` tensors in memory, or an image folder decoded on demand.

``load_dataset(name, split, path, image_size)`` returns an :class:`ImageDataset` whose
``images`` are ``(N, C, H, W)`` ``uint8`` in 0..255 and whose ``labels`` are ``(N,)`` ``int64``
(for ``folder`` a :class:`FolderDataset` with the same interface).
``batch(idx)`` gives float32 images in [-1, 1] (``x / 127.5 - 1``) and labels.

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
    classes. Images (png, jpg, jpeg, bmp, gif, webp, tif, tiff; hidden files skipped) are read
    with PIL, converted to RGB and brought to ``image_size`` x ``image_size`` (default 32) by the
    crop of ADM, LlamaGen and MAR (``center_crop_arr``): halve with BOX filtering while the short
    side is at least twice ``image_size``, resize with BICUBIC so that the short side is
    ``image_size``, take the centre square. Split: within each class, files are sorted by name
    and the 10th, 20th, 30th, ... file (0-based position ``i % 10 == 9``) goes to "test", the
    others to "train". A :class:`FolderDataset` decodes images when a batch asks for them (with a
    small LRU cache), so a folder of 256 px photos is never held in memory whole; every file's
    header is read at load time, so an unreadable file fails then, not mid-training. Its
    ``augment`` is True: training mirrors each image with probability 1/2 (``flips``).

    Captions (text-to-image), chosen automatically: a ``captions.jsonl`` file in ``path``, one JSON
    object a line, ``{"file": "cat/001.png", "caption": "..."}`` with the file relative to ``path``;
    otherwise a caption file beside each image (``cat/001.png`` + ``cat/001.txt``, UTF-8, surrounding
    whitespace stripped) as soon as one image has one. Either way every image needs a caption (a
    missing one is an error naming the image); ``captions`` is then one per image, else None. A
    captioned folder may also be flat (images directly in ``path``, no sub-folders): one class, named
    after the folder, every label 0. Captioned folders are not mirrored (``augment`` False): a
    caption may say "left" or "right".

Augmentation: a data set whose ``augment`` is True gets a horizontal flip per sample while
training (``batch(idx, flip_B=flips(seed, step, batch_size))``). The flip of a sample is a
pure function of the training seed and the sample's position in the stream of global batches,
not of torch's RNG: N processes see the flips one process sees, a resumed run the flips of the
uninterrupted one, and pre-tokenized codes (``argen.data.codes``) pick the same flipped codes.

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
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from argen.data.captions import folder_captions
from argen.errors import DataError

__all__ = [
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DEFAULT_DIR",
    "SPLITS",
    "FolderDataset",
    "ImageDataset",
    "center_crop_arr",
    "flips",
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
    augment: bool = False  # training mirrors images at random (``flips``): photos yes, digits no

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

    def batch(self, idx: torch.Tensor | Sequence[int],
              flip_B: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``idx`` as float32 in [-1, 1] (``x / 127.5 - 1``) and their labels; those where
        ``flip_B`` (bool, one per index) is True mirrored left to right."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        return _to_float(_flipped(self.images[idx], flip_B)), self.labels[idx]

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
    scenes: int | None = None,
) -> ImageDataset | FolderDataset:
    """Load data set ``name`` (one of ``DATASETS``), split ``split`` (one of ``SPLITS``).

    ``scenes``: ``shapes`` only, how many scenes the split holds (default: its fixed size; more are drawn
    by the same rules, see :func:`argen.data.shapes.load_shapes`)."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of: {', '.join(DATASETS)}")
    if scenes is not None and key != "shapes":
        raise DataError(f"--scenes: only the shapes data set draws its scenes; {key} has a fixed size")
    if key == "shapes":  # procedural captioned scenes with their own splits: argen/data/shapes.py
        from argen.data.shapes import load_shapes

        images, labels, classes, captions = load_shapes(split, image_size, scenes)
        return ImageDataset(name=key, images=images, labels=labels, classes=classes, captions=captions)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise DataError(f"image size must be a positive integer, got {image_size!r}")

    if key == "folder":
        return _load_folder(split, path, image_size or _DEFAULT_FOLDER_SIZE)
    if key == "digits":
        images, labels, classes = _load_digits(split)
    else:
        images, labels, classes = _load_fashion_mnist(split, path)
    if image_size is not None:
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


class FolderDataset:
    """A class-folder data set whose images are decoded when a batch asks for them.

    The interface of :class:`ImageDataset` (``labels``, ``classes``, ``batch``, ...); ``images``
    decodes every file at once, which suits small folders and tests only. Decoded images (uint8,
    after the crop) stay in an LRU cache of ``cache_mb`` MiB, so a small folder is decoded once;
    misses of a batch are decoded by ``workers`` threads (PIL releases the GIL while decoding).
    ``captions``: one per image for a captioned folder (text-to-image), else None.
    """

    channels = 3

    def __init__(self, files: Sequence[Path], labels: torch.Tensor, classes: Sequence[str], size: int, *,
                 captions: Sequence[str] | None = None, name: str = "folder", cache_mb: int = 256,
                 workers: int | None = None):
        if labels.dtype != torch.int64 or labels.shape != (len(files),):
            raise ValueError(f"labels must be ({len(files)},) int64, got {tuple(labels.shape)} {labels.dtype}")
        if captions is not None and len(captions) != len(files):
            raise ValueError(f"{len(files)} images but {len(captions)} captions")
        self.name, self.files, self.labels, self.classes, self.size = name, tuple(files), labels, tuple(classes), size
        self.captions = tuple(captions) if captions is not None else None
        # Photos are mirrored at random while training, as ADM, LlamaGen and MAR train; captioned ones are not:
        # a caption that says "on the left" would describe the mirror image wrongly.
        self.augment = self.captions is None
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._cache_items = max(1, cache_mb * 2**20 // (self.channels * size * size))
        self._workers = workers or min(8, os.cpu_count() or 1)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.size, self.size

    @property
    def images(self) -> torch.Tensor:
        """Every image, ``(N, 3, size, size)`` uint8: decodes the whole folder (small folders only)."""
        return self.uint8(range(len(self)))

    def __len__(self) -> int:
        return len(self.files)

    def captions_of(self, idx: torch.Tensor | Sequence[int]) -> list[str]:
        """The captions of images ``idx`` (a captioned folder's)."""
        if self.captions is None:
            raise DataError(f"{self.name}: this data set has no captions (give each image a .txt caption file, "
                            "or the folder a captions.jsonl)")
        return [self.captions[i] for i in torch.as_tensor(idx, dtype=torch.long).reshape(-1).tolist()]

    def uint8(self, idx: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Images ``idx`` as ``(B, 3, size, size)`` uint8, decoded now or taken from the cache."""
        idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1).tolist()
        missing = sorted({i for i in idx if i not in self._cache})
        if len(missing) > 1 and self._workers > 1:
            with ThreadPoolExecutor(min(self._workers, len(missing))) as pool:
                decoded = list(pool.map(self._decode, missing))
        else:
            decoded = [self._decode(i) for i in missing]
        fresh = dict(zip(missing, decoded))
        out = torch.stack([fresh[i] if i in fresh else self._cache[i] for i in idx]) if idx else \
            torch.empty((0, self.channels, self.size, self.size), dtype=torch.uint8)
        for i in idx:  # most recently used last; the oldest leave first
            self._cache[i] = fresh.get(i, self._cache.get(i))
            self._cache.move_to_end(i)
        while len(self._cache) > self._cache_items:
            self._cache.popitem(last=False)
        return out

    def batch(self, idx: torch.Tensor | Sequence[int],
              flip_B: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`ImageDataset.batch`."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        return _to_float(_flipped(self.uint8(idx), flip_B)), self.labels[idx]

    def _decode(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(_read_rgb(self.files[i], self.size).transpose(2, 0, 1)))

    def __repr__(self) -> str:
        return (f"FolderDataset(name={self.name!r}, n={len(self)}, shape=(3, {self.size}, {self.size}), "
                f"num_classes={self.num_classes})")


def center_crop_arr(image, size: int) -> np.ndarray:
    """A PIL image -> ``(size, size, C)`` uint8: the crop ADM, LlamaGen and MAR train on.

    Halving with a BOX filter while the short side is at least ``2 * size`` keeps the final BICUBIC
    step short (a large bicubic shrink aliases), then the short side becomes ``size`` and the centre
    square is kept."""
    from PIL import Image

    while min(image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.Resampling.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.Resampling.BICUBIC)
    arr = np.asarray(image)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top: top + size, left: left + size]


def _read_rgb(file: Path, size: int) -> np.ndarray:
    """``file`` as RGB, centre-cropped to ``(size, size, 3)`` uint8; a one-line DataError if unreadable."""
    from PIL import UnidentifiedImageError

    from argen.errors import ArgenError
    from argen.images import open_image

    try:
        with open_image(file) as im:  # refuses decompression bombs before decoding them
            return center_crop_arr(im.convert("RGB"), size)
    except ArgenError as exc:
        raise DataError(f"folder: {exc}") from None
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"folder: cannot read image {file}: {exc}") from None


def _load_folder(split: str, path: str | os.PathLike[str] | None, image_size: int) -> FolderDataset:
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
    groups: list[list[Path]] = []  # the images of each class, sorted by name
    texts: set[Path] = set()  # every .txt file beside the images: caption files, if any image has one
    for folder in [root / cls for cls in classes] or [root]:
        images, txt = _folder_files(folder)
        if not images and classes:
            raise DataError(f"folder: class folder {folder} has no images")
        groups.append(images)
        texts |= txt
    every = [f for images in groups for f in images]
    caption_of = folder_captions(root, every, texts)
    if not classes:  # a flat folder: one class, which only a text model (its captions) can learn from
        if not every or caption_of is None:
            raise DataError(
                f"folder: {root} has no class sub-folders (want one sub-folder of images per class, or "
                "captioned images: a .txt beside each image or a captions.jsonl)"
            )
        classes = (root.resolve().name or "images",)

    chosen: list[Path] = []
    labels: list[int] = []
    for label, files in enumerate(groups):
        for i, file in enumerate(files):
            is_test = i % 10 == 9
            if (split == "train" and is_test) or (split == "test" and not is_test):
                continue
            try:  # the header only: a file that is no image fails now, not at some training step
                open_image(file).close()
            except ArgenError as exc:
                raise DataError(f"folder: {exc}") from None
            chosen.append(file)
            labels.append(label)
    if not chosen:
        raise DataError(
            f"folder: split {split!r} of {root} has no images (every 10th file of a class is "
            "test; use split 'all' for small folders)"
        )
    captions = [caption_of(f) for f in chosen] if caption_of is not None else None
    return FolderDataset(chosen, torch.tensor(labels, dtype=torch.int64), classes, image_size, captions=captions)


def _folder_files(folder: Path) -> tuple[list[Path], set[Path]]:
    """The images of ``folder`` (sorted by name; hidden files skipped) and its ``.txt`` files."""
    images, texts = [], set()
    for f in folder.iterdir():
        if f.name.startswith(".") or not f.is_file():
            continue
        if f.suffix.lower() in _IMAGE_EXTENSIONS:
            images.append(f)
        elif f.suffix == ".txt":
            texts.add(f)
    return sorted(images), texts


# ------------------------------------------------------------------------------------- augment


_GOLDEN, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on uint64 arrays (array arithmetic wraps modulo 2**64)."""
    x = x + np.uint64(_GOLDEN)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(_MIX1)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(_MIX2)
    return x ^ (x >> np.uint64(31))


def flips(seed: int, step: int, batch_size: int) -> torch.Tensor:
    """``(batch_size,)`` bool: which samples of global batch ``step`` are mirrored while training.

    Sample ``j`` of the batch is at position ``p = step * batch_size + j`` of the training stream
    (``batch_indices``); its flip is the top bit of a SplitMix64 hash of (``seed``, ``p``), so it
    depends on nothing else: not on torch's RNG, the number of processes, how the batch is split,
    or whether the run was resumed."""
    key = _splitmix64(np.array([seed % 2**64], dtype=np.uint64))
    pos = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.uint64)
    return torch.from_numpy((_splitmix64(pos ^ key) >> np.uint64(63)).astype(np.bool_))


def _flipped(images: torch.Tensor, flip_B: torch.Tensor | None) -> torch.Tensor:
    """``(B, C, H, W)`` images with those where ``flip_B`` is True mirrored left to right."""
    if flip_B is None:
        return images
    flip_B = torch.as_tensor(flip_B, dtype=torch.bool).reshape(-1)
    if flip_B.shape[0] != images.shape[0]:
        raise ValueError(f"flip_B has {flip_B.shape[0]} entries for {images.shape[0]} images")
    return torch.where(flip_B[:, None, None, None], images.flip(-1), images)


def _to_float(images: torch.Tensor) -> torch.Tensor:
    return images.to(torch.float32) / 127.5 - 1.0


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
