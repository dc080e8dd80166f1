"""Pre-tokenized data: a data set's tokenizer codes, computed once, and training from them.

A generator trains on what its frozen tokenizer makes of each image. At 256 px that encoder
costs more than the generator's step, so LlamaGen and MAR run it once over the data set and
train from the stored result, with each image's horizontal flip stored beside it.
``encode_codes`` (``argen encode``) does the same; ``open_codes`` reads the result back as a
data set whose ``batch(idx, flip_B)`` gives codes where an image data set gives images, and
``CodesTokenizer`` stands in for the tokenizer, so that each generator's own
``tokens_from_images`` turns codes into its training tokens unchanged.

A codes folder::

    codes.json                 the index (``INDEX``): tokenizer (class, preset, config, sha256 of
                               its weights), data, split, classes, image size, count, augment,
                               token kind, code shape and dtype, the shards in order, and the
                               captions of a captioned data set (else null)
    tokenizer/                 a copy of the tokenizer checkpoint (config.json, model.safetensors)
    shard-00000.safetensors    "codes" (n, 2, *code_shape): [:, 0] of the image, [:, 1] of its
    ...                        mirror image; "labels" (n,) int64. ``shard_size`` images per shard

What is stored, per token kind of the tokenizer:

* ``discrete`` (VQ): the code indices, ``(h * w,)`` in raster order;
* ``multiscale`` (VAR's VQ): every scale's indices, flattened and concatenated coarse to fine,
  ``(sum pn**2,)``; the teacher-forcing input is recomputed from them with the tokenizer's
  codebook (cheap);
* ``continuous`` (KL, MAR): the posterior's mean and log variance, ``(2 * C, h, w)`` float32,
  unscaled. MAR trains on a draw from the posterior; that draw is made while training, from the
  same random stream as when encoding images, so it stays fresh every epoch.

Indices are int16 when the codebook has at most 32768 codes, else int32.

Training from codes equals training from the images they were made from: the batch order is
that of the images, the flip of each sample is the same pure function of (seed, position)
(``argen.data.flips``), and the tokens are those the tokenizer gives for that (mirrored) image.
The tokenizer's encoder runs on other batches here than when training from images, so discrete
codes are equal unless a float rounding difference moves a feature across a codebook boundary,
and continuous tokens differ by float rounding (about 1e-6).

The folder is written under a temporary name beside ``out`` and renamed into place when the last
shard and the index are written: a crash leaves no folder at ``out`` that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import argen.checkpoint as ckpt
from argen.errors import DataError
from argen.nn import shard
from argen.version import __version__

__all__ = ["INDEX", "CodesDataset", "CodesTokenizer", "check_tokenizer", "encode_codes", "open_codes"]

INDEX = "codes.json"
FORMAT = "argen-codes"
VERSION = 1
_NP = {"I16": np.dtype("<i2"), "I32": np.dtype("<i4"), "F32": np.dtype("<f4"), "I64": np.dtype("<i8")}


# ------------------------------------------------------------------------------------ encode


def encode_codes(tokenizer_dir: str | Path, data: str, out: str | Path, *, data_path: str | None = None,
                 image_size: int | None = None, split: str = "train", scenes: int | None = None,
                 batch_size: int = 64, shard_size: int = 4096, device: str | torch.device = "cpu",
                 overwrite: bool = False, quiet: bool = False) -> dict:
    """Encode split ``split`` of data set ``data`` with the tokenizer in ``tokenizer_dir`` into the codes
    folder ``out``; returns its index. ``image_size``: default the tokenizer's for ``folder`` data, else
    the data set's own size. ``scenes``: shapes only, the split's size (see ``load_dataset``).
    ``overwrite`` replaces an existing codes folder (never another folder)."""
    from argen.data.datasets import load_dataset
    from argen.models import load_checkpoint
    from argen.tokenizers.base import Tokenizer

    out = Path(out)
    _check_out(out, overwrite)
    if batch_size < 1 or shard_size < 1:
        raise DataError(f"--batch-size and --shard-size must be >= 1, got {batch_size} and {shard_size}")
    tokenizer, record = load_checkpoint(tokenizer_dir, device)
    if not isinstance(tokenizer, Tokenizer):
        raise DataError(f"--tokenizer: {tokenizer_dir} holds a {record.cls}, not a tokenizer")
    cfg = tokenizer.config
    if image_size is None and str(data).lower() == "folder":
        image_size = cfg.image_size
    dataset = load_dataset(data, split, data_path, image_size, scenes)
    c, (h, w) = dataset.channels, dataset.image_size
    if (c, h, w) != (cfg.image_channels, cfg.image_size, cfg.image_size):
        raise DataError(f"--data {data}: its images are {c} channel(s) of {h}x{w}, but the tokenizer {tokenizer_dir} "
                        f"takes {cfg.image_channels} channel(s) of {cfg.image_size}x{cfg.image_size}"
                        + ("; give --image-size" if c == cfg.image_channels and not image_size else ""))
    spec = tokenizer.token_spec
    if spec.kind == "continuous" and not hasattr(tokenizer, "posterior"):
        raise DataError(f"--tokenizer: {record.cls} has no posterior to store")
    tokenizer.eval()

    index = {
        "format": FORMAT, "version": VERSION, "argen_version": __version__,
        "tokenizer": _tokenizer_identity(tokenizer_dir),
        "kind": spec.kind, "data": dataset.name, "data_path": str(Path(data_path).resolve()) if data_path else None,
        "split": split, "classes": list(dataset.classes), "channels": c, "image_size": h, "count": len(dataset),
        "augment": bool(getattr(dataset, "augment", False)), "shards": [],
        "captions": list(dataset.captions) if getattr(dataset, "captions", None) is not None else None,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        ckpt.copy_tokenizer(tokenizer_dir, tmp)
        pending: list[torch.Tensor] = []
        pending_labels: list[torch.Tensor] = []
        bar = tqdm(total=len(dataset), disable=quiet, desc=f"encode {dataset.name}", unit="img", dynamic_ncols=True)
        for start in range(0, len(dataset), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(dataset)))
            images, labels = dataset.batch(idx)
            images = images.to(device)
            with torch.no_grad():  # one pass over the images and their mirror images
                codes = _codes_of(tokenizer, torch.cat([images, images.flip(-1)])).cpu()
            pending.append(torch.stack(codes.chunk(2), 1))  # (B, 2, *code_shape)
            pending_labels.append(labels)
            index["code_shape"], index["dtype"] = list(codes.shape[1:]), str(codes.dtype).removeprefix("torch.")
            while sum(len(x) for x in pending_labels) >= shard_size:
                pending, pending_labels = _write_shard(tmp, index, pending, pending_labels, shard_size)
            bar.update(len(idx))
        if pending_labels:
            _write_shard(tmp, index, pending, pending_labels, shard_size)
        bar.close()
        ckpt.write_json(tmp / INDEX, index)  # last: a folder without its index is not a codes folder
        _move_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return index


def _codes_of(tokenizer, images: torch.Tensor) -> torch.Tensor:
    """What is stored of each image (module docstring): ``(B, *code_shape)``."""
    kind = tokenizer.token_spec.kind
    if kind == "continuous":
        mean, logvar = tokenizer.posterior(images)
        return torch.cat([mean, logvar], 1).float()
    idx = tokenizer.encode_scales(images) if kind == "multiscale" else [tokenizer.encode(images)]
    codes = torch.cat([i.flatten(1) for i in idx], 1)
    return codes.to(torch.int16 if tokenizer.token_spec.vocab_size <= 2**15 else torch.int32)


def _write_shard(folder: Path, index: dict, pending: list[torch.Tensor], pending_labels: list[torch.Tensor],
                 shard_size: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Write the first ``shard_size`` pending images as the next shard; returns what is left pending."""
    codes, labels = torch.cat(pending), torch.cat(pending_labels)
    name = f"shard-{len(index['shards']):05d}.safetensors"
    ckpt.save_tensors(folder / name, {"codes": codes[:shard_size], "labels": labels[:shard_size].to(torch.int64)})
    index["shards"].append({"file": name, "count": int(min(shard_size, len(labels)))})
    rest = [codes[shard_size:]], [labels[shard_size:]]
    return rest if len(labels) > shard_size else ([], [])


