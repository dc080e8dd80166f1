"""Tests for argen.data: digits split, IDX reader, image folders, errors."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from argen.data import DATASETS, ImageDataset, load_dataset
from argen.errors import ArgenError, DataError

# ------------------------------------------------------------------------------------ digits


def test_digits_split_sizes_disjoint_stratified_and_stable():
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    full = load_dataset("digits", "all")
    assert len(train) + len(test) == len(full) == 1797
    assert (len(train), len(test)) == (1442, 355)
    assert train.channels == 1 and train.image_size == (8, 8) and train.num_classes == 10
    assert train.classes == tuple(str(i) for i in range(10))
    assert set(train.labels.tolist()) == set(range(10))
    assert set(test.labels.tolist()) == set(range(10))

    # Disjoint, and together exactly the full set: match rows of (pixels, label).
    def rows(d: ImageDataset) -> list[bytes]:
        flat = torch.cat([d.images.flatten(1), d.labels[:, None].to(torch.uint8)], 1)
        return [r.numpy().tobytes() for r in flat]

    full_rows, train_rows, test_rows = rows(full), rows(train), rows(test)
    assert sorted(train_rows + test_rows) == sorted(full_rows)
    # sklearn's digits contain a few exact duplicates; count multiplicities, not sets.
    from collections import Counter

    assert Counter(train_rows) + Counter(test_rows) == Counter(full_rows)

    # Each class: test is len // 5 of that class.
    full_counts = torch.bincount(full.labels, minlength=10)
    test_counts = torch.bincount(test.labels, minlength=10)
    assert torch.equal(test_counts, full_counts // 5)

    again = load_dataset("digits", "test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)


def test_digits_values_and_batch():
    from sklearn.datasets import load_digits

    d = load_dataset("digits", "all")
    assert d.images.dtype == torch.uint8 and d.labels.dtype == torch.int64
    assert int(d.images.min()) == 0 and int(d.images.max()) == 255
    raw = load_digits()
    expected = np.floor(raw.images * 255 / 16 + 0.5).astype(np.uint8)
    assert np.array_equal(d.images[:, 0].numpy(), expected)
    assert np.array_equal(d.labels.numpy(), raw.target)

    x, y = d.batch(torch.tensor([0, 5, 17]))
    assert x.dtype == torch.float32 and x.shape == (3, 1, 8, 8)
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert torch.allclose(x, d.images[[0, 5, 17]].float() / 127.5 - 1)
    assert y.tolist() == d.labels[[0, 5, 17]].tolist()
    assert float(d.batch([0])[0].min()) == -1.0  # every digit has a 0 pixel


def test_digits_fallback_to_load_digits(monkeypatch):
    """Without the bundled CSV where expected, the loader uses sklearn's load_digits()."""
    import importlib.util

    from argen.data import datasets

    fast = load_dataset("digits", "train")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    datasets._digits_arrays.cache_clear()
    try:
        slow = load_dataset("digits", "train")
    finally:
        datasets._digits_arrays.cache_clear()
    assert torch.equal(fast.images, slow.images) and torch.equal(fast.labels, slow.labels)


def test_digits_resize():
    d = load_dataset("digits", "test", image_size=16)
    assert d.images.shape == (355, 1, 16, 16) and d.images.dtype == torch.uint8
    native = load_dataset("digits", "test", image_size=8)
    assert torch.equal(native.images, load_dataset("digits", "test").images)
    # A bilinear upsample keeps the mean brightness roughly.
    assert abs(d.images.float().mean() - native.images.float().mean()) < 3.0


# ----------------------------------------------------------------------------- fashion-mnist


def _idx_images(images: np.ndarray) -> bytes:
    n, h, w = images.shape
    return struct.pack(">IIII", 2051, n, h, w) + images.astype(np.uint8).tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def _write(path: Path, data: bytes, gz: bool) -> None:
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)


