"""Hostile inputs: training (non-finite training, existing work, torn logs, symlinks, a full disk,
data and tokenizer that do not fit, resume of another run). The concurrent-training lock needs two
processes at once: tests/test_trainer.py holds it."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
from hostile import Case

CPU = ["--threads", "1", "--quiet", "--device", "cpu"]
TINY_TOK = ["--set", "ch=8", "--set", "z_channels=4", "--set", "codebook_size=16"]
TINY_GEN = ["--set", "depth=1", "--set", "width=32", "--set", "heads=2"]
TOK = ["train", "tokenizer", "--preset", "msvq-digits", "--batch-size", "8", *TINY_TOK, *CPU]
GEN = ["train", "generator", "--preset", "var-digits", "--batch-size", "8", *TINY_GEN, *CPU]
RUN = ("config.json", "model.safetensors", "train_state.safetensors")  # what a refused resume must leave alone


def _kept(folder: str) -> tuple[str, ...]:
    return tuple(f"{folder}/{name}" for name in RUN)


CASES: list[Case] = [
    # 1. non-finite training: refused up front, or stopped at the first bad step with nothing saved
    Case("train-lr-huge-diverges", [*TOK, "--steps", "20", "--lr", "1e9", "--out", "{tmp}/t"],
         words=("diverged", "step"), absent=("{tmp}/t/model.safetensors", "{tmp}/t/metrics.json")),
    Case("train-lr-inf", [*TOK, "--steps", "2", "--lr", "inf", "--out", "{tmp}/t"],
         words=("lr", "finite"), absent=("{tmp}/t",)),
    Case("train-ema-nan", [*TOK, "--steps", "2", "--ema", "nan", "--out", "{tmp}/t"],
         words=("ema",), absent=("{tmp}/t",)),
    Case("train-norm-eps-negative", [*GEN, "--preset", "raster-digits", "--steps", "3", "--tokenizer", "{tok}",
                                      "--set", "norm_eps=-1", "--out", "{tmp}/g"],
         words=("norm_eps",), absent=("{tmp}/g",), unchanged=("{tok}",)),
    Case("resume-lr-huge-keeps-checkpoint", [*TOK, "--steps", "20", "--lr", "1e9", "--resume", "--out", "{tok_poison}"],
         words=("diverged",), unchanged=_kept("{tok_poison}")),
    # 2. existing work
    Case("train-into-existing-run", [*TOK, "--steps", "2", "--out", "{tok}"],
         words=("--out", "--resume", "--overwrite"), unchanged=("{tok}",)),
    Case("train-generator-into-existing-run", [*GEN, "--steps", "2", "--tokenizer", "{tok}", "--out", "{gen}"],
         words=("--out", "--overwrite"), unchanged=("{gen}", "{tok}")),
    Case("train-overwrite-replaces-run", [*TOK, "--steps", "2", "--overwrite", "--out", "{tok_over}"], rc=0),
    Case("train-resume-and-overwrite", [*TOK, "--steps", "6", "--resume", "--overwrite", "--out", "{tok}"],
         words=("--resume", "--overwrite"), unchanged=("{tok}",)),
    Case("train-out-is-tokenizer", [*GEN, "--steps", "2", "--tokenizer", "{tok}", "--out", "{tok}"],
         words=("--out", "--tokenizer"), unchanged=("{tok}",)),
    Case("train-out-inside-tokenizer", [*GEN, "--steps", "2", "--tokenizer", "{tok}", "--out", "{tok}/g"],
         words=("--out", "--tokenizer"), unchanged=("{tok}",)),
    # 3. a torn last log line is dropped (with a warning) and the run goes on
    Case("resume-torn-log-line", [*TOK, "--steps", "5", "--resume", "--out", "{tok_torn}"], rc=0),
    Case("eval-torn-log-line", ["eval", "--checkpoint", "{gen_torn}", "--n", "10", "--out", "{tmp}/e", *CPU], rc=0),
    # 4. no write through a symlink that leads out of --out
    Case("resume-symlinked-log", [*GEN, "--steps", "6", "--resume", "--tokenizer", "{tok}", "--out", "{gen_symlog}"],
         words=("log.jsonl", "symlink"), unchanged=("{outside_log}", "{gen_symlog}")),
    Case("resume-symlinked-tokenizer-dir",
         [*GEN, "--steps", "6", "--resume", "--tokenizer", "{tok}", "--out", "{gen_symtok}"],
         words=("tokenizer", "symlink"), unchanged=("{outside_tok}", "{gen_symtok}")),
    # 5. a full disk during a save: one line, the previous files intact
    Case("train-full-disk", [*TOK, "--steps", "1", "--out", "{tmp}/t"], max_file_bytes=3000,
         words=("cannot write",), absent=("{tmp}/t/model.safetensors", "{tmp}/t/config.json")),
    Case("resume-full-disk", [*TOK, "--steps", "6", "--resume", "--out", "{tok_full}"], max_file_bytes=3000,
         words=("cannot write",), unchanged=_kept("{tok_full}")),
    # 6. data, tokenizer and resumed run must fit before training starts
    Case("generator-fmnist-on-digits-tokenizer",
         [*GEN, "--preset", "var-fmnist", "--steps", "1", "--tokenizer", "{tok}", "--data-path", "{fmnist}",
          "--out", "{tmp}/g"], words=("fashion-mnist", "28x28", "tokenizer"), absent=("{tmp}/g",)),
    Case("generator-rgb-folder-on-gray-tokenizer",
         [*GEN, "--steps", "1", "--tokenizer", "{tok}", "--data", "folder", "--data-path", "{rgb_folder}",
          "--out", "{tmp}/g"], words=("folder", "3 channel", "tokenizer"), absent=("{tmp}/g",)),
    Case("resume-other-preset", ["train", "tokenizer", "--preset", "vq-digits", "--steps", "6", "--batch-size", "8",
                                 "--resume", "--out", "{tok}", *TINY_TOK, *CPU],
         words=("--resume", "MSVQ|VQ"), unchanged=("{tok}",)),
    Case("resume-other-codebook-size", [*TOK, "--steps", "6", "--set", "codebook_size=32", "--resume", "--out", "{tok}"],
         words=("--resume", "codebook_size"), unchanged=("{tok}",)),
    Case("resume-foreign-train-state", [*TOK, "--steps", "6", "--resume", "--out", "{tok_foreign}"],
         words=("--resume", "training state"), unchanged=("{tok_foreign}",)),
    # 7. small or broken data fail before training
    Case("train-folder-without-test-split",
         [*TOK, "--steps", "1", "--data", "folder", "--data-path", "{small_folder}", "--out", "{tmp}/t"],
         words=("folder", "test"), absent=("{tmp}/t",)),
    Case("train-truncated-fmnist-test-file",
         [*TOK, "--preset", "msvq-fmnist", "--steps", "1", "--data", "fashion-mnist", "--data-path", "{fmnist_trunc}",
          "--out", "{tmp}/t"], words=("t10k", "truncated"), absent=("{tmp}/t",)),
]


def _idx(folder: Path, prefix: str, n: int, truncate: bool = False) -> None:
    rng = np.random.default_rng(0)
    images = struct.pack(">IIII", 2051, n, 28, 28) + rng.integers(0, 256, (n, 28, 28), dtype=np.uint8).tobytes()
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(images[: len(images) // 2] if truncate else images)
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + bytes(i % 10 for i in range(n)))


def _image_folder(folder: Path, classes: int, per_class: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (folder / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"c{c}" / f"{i}.png")


def setup(ws: dict[str, Path]) -> None:
    """Copies of the trained checkpoints to damage, and small data folders."""
    root = ws["root"]
    for name, src in (("tok_poison", "tok"), ("tok_over", "tok"), ("tok_torn", "tok"), ("tok_full", "tok"),
                      ("tok_foreign", "tok"), ("gen_torn", "gen"), ("gen_symlog", "gen"), ("gen_symtok", "gen"),
                      ("outside_tok", "tok")):
        ws[name] = root / name
        shutil.copytree(ws[src], ws[name], symlinks=True)
    for name in ("tok_torn", "gen_torn"):
        with open(ws[name] / "log.jsonl", "a") as f:
            f.write('{"step": 5, "lo')  # a run killed mid-append
    ws["outside_log"] = root / "outside_log.jsonl"
    shutil.copyfile(ws["gen"] / "log.jsonl", ws["outside_log"])
    (ws["gen_symlog"] / "log.jsonl").unlink()
    (ws["gen_symlog"] / "log.jsonl").symlink_to(ws["outside_log"])
    shutil.rmtree(ws["gen_symtok"] / "tokenizer")
    (ws["gen_symtok"] / "tokenizer").symlink_to(ws["outside_tok"])
    shutil.copyfile(ws["gen"] / "train_state.safetensors", ws["tok_foreign"] / "train_state.safetensors")
    ws["fmnist"], ws["fmnist_trunc"] = root / "fmnist", root / "fmnist_trunc"
    for name, truncate in (("fmnist", False), ("fmnist_trunc", True)):
        ws[name].mkdir()
        _idx(ws[name], "train", 20)
        _idx(ws[name], "t10k", 10, truncate=truncate)
    ws["rgb_folder"], ws["small_folder"] = root / "rgb_folder", root / "small_folder"
    _image_folder(ws["rgb_folder"], classes=2, per_class=10)
    _image_folder(ws["small_folder"], classes=2, per_class=5)
