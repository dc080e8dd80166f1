"""Pre-tokenized data (argen.data.codes, `argen encode`, `argen train generator --codes`) and the official
presets on a 256 px class folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_kl, tiny_msvq, tiny_vq
from PIL import Image

import argen
import argen.checkpoint as ckpt
from argen.cli import main
from argen.data import flips, load_dataset
from argen.data.codes import INDEX, CodesTokenizer, encode_codes, open_codes
from argen.errors import DataError
from argen.training.run import train_preset

CPU = ["--threads", "1", "--quiet", "--device", "cpu"]
TOKENIZERS = {"msvq": tiny_msvq, "vq": tiny_vq, "kl": tiny_kl}


def _folder(root: Path, classes: int = 2, per_class: int = 6, sizes=((8, 8), (12, 9), (7, 16))) -> Path:
    """A class folder of random RGB PNGs of several sizes and aspect ratios (all in the train split)."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            w, h = sizes[i % len(sizes)]
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"c{c}" / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("codes")
    out = {"root": root, "data": _folder(root / "data")}
    for name, make in TOKENIZERS.items():
        tok = make(image_channels=3)
        ckpt.save_model(root / name, tok)
        out[name] = root / name
    return out


def _encode(ws, name: str, out: Path, **kw) -> dict:
    return encode_codes(ws[name], "folder", out, data_path=str(ws["data"]), quiet=True, **kw)


# ---- the codes folder ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(TOKENIZERS))
def test_encode_stores_codes_of_images_and_mirror_images(ws, name, tmp_path):
    index = _encode(ws, name, tmp_path / "codes", batch_size=5, shard_size=4)
    assert [s["count"] for s in index["shards"]] == [4, 4, 4]  # 12 images, 4 per shard
    assert index["count"] == 12 and index["image_size"] == 8 and index["classes"] == ["c0", "c1"]
    assert index["augment"] is True and index["split"] == "train"
    assert json.loads((tmp_path / "codes" / INDEX).read_text()) == index
    assert (tmp_path / "codes" / "tokenizer" / "model.safetensors").read_bytes() == \
        (ws[name] / "model.safetensors").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left

    tok, _ = argen.models.load_checkpoint(ws[name])
    images = load_dataset("folder", "train", ws["data"], 8)
    codes = open_codes(tmp_path / "codes")
    idx, flip = torch.tensor([11, 0, 5, 4, 7]), torch.tensor([True, False, True, False, False])
    x, labels = images.batch(idx, flip_B=flip)
    c, c_labels = codes.batch(idx, flip_B=flip)
    assert torch.equal(labels, c_labels) and len(codes) == 12
    stored = CodesTokenizer(tok)
    if name == "kl":  # the posterior's moments: the mean (no draw) equals encoding the images
        assert torch.allclose(stored.encode(c), tok.encode(x), atol=1e-5)
        torch.manual_seed(1)
        drawn = stored.encode(c, sample=True)
        torch.manual_seed(1)
        assert torch.allclose(drawn, tok.encode(x, sample=True), atol=1e-5)  # same draw, same stream
    elif name == "msvq":
        assert all(torch.equal(a, b) for a, b in zip(stored.encode_scales(c), tok.encode_scales(x)))
    else:
        assert torch.equal(stored.encode(c), tok.encode(x))
    plain, _ = codes.batch(idx)
    assert not torch.equal(plain, c)  # the mirror images' codes are other codes


def test_encode_is_atomic_and_refuses_to_replace_other_folders(ws, tmp_path, monkeypatch):
    import argen.data.codes as codes_mod

    out = tmp_path / "codes"
    real = codes_mod._write_shard

    def crash_on_second(folder, index, *a):
        if index["shards"]:
            raise OSError("disk full")
        return real(folder, index, *a)

    monkeypatch.setattr(codes_mod, "_write_shard", crash_on_second)
    with pytest.raises(OSError):
        _encode(ws, "vq", out, shard_size=4)
    assert list(tmp_path.iterdir()) == []  # neither a half-written CODES nor its temporary folder
    monkeypatch.setattr(codes_mod, "_write_shard", real)

    first = _encode(ws, "vq", out, shard_size=4)
    with pytest.raises(DataError, match="--overwrite"):
        _encode(ws, "vq", out)
    assert json.loads((out / INDEX).read_text()) == first
    again = _encode(ws, "vq", out, overwrite=True)  # 64 per shard now: one shard
    assert len(again["shards"]) == 1 and not (out / "shard-00001.safetensors").exists()
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not a codes folder"):
        _encode(ws, "vq", other, overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"


def test_codes_keep_the_captions_of_a_captioned_data_set(ws, tmp_path, monkeypatch):
    from argen.data import datasets

    _encode(ws, "vq", tmp_path / "plain")
    with pytest.raises(DataError, match="no captions"):
        open_codes(tmp_path / "plain").captions_of([0])
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    small = datasets.ImageDataset("shapes", images, torch.tensor([0, 1, 0]), ("x", "y"),
                                  captions=["a red circle", "two squares", "a blue circle"])
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: small)
    index = encode_codes(ws["vq"], "shapes", tmp_path / "codes", quiet=True)
    assert index["augment"] is False and index["captions"] == list(small.captions)
    codes = open_codes(tmp_path / "codes")
    assert codes.captions_of([2, 0]) == ["a blue circle", "a red circle"]