def _check_out(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir() or (any(out.iterdir()) and not (out / INDEX).is_file()):
        raise DataError(f"--out {out} exists and is not a codes folder; choose another --out")
    if not overwrite and any(out.iterdir()):
        raise DataError(f"--out {out} already holds codes; give --overwrite to replace them, or choose another --out")


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder to ``out``; an old codes folder there is renamed away first, then removed."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.replace(out, old / "codes")
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tokenizer_identity(tokenizer_dir: str | Path) -> dict:
    """What names a tokenizer checkpoint: class, preset, config, and the sha256 of its weights file."""
    record = ckpt.read_record(tokenizer_dir)
    return {"class": record.cls, "preset": record.preset, "config": record.config,
            "sha256": _sha256(Path(tokenizer_dir) / ckpt.WEIGHTS)}


# -------------------------------------------------------------------------------------- read


class CodesDataset:
    """A codes folder as a data set: ``batch(idx, flip_B)`` gives ``(codes, labels)`` where an image data
    set gives ``(images, labels)``; the shards are memory-mapped, so only the rows a batch takes are read.

    ``codes``: int64 indices (discrete, multi-scale) or float32 posterior moments (continuous), one row
    per index; the mirror image's where ``flip_B`` is True."""

    def __init__(self, root: Path, index: dict, shards: list[np.ndarray], labels: torch.Tensor):
        self.root, self.index, self._shards, self.labels = root, index, shards, labels
        self.name = index["data"]
        self.classes = tuple(index["classes"])
        self.augment = bool(index["augment"])
        self.kind = index["kind"]
        captions = index.get("captions")
        self.captions = tuple(captions) if captions is not None else None  # captioned data sets (shapes)
        self._ends = np.cumsum([s.shape[0] for s in shards])

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / ckpt.TOKENIZER_DIR

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.index["channels"])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.index["image_size"]), int(self.index["image_size"])

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def captions_of(self, idx) -> list[str]:
        if self.captions is None:
            raise DataError(f"{self.name}: this data set has no captions")
        return [self.captions[i] for i in torch.as_tensor(idx, dtype=torch.long).reshape(-1).tolist()]

    def batch(self, idx, flip_B: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
        flip = np.zeros(len(idx), dtype=np.int64) if flip_B is None else \
            torch.as_tensor(flip_B, dtype=torch.bool).reshape(-1).numpy().astype(np.int64)
        if len(flip) != len(idx):
            raise ValueError(f"flip_B has {len(flip)} entries for {len(idx)} indices")
        rows = idx.numpy()
        which = np.searchsorted(self._ends, rows, side="right")
        first = self._shards[0]
        out = np.empty((len(rows), *first.shape[2:]), dtype=first.dtype)
        for s in np.unique(which):
            sel = np.flatnonzero(which == s)
            local = rows[sel] - (self._ends[s - 1] if s else 0)
            out[sel] = self._shards[s][local, flip[sel]]  # reads these rows of the memory map only
        codes = torch.from_numpy(out)
        return (codes.float() if self.kind == "continuous" else codes.long()), self.labels[idx]

    def __repr__(self) -> str:
        return (f"CodesDataset(root={str(self.root)!r}, data={self.name!r}, n={len(self)}, kind={self.kind!r}, "
                f"code_shape={tuple(self.index['code_shape'])})")


def open_codes(path: str | Path) -> CodesDataset:
    """The codes folder ``path`` (made by ``encode_codes``); a one-line DataError naming ``--codes`` if it is
    missing, incomplete or corrupt."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"--codes {path}: no such folder")
    if not (root / INDEX).is_file():
        raise DataError(f"--codes {path}: not a codes folder (no {INDEX}); make one with `argen encode`")
    try:
        index = json.loads((root / INDEX).read_text())
        if index.get("format") != FORMAT:
            raise DataError(f"--codes {path}: {INDEX} is not an {FORMAT} index")
        if index.get("version", 0) > VERSION:
            raise DataError(f"--codes {path}: codes format {index['version']} is newer than this argen reads "
                            f"({VERSION}); upgrade argen")
        shards, labels = [], []
        for entry in index["shards"]:
            file = root / entry["file"]
            codes, shard_labels = _memmap(file, "codes"), np.array(_memmap(file, "labels"))
            if codes.shape[0] != entry["count"] or shard_labels.shape != (entry["count"],) \
                    or list(codes.shape[1:]) != [2, *index["code_shape"]]:
                raise DataError(f"--codes {path}: {entry['file']} does not hold what {INDEX} says "
                                f"({entry['count']} rows of 2 x {index['code_shape']})")
            shards.append(codes)
            labels.append(shard_labels)
        n, classes = sum(len(x) for x in labels), index["classes"]
        if n != index["count"] or not shards:
            raise DataError(f"--codes {path}: the shards hold {n} images, {INDEX} says {index['count']}")
        labels = torch.from_numpy(np.concatenate(labels).astype(np.int64))
        if index.get("captions") is not None and len(index["captions"]) != n:
            raise DataError(f"--codes {path}: {INDEX} has {len(index['captions'])} captions for {n} images")
        if int(labels.min()) < 0 or int(labels.max()) >= len(classes):
            raise DataError(f"--codes {path}: labels outside 0..{len(classes) - 1}")
        if not (root / ckpt.TOKENIZER_DIR / ckpt.WEIGHTS).is_file():
            raise DataError(f"--codes {path}: its tokenizer copy ({ckpt.TOKENIZER_DIR}/{ckpt.WEIGHTS}) is missing")
    except (KeyError, TypeError, ValueError) as e:  # JSON errors are ValueErrors
        raise DataError(f"--codes {path}: {INDEX} is corrupt ({type(e).__name__}: {e})") from None
    return CodesDataset(root, index, shards, labels)


def _memmap(file: Path, name: str) -> np.ndarray:
    """Tensor ``name`` of a safetensors file as a read-only numpy memory map (the format: an 8-byte little-endian
    header length, a JSON header of dtypes, shapes and byte offsets, then the data)."""
    try:
        size = file.stat().st_size
        with open(file, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size:
                raise ValueError("header longer than the file")
            info = json.loads(f.read(n))[name]
        begin, end = info["data_offsets"]
        dtype, shape = _NP[info["dtype"]], tuple(info["shape"])
        if end - begin != dtype.itemsize * int(np.prod(shape)) or 8 + n + end > size:
            raise ValueError("truncated")
    except (OSError, struct.error, KeyError, ValueError) as e:
        raise DataError(f"--codes: cannot read {name!r} of {file}: {e}") from None
    if not shape or shape[0] == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(file, dtype=dtype, mode="r", offset=8 + n + begin, shape=shape)


def check_tokenizer(codes: CodesDataset, tokenizer_dir: str | Path) -> None:
    """``tokenizer_dir`` must be the tokenizer the codes were made with (same config and weights)."""
    want, have = codes.index["tokenizer"], _tokenizer_identity(tokenizer_dir)
    if have["class"] != want["class"]:
        raise DataError(f"--tokenizer {tokenizer_dir} is a {have['class']}, but the codes in {codes.root} were made "
                        f"with a {want['class']}; leave --tokenizer out to use the codes' own copy")
    differ = sorted(k for k in {*want["config"], *have["config"]} if want["config"].get(k) != have["config"].get(k))
    if differ:
        k = differ[0]
        raise DataError(f"--tokenizer {tokenizer_dir} has {k}={have['config'].get(k)!r}, but the codes in {codes.root} "
                        f"were made with {k}={want['config'].get(k)!r}; leave --tokenizer out to use the codes' own copy")
    if have["sha256"] != want["sha256"]:
        raise DataError(f"--tokenizer {tokenizer_dir} has other weights than the tokenizer the codes in {codes.root} "
                        "were made with; leave --tokenizer out to use the codes' own copy")


# ----------------------------------------------------------------------------------- training


class CodesTokenizer(nn.Module):
    """A frozen tokenizer whose encoder has already run: ``encode`` and ``encode_scales`` take a batch of
    stored codes (``CodesDataset.batch``) and give what ``tokenizer``'s give for the images they were made
    from, so a generator's ``tokens_from_images(CodesTokenizer(tok), codes)`` is its training tokens."""

    def __init__(self, tokenizer: nn.Module):
        super().__init__()
        self.tokenizer = tokenizer
        self.spec = tokenizer.token_spec

    @property
    def token_spec(self):
        return self.spec

    def encode(self, codes: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None):
        if self.spec.kind == "discrete":
            return codes.view(codes.shape[0], *self.spec.grid)
        if self.spec.kind == "multiscale":
            return self.encode_scales(codes)
        mean, logvar = codes.chunk(2, dim=1)
        if sample:  # KLTokenizer.encode's draw, of the same shape from the same stream (``shard``)
            noise = shard.randn(*mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            mean = mean + (0.5 * logvar).exp() * noise
        return mean * self.tokenizer.config.scale_factor

    def encode_scales(self, codes_BL: torch.Tensor) -> list[torch.Tensor]:
        scales = self.spec.scales
        return [c.reshape(-1, pn, pn) for c, pn in zip(codes_BL.split([pn * pn for pn in scales], 1), scales)]

    def teacher_forcing_input(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        return self.tokenizer.teacher_forcing_input(idx_list)
