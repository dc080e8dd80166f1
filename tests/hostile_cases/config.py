"""Hostile inputs: config.json and weights of a checkpoint, and the files `argen convert` reads and writes.

``setup`` makes doctored copies of the trained ``{gen}``: one per variant, named ``gen_<variant>``; each
is tried with ``argen sample`` (which loads the weights) and ``argen info`` (which checks them on meta)."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
from pathlib import Path

import torch
from hostile import Case
from safetensors.torch import load_file, save_file

CPU = ["--threads", "1", "--quiet", "--device", "cpu"]


def _sample(name: str) -> list[str]:
    return ["sample", "--checkpoint", "{" + name + "}", "--labels", "0", "--out", "{tmp}/s", *CPU]


# variant -> (what config.json's "config" gets, the words the error must contain)
CONFIG_VARIANTS = {
    "nan_ratio": ({"mlp_ratio": float("nan")}, ("mlp_ratio", "finite")),
    "inf_ratio": ({"mlp_ratio": float("inf")}, ("mlp_ratio", "finite")),
    "neg_ratio": ({"mlp_ratio": -4.0}, ("mlp_ratio", "> 0")),
    "dropout2": ({"dropout": 2.0}, ("dropout", r"\[0, 1\)")),
    "huge_width": ({"width": 10**9, "heads": 2}, ("width", "at most")),
    "huge_vocab": ({"vocab_size": 10**12}, ("vocab_size", "at most")),
    "huge_classes": ({"num_classes": 10**9}, ("num_classes", "at most")),
    "deep": ({"depth": 10**6}, ("depth", "at most 1,024")),
    "too_many_params": ({"width": 65536, "heads": 2, "depth": 64}, ("parameters", "at most")),
    "int64_overflow": ({"depth": 10**30}, ("depth", "integer")),
    "huge_scales": ({"scales": [1, 2, 10**7]}, ("too large to build",)),  # a 10^14-token sequence
    "no_depth": ({"depth": None}, ("missing", "depth")),  # None: the field is removed
    "classes_mismatch": ({"num_classes": 11}, ("size mismatch", "class_emb")),
}


def _rewrite(path: Path, text: str) -> None:
    (path / "config.json").write_text(text)


def setup(ws: dict[str, Path]) -> None:
    """Add the files these cases need to the workspace."""
    root, gen = ws["root"] / "config_cases", ws["gen"]
    root.mkdir()
    record = json.loads((gen / "config.json").read_text())

    def copy(variant: str) -> Path:
        ws[f"gen_{variant}"] = dst = root / variant
        shutil.copytree(gen, dst, ignore=shutil.ignore_patterns("train_state.safetensors", "*.log", "*.jsonl"))
        return dst

    for variant, (change, _) in CONFIG_VARIANTS.items():
        config = {k: v for k, v in {**record["config"], **change}.items() if v is not None}
        _rewrite(copy(variant), json.dumps({**record, "config": config}))  # NaN / Infinity as Python writes them
    _rewrite(copy("meta_str"), json.dumps({**record, "meta": "hello"}))
    _rewrite(copy("nested"), '{"class": "VAR", "config": {}, "meta": ' + "[" * 200_000 + "]" * 200_000 + "}")
    text = json.dumps({**record, "config": {**record["config"], "depth": 1}})
    _rewrite(copy("bigint"), text.replace('"depth": 1', '"depth": ' + "9" * 5000))
    big = copy("big_file")
    _rewrite(big, json.dumps({**record, "meta": {"pad": "x" * (17 * 2**20)}}))

    weights = load_file(str(gen / "model.safetensors"))
    first = next(k for k, v in weights.items() if v.is_floating_point())
    nan = {**weights, first: weights[first].clone().fill_(float("nan"))}
    save_file(nan, str(copy("nan_weights") / "model.safetensors"))
    ws["nan_weights_key"] = first
    as_int = {**weights, first: weights[first].to(torch.int32)}
    save_file(as_int, str(copy("int_weights") / "model.safetensors"))

    # files `argen convert` must refuse in one line
    ws["text_pth"] = root / "notes.pth"
    ws["text_pth"].write_text("these are not weights\n" * 10)
    ws["namespace_pkl"] = root / "namespace.pth"  # a plain pickle (protocol 4): torch stops before the class
    ws["namespace_pkl"].write_bytes(pickle.dumps({"args": argparse.Namespace(model="var")}, protocol=4))

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    ws["evil_pth"] = root / "evil.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "x": Evil()}, ws["evil_pth"])


CASES: list[Case] = []
for _variant, (_, _words) in CONFIG_VARIANTS.items():
    _name = f"gen_{_variant}"
    CASES += [
        Case(f"config-{_variant}-sample", _sample(_name), words=("config.json|model.safetensors", *_words),
             unchanged=("{" + _name + "}",), absent=("{tmp}/s.png", "{tmp}/s.npz"), timeout=60),
        Case(f"config-{_variant}-info", ["info", "{" + _name + "}"], words=("config.json|model.safetensors", *_words),
             unchanged=("{" + _name + "}",), timeout=60),
    ]
CASES += [
    Case("config-meta-string-sample", _sample("gen_meta_str"), words=("config.json", "meta", "object"),
         absent=("{tmp}/s.png",)),
    Case("config-meta-string-info", ["info", "{gen_meta_str}"], words=("config.json", "meta", "object")),
    Case("config-nested-200000-info", ["info", "{gen_nested}"], words=("config.json", "nested too deeply")),
    Case("config-nested-200000-sample", _sample("gen_nested"), words=("config.json", "nested too deeply"),
         absent=("{tmp}/s.png",)),
    Case("config-5000-digit-int-info", ["info", "{gen_bigint}"], words=("config.json", "digits")),
    Case("config-5000-digit-int-sample", _sample("gen_bigint"), words=("config.json", "digits"),
         absent=("{tmp}/s.png",)),
    Case("config-17mb-file-info", ["info", "{gen_big_file}"], words=("config.json", "limit")),
    Case("weights-nan-sample", _sample("gen_nan_weights"), words=("model.safetensors", "NaN"),
         unchanged=("{gen_nan_weights}",), absent=("{tmp}/s.png",)),
    Case("weights-int32-sample", _sample("gen_int_weights"), words=("model.safetensors", "I32", "float32"),
         unchanged=("{gen_int_weights}",), absent=("{tmp}/s.png",)),
    Case("weights-int32-info", ["info", "{gen_int_weights}"], words=("model.safetensors", "I32", "float32")),
    # convert: files that are no checkpoint, pickles of other classes, an --out that is taken
    Case("convert-text-file", ["convert", "--from", "var", "--checkpoint", "{text_pth}", "--out", "{tmp}/o", *CPU],
         words=("notes.pth", "not a PyTorch checkpoint"), absent=("{tmp}/o",)),
    Case("convert-text-file-as-vae", ["convert", "--from", "mar", "--vae", "{text_pth}", "--out", "{tmp}/o", *CPU],
         words=("notes.pth", "not a PyTorch checkpoint"), absent=("{tmp}/o",)),
    Case("convert-plain-pickle-namespace", ["convert", "--from", "var", "--checkpoint", "{namespace_pkl}",
                                            "--out", "{tmp}/o", *CPU],
         words=("namespace.pth", "argparse.Namespace", "will not unpickle"), absent=("{tmp}/o",)),
    Case("convert-pickle-os-system", ["convert", "--from", "llamagen", "--checkpoint", "{evil_pth}",
                                      "--out", "{tmp}/o", *CPU],
         words=("evil.pth", r"\.system", "will not unpickle"), absent=("{tmp}/o",)),
    Case("convert-out-holds-a-checkpoint", ["convert", "--from", "var", "--checkpoint", "{text_pth}",
                                            "--out", "{gen}", *CPU],
         words=("--out", "not empty", "remove it or choose another --out"), unchanged=("{gen}",)),
]