def test_open_codes_refuses_incomplete_folders(ws, tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        open_codes(tmp_path / "missing")
    out = tmp_path / "codes"
    _encode(ws, "vq", out, shard_size=8)
    (out / "shard-00001.safetensors").write_bytes((out / "shard-00001.safetensors").read_bytes()[:100])
    with pytest.raises(DataError, match="shard-00001"):
        open_codes(out)
    (out / INDEX).unlink()
    with pytest.raises(DataError, match="argen encode"):
        open_codes(out)


# ---- training from codes equals training from images ---------------------------------------------------

SMALL = {"var-digits": {"depth": 1, "width": 32, "heads": 2},
         "raster-digits": {"depth": 1, "width": 32, "heads": 2},
         "mar-digits": {"depth": 1, "width": 32, "heads": 2, "head_width": 32, "head_depth": 1}}
TRAIN = {"steps": 3, "batch_size": 8, "warmup": 0, "seed": 3, "lr": 1e-2}


def _train(ws, preset: str, out: Path, **kw) -> dict[str, torch.Tensor]:
    train_preset("generator", preset, out, train_overrides=TRAIN, model_overrides=SMALL[preset], device="cpu",
                 quiet=True, **kw)
    return ckpt.load_tensors(out / "model.safetensors")


@pytest.mark.parametrize("preset,tok,tol", [("var-digits", "msvq", 1e-6), ("raster-digits", "vq", 1e-6),
                                            ("mar-digits", "kl", 1e-6)])
def test_training_from_codes_equals_training_from_images(ws, tmp_path, preset, tok, tol, one_thread):
    """Label dropout, dropout, masks and MAR's posterior draws are on; the flips pick mirror images' codes.
    Discrete codes: the same weights (within float summation noise); MAR: its tokens come from stored
    moments, so the encoder's float rounding on other batches is all that differs."""
    from_images = _train(ws, preset, tmp_path / "img", data="folder", data_path=str(ws["data"]),
                         tokenizer_dir=ws[tok])
    _encode(ws, tok, tmp_path / "codes", batch_size=5)
    from_codes = _train(ws, preset, tmp_path / "codes_run", codes=tmp_path / "codes")
    diff = max(float((from_images[k] - from_codes[k]).abs().max()) for k in from_images)
    assert diff <= tol, f"{preset}: max abs weight difference {diff}"
    assert any(flips(TRAIN["seed"], s, TRAIN["batch_size"]).any() for s in range(TRAIN["steps"]))
    # the run records its codes and carries the codes' tokenizer, as a run from images carries its own
    record = ckpt.read_record(tmp_path / "codes_run")
    assert record.meta["codes"] == str(tmp_path / "codes") and record.meta["data"] == "folder"
    assert (tmp_path / "codes_run" / "tokenizer" / "model.safetensors").read_bytes() == \
        (ws[tok] / "model.safetensors").read_bytes()
    # without mirror images the codes would not match: the flips are really used
    no_flip = tmp_path / "codes_noflip"
    _encode(ws, tok, no_flip)
    index = json.loads((no_flip / INDEX).read_text())
    ckpt.write_json(no_flip / INDEX, {**index, "augment": False})
    plain = _train(ws, preset, tmp_path / "plain_run", codes=no_flip)
    assert max(float((from_images[k] - plain[k]).abs().max()) for k in from_images) > 100 * tol


# ---- the command line ----------------------------------------------------------------------------------

def test_cli_encode_then_train_from_codes(ws, tmp_path):
    codes = tmp_path / "codes"
    assert main(["encode", "--tokenizer", str(ws["msvq"]), "--data", "folder", "--data-path", str(ws["data"]),
                 "--out", str(codes), "--shard-size", "5", *CPU]) == 0
    assert len(open_codes(codes).index["shards"]) == 3
    assert main(["train", "generator", "--preset", "var-digits", "--codes", str(codes), "--tokenizer",
                 str(ws["msvq"]), "--steps", "2", "--batch-size", "4", "--out", str(tmp_path / "gen"),
                 "--set", "depth=1", "--set", "width=32", "--set", "heads=2", *CPU]) == 0
    assert ckpt.read_record(tmp_path / "gen").meta["codes"] == str(codes)


def test_cli_codes_errors_are_one_line(ws, tmp_path, capsys):
    codes = tmp_path / "codes"
    _encode(ws, "msvq", codes)
    other = tmp_path / "other_tok"
    ckpt.save_model(other, tiny_msvq(seed=1, image_channels=3))
    wider = tmp_path / "wider_tok"
    ckpt.save_model(wider, tiny_msvq(image_channels=3, codebook_size=32))
    gen = ["train", "generator", "--preset", "var-digits", "--steps", "1", "--out", str(tmp_path / "g"), *CPU]
    cases = {
        "tokenizer-mismatch": ([*gen, "--codes", str(codes), "--tokenizer", str(other)], ("--tokenizer", "weights")),
        "tokenizer-other-config": ([*gen, "--codes", str(codes), "--tokenizer", str(wider)],
                                   ("--tokenizer", "codebook_size=32", "codebook_size=16")),
        "tokenizer-other-class": ([*gen, "--codes", str(codes), "--tokenizer", str(ws["vq"])],
                                  ("--tokenizer", "VQTokenizer", "MultiScaleVQ")),
        "no-tokenizer-no-codes": (gen, ("--tokenizer", "--codes")),
        "codes-and-data": ([*gen, "--codes", str(codes), "--data", "digits"], ("--codes", "--data")),
        "codes-missing": ([*gen, "--codes", str(tmp_path / "nope")], ("--codes",)),
        "encode-size-mismatch": (["encode", "--tokenizer", str(ws["msvq"]), "--data", "folder", "--data-path",
                                  str(ws["data"]), "--image-size", "16", "--out", str(tmp_path / "c2"), *CPU],
                                 ("16x16", "tokenizer")),
        "encode-scenes-not-shapes": (["encode", "--tokenizer", str(ws["msvq"]), "--data", "digits", "--scenes", "9",
                                      "--out", str(tmp_path / "c4"), *CPU], ("--scenes", "shapes", "digits")),
        "encode-bad-scenes": (["encode", "--tokenizer", str(ws["msvq"]), "--data", "shapes", "--scenes", "0",
                               "--out", str(tmp_path / "c5")], ("--scenes",)),
        "codes-and-scenes": ([*gen, "--codes", str(codes), "--scenes", "9"], ("--codes", "--scenes")),
        "encode-bad-image-size": (["encode", "--tokenizer", str(ws["msvq"]), "--data", "digits", "--image-size",
                                   "0", "--out", str(tmp_path / "c3")], ("--image-size",)),
    }
    for name, (argv, words) in cases.items():  # in process: any other exception fails the test
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own errors
            code = e.code
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(lines) == 1, f"{name}: exit code {code}, stderr {lines}"
        assert all(w in lines[0] for w in words), f"{name}: {lines[0]!r}"
    assert not any((tmp_path / d).exists() for d in ("g", "c2", "c4", "c5"))


# ---- the official presets on a class folder at 256 px -------------------------------------------------

OFFICIAL = {  # preset: (tokenizer preset and its reduced widths, the generator's reduced size)
    "var-d16": (("var-vqvae", {"ch": 8, "groups": 4, "codebook_size": 64}), ["depth=2", "width=64", "heads=2"]),
    "llamagen-gpt-b": (("llamagen-vq16", {"ch": 8, "groups": 4, "z_channels": 8}),
                       ["depth=2", "width=32", "heads=2", "multiple_of=16"]),
    "mar-b": (("mar-kl16", {"ch": 8, "groups": 4}),
              ["depth=1", "width=32", "heads=2", "dec_width=32", "dec_heads=2", "head_width=32", "buffer_size=4"]),
}


@pytest.mark.parametrize("preset", list(OFFICIAL))
def test_official_preset_trains_on_a_256px_class_folder(preset, tmp_path):
    """`argen train generator --preset P --data folder --data-path DIR --image-size 256 --tokenizer TOK` on eight
    PNGs of assorted sizes (one above 2 x 256: BOX halving), with a random-weight tokenizer of the official
    layout at 256 px (reduced widths) and the generator at reduced depth and width."""
    (tok_preset, tok_fields), sets = OFFICIAL[preset]
    tok = tmp_path / "tok"
    ckpt.save_model(tok, argen.build(tok_preset, **tok_fields), preset=tok_preset)
    data = _folder(tmp_path / "data", classes=2, per_class=4, sizes=((300, 260), (600, 540), (256, 256), (200, 310)))
    out = tmp_path / "gen"
    argv = ["train", "generator", "--preset", preset, "--data", "folder", "--data-path", str(data), "--image-size",
            "256", "--tokenizer", str(tok), "--steps", "2", "--batch-size", "2", "--out", str(out), *CPU]
    assert main([*argv, *[x for s in sets for x in ("--set", s)]]) == 0
    record = ckpt.read_record(out)
    assert record.preset == preset and record.meta["image_size"] == 256 and record.meta["step"] == 2
    assert record.config["num_classes"] == 2
    assert len(ckpt.read_log(out / "log.jsonl")) >= 1