def _fake_fmnist(root: Path, gz: bool, n_train: int = 7, n_test: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    parts = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labs = rng.integers(0, 10, size=n).astype(np.uint8)
        _write(root / f"{prefix}-images-idx3-ubyte", _idx_images(imgs), gz)
        _write(root / f"{prefix}-labels-idx1-ubyte", _idx_labels(labs), gz)
        parts[prefix] = (imgs, labs)
    return parts


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_round_trip(tmp_path, gz):
    parts = _fake_fmnist(tmp_path, gz)
    train = load_dataset("fashion-mnist", "train", path=str(tmp_path))
    test = load_dataset("fashion-mnist", "test", path=tmp_path)
    assert train.images.shape == (7, 1, 28, 28) and test.images.shape == (3, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert np.array_equal(train.images[:, 0].numpy(), parts["train"][0])
    assert np.array_equal(train.labels.numpy(), parts["train"][1].astype(np.int64))
    assert np.array_equal(test.images[:, 0].numpy(), parts["t10k"][0])
    assert np.array_equal(test.labels.numpy(), parts["t10k"][1].astype(np.int64))
    assert train.num_classes == 10 and train.classes[0] == "T-shirt/top"
    assert train.classes[-1] == "Ankle boot"
    both = load_dataset("fashion-mnist", "all", path=tmp_path)
    assert len(both) == 10 and torch.equal(both.images[:7], train.images)


def test_fashion_mnist_resize(tmp_path):
    _fake_fmnist(tmp_path, gz=False)
    d = load_dataset("fashion-mnist", "test", path=tmp_path, image_size=32)
    assert d.images.shape == (3, 1, 32, 32) and d.image_size == (32, 32)
    assert d.images.dtype == torch.uint8


def test_fashion_mnist_missing_dir_mentions_data_path(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", "train", path=tmp_path / "nope")
    msg = str(info.value)
    assert "--data-path" in msg and "dataset-fashion-mnist" in msg and "\n" not in msg
    assert isinstance(info.value, ValueError) and isinstance(info.value, ArgenError)


def test_fashion_mnist_missing_file(tmp_path):
    _fake_fmnist(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    load_dataset("fashion-mnist", "train", path=tmp_path)  # train is still complete
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.*--data-path"):
        load_dataset("fashion-mnist", "test", path=tmp_path)


def test_fashion_mnist_bad_magic_and_truncated(tmp_path):
    _fake_fmnist(tmp_path, gz=False)
    images_file = tmp_path / "train-images-idx3-ubyte"
    good = images_file.read_bytes()
    images_file.write_bytes(struct.pack(">I", 2049) + good[4:])
    with pytest.raises(DataError, match="train-images-idx3-ubyte") as info:
        load_dataset("fashion-mnist", "train", path=tmp_path)
    assert "magic" in str(info.value) and "\n" not in str(info.value)

    images_file.write_bytes(good[:-5])
    with pytest.raises(DataError, match="truncated"):
        load_dataset("fashion-mnist", "train", path=tmp_path)

    images_file.write_bytes(good)
    labels_file = tmp_path / "train-labels-idx1-ubyte"
    labels_file.write_bytes(labels_file.read_bytes()[:6])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte"):
        load_dataset("fashion-mnist", "train", path=tmp_path)


def test_fashion_mnist_corrupt_gzip(tmp_path):
    _fake_fmnist(tmp_path, gz=True)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        load_dataset("fashion-mnist", "test", path=tmp_path)


# ------------------------------------------------------------------------------------ folder


def _make_folder(root: Path, counts: dict[str, int]) -> None:
    rng = np.random.default_rng(0)
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            size = (10 + i, 12) if i % 2 else (12, 12)
            arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            img = Image.fromarray(arr)
            if cls.startswith("b") and i == 0:
                img = img.convert("L")  # grayscale files become RGB too
            img.save(root / cls / f"{i:03d}.png")
    (root / "zz_notes.txt").write_text("not a class")  # plain files in the root are ignored


def test_folder_dataset_classes_sorted_and_resized(tmp_path):
    _make_folder(tmp_path, {"cat": 3, "bird": 2})
    (tmp_path / "cat" / "readme.txt").write_text("skip me")
    d = load_dataset("folder", "all", path=tmp_path, image_size=16)
    assert d.classes == ("bird", "cat")
    assert d.images.shape == (5, 3, 16, 16) and d.images.dtype == torch.uint8
    assert d.labels.tolist() == [0, 0, 1, 1, 1]
    x, _ = d.batch(torch.arange(5))
    assert float(x.min()) >= -1 and float(x.max()) <= 1

    default = load_dataset("folder", "all", path=tmp_path)
    assert default.image_size == (32, 32) and default.channels == 3


def test_folder_split_every_tenth_file(tmp_path):
    _make_folder(tmp_path, {"a": 12, "b": 10})
    train = load_dataset("folder", "train", path=tmp_path, image_size=4)
    test = load_dataset("folder", "test", path=tmp_path, image_size=4)
    assert len(train) == 20 and len(test) == 2
    assert test.labels.tolist() == [0, 1]
    full = load_dataset("folder", "all", path=tmp_path, image_size=4)
    assert torch.equal(test.images[0], full.images[9])  # a/009.png
    assert torch.equal(test.images[1], full.images[12 + 9])  # b/009.png


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="--data-path"):
        load_dataset("folder", "all")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("folder", "all", path=tmp_path / "missing")
    with pytest.raises(DataError, match="sub-folder"):
        load_dataset("folder", "all", path=tmp_path)
    _make_folder(tmp_path, {"a": 2})
    with pytest.raises(DataError, match="no images"):
        load_dataset("folder", "test", path=tmp_path)  # fewer than 10 files: empty test split
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        load_dataset("folder", "all", path=tmp_path)


# ------------------------------------------------------------------------------------ errors


def test_unknown_name_split_and_size():
    with pytest.raises(DataError) as info:
        load_dataset("cifar-1000")
    for name in DATASETS:
        assert name in str(info.value)
    with pytest.raises(DataError, match="train, test, all"):
        load_dataset("digits", "validation")
    with pytest.raises(DataError, match="image size"):
        load_dataset("digits", image_size=0)


def test_image_dataset_validates():
    with pytest.raises(ValueError):
        ImageDataset("x", torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64), ("a",))
    with pytest.raises(ValueError):
        ImageDataset(
            "x",
            torch.zeros(2, 1, 4, 4, dtype=torch.uint8),
            torch.zeros(3, dtype=torch.int64),
            ("a",),
        )


# ----------------------------------------------------------- folder at scale: crop, lazy decoding, flips


def test_center_crop_arr_box_halving_bicubic_and_centre():
    from argen.data.datasets import center_crop_arr

    # 2N x 2N of constant 2x2 blocks: one BOX halving gives the N x N block image exactly (a bicubic
    # shrink straight to N would blur the block edges), and no bicubic step is left (already N x N)
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    big = Image.fromarray(blocks.repeat(2, 0).repeat(2, 1))
    assert np.array_equal(center_crop_arr(big, 16), blocks)
    # a wide image: the short side becomes N, the centre square is kept (red | green | blue thirds)
    wide = np.zeros((20, 60, 3), dtype=np.uint8)
    wide[:, :20, 0] = wide[:, 20:40, 1] = wide[:, 40:, 2] = 255
    out = center_crop_arr(Image.fromarray(wide), 10)
    assert out.shape == (10, 10, 3)
    assert out[:, 2:8, 1].min() == 255 and out[:, 2:8, [0, 2]].max() == 0  # green only, away from the edges
    # small images are enlarged; an image of the target size is kept pixel for pixel
    assert center_crop_arr(Image.fromarray(wide[:5, :7]), 16).shape == (16, 16, 3)
    assert np.array_equal(center_crop_arr(Image.fromarray(blocks), 16), blocks)


def test_folder_decodes_lazily_and_mirrors(tmp_path):
    _make_folder(tmp_path, {"a": 4, "b": 3})
    d = load_dataset("folder", "all", path=tmp_path, image_size=8)
    assert d.augment and len(d) == 7 and not d._cache  # nothing decoded at load time
    x, y = d.batch(torch.tensor([5, 1]))
    assert set(d._cache) == {1, 5} and y.tolist() == [1, 0]
    full = d.images
    assert full.shape == (7, 3, 8, 8) and torch.equal(x, full[[5, 1]].float() / 127.5 - 1)
    xf, _ = d.batch(torch.tensor([5, 1]), flip_B=torch.tensor([True, False]))
    assert torch.equal(xf[0], x[0].flip(-1)) and torch.equal(xf[1], x[1])
    assert not torch.equal(xf[0], x[0])
    small = type(d)(d.files, d.labels, d.classes, 8, cache_mb=0, workers=1)  # a cache of one image
    assert torch.equal(small.images, full) and len(small._cache) == 1
    # an image file whose header reads but whose pixels do not: a one-line DataError when a batch needs it
    data = (tmp_path / "a" / "001.png").read_bytes()
    (tmp_path / "a" / "001.png").write_bytes(data[: len(data) // 2])
    fresh = load_dataset("folder", "all", path=tmp_path, image_size=8)
    with pytest.raises(DataError, match="001.png"):
        fresh.batch(torch.tensor([1]))


def test_flips_are_a_function_of_seed_and_stream_position():
    from argen.data import flips

    a = flips(7, 3, 8)
    assert a.dtype == torch.bool and a.shape == (8,)
    torch.manual_seed(123)
    assert torch.equal(flips(7, 1, 24)[:8], a)  # positions 24..31 however the stream is cut into batches
    assert torch.equal(flips(7, 0, 64)[24:32], a)
    assert torch.equal(torch.cat([flips(7, 6, 4), flips(7, 7, 4)]), a)
    many = flips(7, 0, 20_000)
    assert abs(many.float().mean().item() - 0.5) < 0.02
    assert (many != flips(8, 0, 20_000)).float().mean().item() > 0.4  # another seed, other flips
    assert torch.equal(flips(2**63 - 1, 10**9, 4), flips(2**63 - 1, 10**9, 4))  # large seeds and steps


def test_trainer_draws_flips_for_augmented_data(tmp_path, monkeypatch):
    """The trainer asks an augmented data set for the flips of each global batch's stream positions."""
    import argen.checkpoint as ckpt
    from argen.data import flips
    from argen.training.trainer import TrainConfig, train

    monkeypatch.setattr(ckpt, "save_model", lambda *a, **k: None)  # a bare module has no config to save
    monkeypatch.setattr(ckpt, "save_train_state", lambda *a, **k: None)

    class Recorder:
        name, augment, classes = "rec", True, ("a",)

        def __init__(self):
            self.calls = []

        def __len__(self):
            return 5

        def batch(self, idx, flip_B=None):
            self.calls.append(flip_B)
            return torch.zeros(len(idx), 1), torch.zeros(len(idx), dtype=torch.long)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def loss(self, batch):
            return (self.w * (batch[0] + 1)).pow(2).mean(), {}

    data = Recorder()
    train(Tiny(), data, TrainConfig(steps=3, batch_size=4, warmup=0, seed=11), tmp_path / "run", quiet=True)
    assert len(data.calls) == 3
    for step, got in enumerate(data.calls):
        assert torch.equal(got, flips(11, step, 4))


# --------------------------------------------------------------------------- captioned folders (text-to-image)

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
           "white": (255, 255, 255)}


def _captioned_images(root: Path, n: int, sub: str = "") -> dict[str, str]:
    """``n`` 16 px PNGs of a square (colour and size vary) under ``root/sub``; ``{relative path: caption}``."""
    out = {}
    for i in range(n):
        colour, big = list(COLOURS)[i // 2 % len(COLOURS)], i % 2 == 0
        arr = np.zeros((16, 16, 3), dtype=np.uint8)
        r = 6 if big else 3
        arr[8 - r: 8 + r, 8 - r: 8 + r] = COLOURS[colour]
        rel = f"{sub}/{i:03d}.png" if sub else f"{i:03d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(root / rel)
        out[rel] = f"a {'huge' if big else 'tiny'} {colour} box"
    return out


def _write_sidecars(root: Path, captions: dict[str, str]) -> None:
    for rel, caption in captions.items():
        (root / rel).with_suffix(".txt").write_text(f"  {caption}\n", encoding="utf-8")  # whitespace is stripped


def _write_jsonl(file: Path, captions: dict[str, str]) -> None:
    file.write_text("".join(json.dumps({"file": rel, "caption": c}) + "\n" for rel, c in captions.items()))


def _captions_by_file(d, root: Path) -> dict[str, str]:
    return {f.relative_to(root).as_posix(): c for f, c in zip(d.files, d.captions)}


def test_folder_caption_files_beside_images(tmp_path):
    cats = _captioned_images(tmp_path, 12, "cats")
    dogs = _captioned_images(tmp_path, 3, "dogs")
    _write_sidecars(tmp_path, cats | dogs)
    (tmp_path / "dogs" / "000.txt").write_bytes("\ufeffa huge red box ".encode())  # a BOM (Windows editors)
    (tmp_path / "notes.txt").write_text("a file beside no image is no caption")
    full = load_dataset("folder", "all", path=tmp_path, image_size=8)
    assert full.classes == ("cats", "dogs") and full.labels.tolist() == [0] * 12 + [1] * 3
    assert _captions_by_file(full, tmp_path) == cats | dogs
    assert full.captions_of(torch.tensor([12, 0])) == [dogs["dogs/000.png"], cats["cats/000.png"]]
    assert not full.augment  # a caption may say left or right: no mirrors
    train, test = (load_dataset("folder", s, path=tmp_path, image_size=8) for s in ("train", "test"))
    assert len(train.captions) == 14 and test.captions == (cats["cats/009.png"],)  # each image keeps its caption
    assert _captions_by_file(train, tmp_path) == {k: v for k, v in (cats | dogs).items() if k != "cats/009.png"}


def test_flat_captioned_folder_is_one_class(tmp_path):
    captions = _captioned_images(tmp_path, 4)
    _write_sidecars(tmp_path, captions)
    d = load_dataset("folder", "all", path=tmp_path, image_size=8)
    assert d.classes == (tmp_path.name,) and d.labels.tolist() == [0, 0, 0, 0]
    assert list(d.captions) == list(captions.values()) and d.images.shape == (4, 3, 8, 8)


def test_folder_captions_jsonl(tmp_path):
    cats = _captioned_images(tmp_path, 3, "cats")
    dogs = _captioned_images(tmp_path, 2, "dogs")
    listing = {("./" + k if k.startswith("dogs") else k): v for k, v in (dogs | cats).items()}  # any order, ./ too
    _write_jsonl(tmp_path / "captions.jsonl", listing)
    with open(tmp_path / "captions.jsonl", "a") as fh:
        fh.write("\n")  # blank lines are skipped
    (tmp_path / "cats" / "000.txt").write_text("ignored: captions.jsonl is chosen first")
    d = load_dataset("folder", "all", path=tmp_path, image_size=8)
    assert _captions_by_file(d, tmp_path) == cats | dogs and not d.augment
    flat = tmp_path / "flat"
    flat.mkdir()
    captions = _captioned_images(flat, 3)
    _write_jsonl(flat / "captions.jsonl", captions)
    assert list(load_dataset("folder", "all", path=flat, image_size=8).captions) == list(captions.values())


def test_folder_without_captions_is_unchanged(tmp_path):
    _make_folder(tmp_path, {"a": 2, "b": 1})
    d = load_dataset("folder", "all", path=tmp_path, image_size=8)
    assert d.captions is None and d.augment
    with pytest.raises(DataError, match="no captions"):
        d.captions_of([0])
    flat = tmp_path / "a"  # images but no class folders and no captions: nothing to condition on
    with pytest.raises(DataError, match="no class sub-folders"):
        load_dataset("folder", "all", path=flat)


def _break(root: Path, how: str) -> str:
    """A captioned folder broken in one way; the text its one-line error must hold."""
    captions = _captioned_images(root, 3, "c")
    listing = root / "captions.jsonl"
    if how == "missing-txt":
        _write_sidecars(root, {k: v for k, v in captions.items() if k != "c/001.png"})
        return "001.png has no caption file 001.txt"
    if how == "empty-txt":
        _write_sidecars(root, captions)
        (root / "c" / "002.txt").write_text(" \n")
        return "002.txt is empty"
    if how == "not-utf8":
        _write_sidecars(root, captions)
        (root / "c" / "000.txt").write_bytes(b"a caf\xe9 box")
        return "000.txt is not UTF-8"
    lines = [json.dumps({"file": k, "caption": v}) for k, v in captions.items()]
    if how == "bad-json":
        lines[1] = '{"file": "c/001.png", "caption": '
        message = "captions.jsonl:2: not JSON"
    elif how == "bad-entry":
        lines[2] = json.dumps({"path": "c/002.png", "caption": "x"})
        message = "captions.jsonl:3: want {"
    elif how == "no-such-file":
        lines.append(json.dumps({"file": "c/777.png", "caption": "a box"}))
        message = "captions.jsonl:4: c/777.png does not exist"
    elif how == "not-an-image":
        (root / "c" / "readme.md").write_text("x")
        lines.append(json.dumps({"file": "c/readme.md", "caption": "a box"}))
        message = "captions.jsonl:4: c/readme.md is not an image of this data set"
    elif how == "twice":
        lines.append(lines[0])
        message = "captions.jsonl:4: c/000.png is listed again (first on line 1)"
    elif how == "empty-caption":
        lines[0] = json.dumps({"file": "c/000.png", "caption": "  "})
        message = "captions.jsonl:1: the caption of c/000.png is empty"
    else:  # "unlisted"
        del lines[1]
        message = "001.png has no caption in"
    listing.write_text("\n".join(lines) + "\n")
    return message


@pytest.mark.parametrize("how", ["missing-txt", "empty-txt", "not-utf8", "bad-json", "bad-entry", "no-such-file",
                                 "not-an-image", "twice", "empty-caption", "unlisted"])
def test_folder_caption_errors_are_one_line(tmp_path, how):
    message = _break(tmp_path, how)
    with pytest.raises(DataError) as info:
        load_dataset("folder", "all", path=tmp_path, image_size=8)
    assert message in str(info.value) and len(str(info.value).splitlines()) == 1


def test_text_preset_learns_a_captioned_folders_words(tmp_path):
    """raster-shapes names the shapes words; on a folder its built-in encoder's vocabulary is the folder's words,
    unless --set text=... fixes one."""
    from argen.registry import get_preset
    from argen.training.run import _link_text

    _write_sidecars(tmp_path, _captioned_images(tmp_path, 4))
    d = load_dataset("folder", "all", path=tmp_path, image_size=8)
    config = get_preset("raster-shapes", "generator").make_config()
    assert "huge" not in config.text["vocab"]
    linked, labelled = _link_text(config, d, "folder", own_words=True)
    assert linked.text["vocab"] == ["a", "box", "green", "huge", "red", "tiny"]
    assert labelled.batch([2, 0])[1].tolist() == [2, 0]  # the trainer looks captions up by image index
    with pytest.raises(DataError, match=r"fixed vocab does not hold \(box, huge, tiny\)"):
        _link_text(config, d, "folder")


def test_train_and_sample_on_a_captioned_folder(tmp_path):
    """`argen train generator --preset raster-shapes --data folder` on 10 captioned PNGs, then prompts."""
    from argen.cli import main

    data = tmp_path / "data"
    _write_sidecars(data, _captioned_images(data, 10))
    cpu = ["--threads", "1", "--quiet", "--device", "cpu"]
    folder = ["--data", "folder", "--data-path", str(data), "--image-size", "32"]
    # a tokenizer on the same folder (it ignores captions; 10 images leave one for its test split)
    assert main(["train", "tokenizer", "--preset", "vq-shapes", *folder, "--out", str(tmp_path / "tok"),
                 "--steps", "2", "--batch-size", "8", "--set", "ch=8", "--set", "z_channels=8", "--set", "groups=4",
                 "--set", "codebook_size=16", *cpu]) == 0
    assert main(["train", "generator", "--preset", "raster-shapes", *folder, "--tokenizer", str(tmp_path / "tok"),
                 "--out", str(tmp_path / "gen"), "--steps", "3", "--batch-size", "8", "--set", "depth=1",
                 "--set", "width=32", "--set", "heads=2", *cpu]) == 0
    record = json.loads((tmp_path / "gen" / "config.json").read_text())
    assert record["config"]["text"]["vocab"] == ["a", "blue", "box", "green", "huge", "red", "tiny", "white",
                                                 "yellow"]
    out = tmp_path / "s"
    assert main(["sample", "--checkpoint", str(tmp_path / "gen"), "--prompt", "a huge white box", "--per-prompt",
                 "2", "--out", str(out), *cpu]) == 0
    saved = np.load(str(out) + ".npz")
    assert saved["images"].shape == (2, 32, 32, 3) and saved["prompts"].tolist() == ["a huge white box"]
