"""Pretrained models shipped in the package: they load by name, sample, and record how they were made."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import tiny_maskgit, tiny_vq

from argen.cli import main
from argen.pipeline import Pipeline
from argen.pretrained import export, list_models, max_abs_difference, model_path

SHIPPED = list_models()


def test_the_promised_models_ship_and_stay_small():
    assert {"fmnist-var", "fmnist-raster", "fmnist-maskgit", "fmnist-mar", "fmnist-nar", "digits-var",
            "shapes-raster", "shapes-maskgit"} <= set(SHIPPED)
    total = sum(f.stat().st_size for name in SHIPPED for f in model_path(name).rglob("*") if f.is_file())
    assert total <= 35 * 2**20  # benchmarks/ship_models.py's LIMIT_MB


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_model_samples_by_name_and_records_its_training(name, tmp_path):
    pipe = Pipeline.from_pretrained(name)
    meta = pipe.record.meta
    assert meta["command"].split()[:2] in (["argen", "train"], ["argen", "demo"]) and meta["step"] > 0 and meta["train_seconds"] > 0
    out = tmp_path / "x.npz"
    family_args = ["--ar-steps", "4"] if pipe.generator.family == "mar" else ["--cfg", "1.0"]
    common = ["--seed", "0", "--out", str(out), "--quiet", "--device", "cpu", *family_args]
    if pipe.text_conditioned:  # a shapes model: judged by ShapesEval, sampled from prompts
        assert 0 < meta["eval"]["shapes_eval"] <= 1 and 0 <= meta["eval"]["shapes_eval_heldout"] <= 1
        prompts = ["a red circle to the left of a blue square", "two green triangles"]
        assert main(["sample", "--model", name, "--prompt", prompts[0], "--prompt", prompts[1], "--per-prompt", "2",
                     *common]) == 0
        with np.load(out) as z:
            assert z["images"].shape[0] == 4 and z["prompts"].tolist() == prompts  # image i: prompts[labels[i]]
            assert z["labels"].tolist() == [0, 0, 1, 1]
        return
    assert 0 < meta["eval"]["class_accuracy"] <= 1
    assert pipe.generator.config.num_classes == 10
    assert main(["sample", "--model", name, "--labels", "0,1", "--per-label", "2", *common]) == 0
    with np.load(out) as z:
        assert z["images"].shape[0] == 4 and z["labels"].tolist() == [0, 0, 1, 1]


def test_export_stores_float16_and_loads_back_as_float32(tmp_path):
    pipe = Pipeline(tiny_vq(), tiny_maskgit(), {"steps": 4})
    pipe.save_pretrained(tmp_path / "ckpt", meta={"data": "digits"})
    export(tmp_path / "ckpt", "tiny", meta_update={"eval": {"class_accuracy": 0.5}}, models_dir=tmp_path / "models")
    back = Pipeline.from_pretrained(tmp_path / "models" / "tiny")
    assert next(back.generator.parameters()).dtype == torch.float32
    assert 0 < max_abs_difference(back.generator, pipe.generator) < 1e-2  # float16 rounding, nothing else
    assert back.record.meta["eval"]["class_accuracy"] == 0.5


def test_unknown_model_is_a_one_line_error(capsys):
    assert main(["sample", "--model", "nope", "--out", "x.png"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'nope'" in err and err.count("\n") == 1
    assert main(["info", "--models"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in SHIPPED)


def test_eval_of_a_shipped_model_by_name(tmp_path):
    out = tmp_path / "ev"
    assert main(["eval", "--model", "digits-var", "--n", "40", "--seed", "0", "--out", str(out), "--quiet",
                 "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_samples"] == 40
    assert metrics["class_accuracy"] >= 0.9  # the demo VAR scores 100% at n = 200
    assert 0 < metrics["FD-digits"] < 10 * metrics["floor"]["FD-digits"] + 20
    assert 0 < metrics["bits_per_token"] < 6  # a uniform model over its 64 codes scores log2(64) = 6
    assert (out / "report.html").stat().st_size > 10_000
