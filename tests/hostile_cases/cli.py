"""Hostile inputs: cli (numbers, images, samples files, eval)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from hostile import Case

CPU = ["--threads", "1", "--quiet", "--device", "cpu"]
SAMPLE = ["sample", "--checkpoint", "{gen}", "--labels", "0", "--per-label", "1"]
EDIT = ["edit", "--checkpoint", "{gen}", "--image", "{digit}", "--mask", "{digit}", "--label", "1", "--n", "1"]
TRAIN = ["train", "tokenizer", "--preset", "msvq-digits", "--steps", "1", "--batch-size", "4"]
EVAL_SAMPLES = ["eval", "--data", "digits", "--out", "{tmp}/e", *CPU, "--samples"]
BENCH = ["bench", "--checkpoint", "{gen}", "--batch-sizes", "1", "--repeats", "1"]
NO_SAMPLES = ("{tmp}/s.png", "{tmp}/s.npz")


def _numbers() -> list[Case]:
    return [
        Case("sample-seed-overflow", [*SAMPLE, "--seed", str(2**64), "--out", "{tmp}/s", *CPU],
             words=("--seed", str(2**63 - 1)), absent=NO_SAMPLES),
        Case("sample-seed-negative", [*SAMPLE, "--seed=-1", "--out", "{tmp}/s", *CPU], words=("--seed",),
             absent=NO_SAMPLES),
        Case("edit-seed-overflow", [*EDIT, "--seed", str(2**64), "--out", "{tmp}/s", *CPU], words=("--seed",),
             absent=NO_SAMPLES),
        Case("train-seed-overflow", [*TRAIN, "--seed", str(2**64), "--out", "{tmp}/x", *CPU], words=("--seed",),
             absent=("{tmp}/x",)),
        Case("threads-negative", [*SAMPLE, "--out", "{tmp}/s", "--threads=-1", "--quiet", "--device", "cpu"],
             words=("--threads", r"\[1, \d+\]"), absent=NO_SAMPLES),
        Case("threads-zero", [*SAMPLE, "--out", "{tmp}/s", "--threads", "0", "--quiet", "--device", "cpu"],
             words=("--threads",), absent=NO_SAMPLES),
        Case("threads-huge", [*SAMPLE, "--out", "{tmp}/s", "--threads", "100000", "--quiet", "--device", "cpu"],
             words=("--threads", "100000"), absent=NO_SAMPLES),
        Case("sample-threads-from-omp", [*SAMPLE, "--out", "{tmp}/s", "--quiet", "--device", "cpu"], rc=0,
             env={"OMP_NUM_THREADS": "1"}),
        Case("per-label-huge", ["sample", "--checkpoint", "{gen}", "--per-label", "1000000000", "--out", "{tmp}/s",
                                *CPU], words=("--per-label", "100000"), absent=NO_SAMPLES),
        Case("per-label-times-labels", ["sample", "--checkpoint", "{gen}", "--labels", "0,1,2", "--per-label",
                                        "50000", "--out", "{tmp}/s", *CPU], words=("--per-label", "100000"),
             absent=NO_SAMPLES),
        Case("edit-n-huge", [*EDIT[:-1], "1000000000", "--out", "{tmp}/s", *CPU], words=("--n", "100000"),
             absent=NO_SAMPLES),
        Case("eval-n-one", ["eval", "--checkpoint", "{gen}", "--n", "1", "--out", "{tmp}/e", *CPU],
             words=("--n", "at least"), absent=("{tmp}/e",)),
        Case("eval-n-huge", ["eval", "--checkpoint", "{gen}", "--n", "1000000000", "--out", "{tmp}/e", *CPU],
             words=("--n", "100000"), absent=("{tmp}/e",)),
        Case("bench-batch-huge", [*BENCH[:3], "--batch-sizes", "10000000", *CPU], words=("--batch-sizes", "100000")),
        Case("bench-batch-zero", [*BENCH[:3], "--batch-sizes", "1,0", *CPU], words=("--batch-sizes",)),
        Case("sample-out-root", [*SAMPLE, "--out", "/", *CPU], words=("--out",)),
        Case("sample-out-empty", [*SAMPLE, "--out", "", *CPU], words=("--out",), absent=("{tmp}/.npz", "{tmp}/.png")),
        Case("edit-out-empty", [*EDIT, "--out", "", *CPU], words=("--out",), absent=("{tmp}/.npz", "{tmp}/.png")),
        Case("eval-out-root", [*EVAL_SAMPLES[:3], "--out", "/", *CPU, "--samples", "{s_ok}"], words=("--out",),
             absent=("/metrics.json", "/report.html")),
        Case("eval-out-empty", [*EVAL_SAMPLES[:3], "--out", "", *CPU, "--samples", "{s_ok}"], words=("--out",),
             absent=("{tmp}/metrics.json",)),
        Case("sample-cfg-inf", [*SAMPLE, "--cfg", "inf", "--out", "{tmp}/s", *CPU], words=("--cfg", "finite"),
             absent=NO_SAMPLES),
        Case("sample-cfg-nan", [*SAMPLE, "--cfg", "nan", "--out", "{tmp}/s", *CPU], words=("--cfg", "finite"),
             absent=NO_SAMPLES),
        Case("sample-temperature-inf", [*SAMPLE, "--temperature", "inf", "--out", "{tmp}/s", *CPU],
             words=("--temperature", "finite"), absent=NO_SAMPLES),
        Case("edit-top-p-nan", [*EDIT, "--top-p", "nan", "--out", "{tmp}/s", *CPU], words=("--top-p", "finite"),
             absent=NO_SAMPLES),
        Case("sample-cfg-inf-in-checkpoint", ["sample", "--checkpoint", "{gen_inf}", *SAMPLE[3:], "--out",
                                              "{tmp}/s", *CPU],
             words=("cfg", "finite"), absent=NO_SAMPLES),
        # samplers by name: another family's sampler, a knob the chosen sampler lacks, a bad knob value
        Case("sample-sampler-of-another-family", [*SAMPLE, "--sampler", "sjd", "--out", "{tmp}/s", *CPU],
             words=("--sampler", "sjd", "var"), absent=NO_SAMPLES),
        Case("bench-knob-of-another-sampler", [*BENCH, "--window", "4", *CPU], words=("--window", "does not apply")),
        Case("sample-knob-not-a-bool", [*SAMPLE, "--coupled", "maybe", "--out", "{tmp}/s", *CPU],
             words=("--coupled", "true or false"), absent=NO_SAMPLES),
        Case("sample-knob-not-a-number", [*SAMPLE, "--window", "nan", "--out", "{tmp}/s", *CPU],
             words=("--window", "integer"), absent=NO_SAMPLES),
    ]


def _images() -> list[Case]:
    return [
        Case("edit-image-bomb", [*EDIT[:4], "{bomb}", *EDIT[5:], "--out", "{tmp}/s", *CPU],
             words=("too large", "bomb.png"), absent=NO_SAMPLES),
        Case("edit-mask-bomb", [*EDIT[:6], "{bomb}", *EDIT[7:], "--out", "{tmp}/s", *CPU],
             words=("too large", "bomb.png"), absent=NO_SAMPLES),
        Case("train-folder-data-bomb", [*TRAIN, "--data", "folder", "--data-path", "{bombdata}", "--out", "{tmp}/x",
                                        *CPU], words=("folder", "too large"), absent=("{tmp}/x",)),
    ]


def _samples_files() -> list[Case]:
    return [
        Case("eval-samples-label-99", [*EVAL_SAMPLES, "{s_label99}"], words=("label", "99", "0..9"),
             absent=("{tmp}/e",)),
        Case("eval-samples-label-negative", [*EVAL_SAMPLES, "{s_label_neg}"], words=("label", "-1"),
             absent=("{tmp}/e",)),
        Case("eval-samples-label-count", [*EVAL_SAMPLES, "{s_count}"], words=("labels", "8 images"),
             absent=("{tmp}/e",)),
        Case("eval-samples-float-labels", [*EVAL_SAMPLES, "{s_float}"], words=("labels", "integer"),
             absent=("{tmp}/e",)),
        Case("eval-samples-one-image", [*EVAL_SAMPLES, "{s_one}"], words=("--samples", "1 images", "at least"),
             absent=("{tmp}/e",)),
        Case("eval-samples-no-images", [*EVAL_SAMPLES, "{s_none}"], words=("--samples", "0 images"),
             absent=("{tmp}/e",)),
        Case("eval-inception-missing", ["eval", "--checkpoint", "{gen}", "--n", "6", "--inception-weights",
                                        "{tmp}/nope.pth", "--out", "{tmp}/e", *CPU],
             words=("--inception-weights",), absent=("{tmp}/e",)),
        Case("eval-inception-garbage", ["eval", "--checkpoint", "{gen}", "--n", "6", "--inception-weights",
                                        "{garbage}", "--out", "{tmp}/e", *CPU],
             words=("--inception-weights",), absent=("{tmp}/e",)),
        Case("eval-samples-inception-garbage", [*EVAL_SAMPLES[:-1], "--inception-weights", "{garbage}",
                                                "--samples", "{s_ok}"], words=("--inception-weights",),
             absent=("{tmp}/e",)),
    ]


def _pairs() -> list[Case]:
    return [
        Case("sample-png-is-a-folder", [*SAMPLE, "--out", "{pair}/x", *CPU], words=("x.png", "folder"),
             unchanged=("{pair}",)),
        Case("sample-disk-full", [*SAMPLE, "--out", "{full}/s", *CPU], words=("cannot write",),
             unchanged=("{full}",), max_file_bytes=300),
        Case("edit-disk-full", [*EDIT, "--out", "{full}/e", *CPU], words=("cannot write",),
             unchanged=("{full}",), max_file_bytes=300),
        Case("sample-beside-stale-temp", [*SAMPLE, "--out", "{stale}/s", *CPU], rc=0),
    ]


def _smaller() -> list[Case]:
    return [
        Case("edit-label-negative", [*EDIT[:8], "-3", *EDIT[9:], "--out", "{tmp}/s", *CPU],
             words=(r"--label(?!s)\b", "-3"), absent=NO_SAMPLES),
        Case("bench-out-folder", [*BENCH, "--out", "{tmp}", *CPU], words=("--out", "folder")),
        Case("bench-out-unwritable", [*BENCH, "--out", "{tmp}/missing/rows.json", *CPU], words=("--out",),
             absent=("{tmp}/missing",)),
        Case("sample-model-is-a-path", [*SAMPLE[:1], "--model", "{gen}", *SAMPLE[3:], "--out", "{tmp}/s", *CPU],
             words=("--model", "unknown"), absent=NO_SAMPLES),
        Case("sample-model-relative-path", [*SAMPLE[:1], "--model", "../../../argen", *SAMPLE[3:], "--out",
                                            "{tmp}/s", *CPU], words=("--model", "unknown"), absent=NO_SAMPLES),
    ]


CASES: list[Case] = [
    Case("sample-label-out-of-range", ["sample", "--checkpoint", "{gen}", "--labels", "99", "--out", "{tmp}/s", *CPU],
         words=("--labels", "99"), unchanged=("{gen}",), absent=("{tmp}/s.png", "{tmp}/s.npz")),
    *_numbers(), *_images(), *_samples_files(), *_pairs(), *_smaller(),
    # eval's metrics.json, report.html and samples.npz are written as a unit: a full disk leaves none of them
    Case("eval-disk-full", ["eval", "--model", "digits-var", "--n", "6", "--out", "{tmp}/ev", *CPU],
         words=("cannot write",), absent=("{tmp}/ev/metrics.json", "{tmp}/ev/report.html", "{tmp}/ev/samples.npz"),
         max_file_bytes=300),
]


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` 1-bit pixels: a decompression bomb's header, a few bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100))
            + chunk(b"IEND", b""))


def setup(ws: dict[str, Path]) -> None:
    """Add the files these cases need to the workspace."""
    import json
    import shutil

    from PIL import Image

    root = ws["root"] / "cli"
    root.mkdir()
    ws["digit"] = root / "digit.png"
    Image.new("L", (8, 8), 128).save(ws["digit"])
    ws["bomb"] = root / "bomb.png"
    ws["bomb"].write_bytes(_png_header(20000, 20000))
    ws["bombdata"] = root / "bombdata"
    for cls in ("a", "b"):
        (ws["bombdata"] / cls).mkdir(parents=True)
        Image.new("L", (8, 8), 0).save(ws["bombdata"] / cls / "0.png")
    shutil.copy(ws["bomb"], ws["bombdata"] / "a" / "1.png")
    shutil.copy(ws["bomb"], ws["bombdata"] / "a" / "00.png")  # sorted first: read before any other

    rng = np.random.default_rng(0)

    def samples(name: str, n: int, labels) -> None:
        ws[name] = root / f"{name}.npz"
        kw = {} if labels is None else {"labels": np.asarray(labels)}
        np.savez(ws[name], images=rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8), **kw)

    samples("s_ok", 8, np.arange(8) % 10)
    samples("s_label99", 8, [0, 1, 2, 3, 4, 5, 6, 99])
    samples("s_label_neg", 8, [0, 1, 2, 3, 4, 5, 6, -1])
    samples("s_count", 8, np.arange(7))
    samples("s_float", 8, np.arange(8) + 0.5)
    samples("s_one", 1, [0])
    samples("s_none", 0, np.zeros(0, dtype=np.int64))
    ws["garbage"] = root / "garbage.pth"
    ws["garbage"].write_bytes(b"not a torch file at all\x00" * 10)

    ws["pair"] = root / "pair"
    (ws["pair"] / "x.png").mkdir(parents=True)
    (ws["pair"] / "x.npz").write_bytes(b"the old samples: must survive")
    ws["full"] = root / "full"
    ws["full"].mkdir()
    ws["stale"] = root / "stale"
    (ws["stale"] / ".s.tmp.npz").mkdir(parents=True)  # the old fixed temp names, taken by someone else
    (ws["stale"] / ".s.png.tmp").mkdir()

    # a checkpoint whose saved sampler settings hold an infinite guidance weight
    ws["gen_inf"] = root / "gen_inf"
    shutil.copytree(ws["gen"], ws["gen_inf"])
    cfg = json.loads((ws["gen_inf"] / "config.json").read_text())
    cfg.setdefault("meta", {}).setdefault("sampler", {})["cfg"] = 1e999  # json writes Infinity
    (ws["gen_inf"] / "config.json").write_text(json.dumps(cfg))
