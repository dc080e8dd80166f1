"""argen eval: metrics.json and report.html for a checkpoint or a samples file; exact bits per token."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import tiny_raster, tiny_vq

from argen.cli import main
from argen.data import load_dataset
from argen.evaluation.evaluate import bits_per_token, evaluate_samples, run_eval
from argen.pipeline import Pipeline


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    """A tiny raster generator on digits (10 classes), saved as a checkpoint that knows its dataset."""
    path = tmp_path_factory.mktemp("gen")
    pipe = Pipeline(tiny_vq(), tiny_raster(num_classes=10, vocab_size=16), {"cfg": 0.0})
    pipe.save_pretrained(path, meta={"data": "digits"})
    (path / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 3.0 / s}) + "\n" for s in range(1, 6)))
    return path


def test_eval_of_a_checkpoint_writes_metrics_samples_and_a_report(generator, tmp_path):
    metrics = run_eval(tmp_path, checkpoint=generator, n=40, seed=0, progress=False)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk.keys() == metrics.keys()
    for key in ("FD-digits", "KID-digits", "precision-digits", "recall-digits", "IS-digits", "class_accuracy",
                "bits_per_token", "seconds_per_image"):
        assert math.isfinite(on_disk[key]), key
    assert on_disk["floor"]["FD-digits"] < on_disk["FD-digits"]  # an untrained model is far from real digits
    with np.load(tmp_path / "samples.npz") as z:
        assert z["images"].shape == (40, 8, 8, 1) and z["labels"].tolist() == [i % 10 for i in range(40)]
    report = (tmp_path / "report.html").read_text()
    for section in ("Metrics", "Samples per class", "Nearest training neighbours", "Training curves", "<svg"):
        assert section in report
    assert "data:image/png;base64," in report and "http" not in report.replace("http-equiv", "")


def test_real_test_images_score_near_the_floor_and_far_from_noise():
    test = load_dataset("digits", "test")
    real = evaluate_samples(test.images.permute(0, 2, 3, 1).numpy(), test.labels.numpy(), "digits")
    noise = evaluate_samples(np.random.default_rng(0).integers(0, 256, (355, 8, 8, 1), dtype=np.uint8), None,
                             "digits")
    assert real["FD-digits"] < 1e-6 and real["precision-digits"] == 1.0  # the test split against itself
    assert noise["FD-digits"] > 100 and noise["coverage-digits"] < 0.5 * real["coverage-digits"]


def test_bits_per_token_is_an_exact_normalised_likelihood(generator):
    pipe = Pipeline.from_pretrained(generator)
    bpt = bits_per_token(pipe, "digits", n=20)
    # bits_per_token averages the teacher-forced cross-entropy; per image that is the NLL / N:
    test = load_dataset("digits", "test")
    per_image = []
    with torch.no_grad():
        for i in range(20):
            images, labels = test.batch(torch.tensor([i]))
            per_image.append(pipe.generator.loss(pipe.generator.tokens_from_images(pipe.tokenizer, images), labels)[1]["ce"])
    assert bpt == pytest.approx(sum(per_image) / 20 / math.log(2), rel=1e-5)
    # ... and that NLL is a likelihood: over every sequence of a model small enough to enumerate, exp(-NLL) sums to 1.
    model = tiny_raster(grid=(2, 2), vocab_size=3, num_classes=2).eval()
    seqs = torch.cartesian_prod(*[torch.arange(3)] * 4)  # (81, 4)
    with torch.no_grad():
        nll = [model.loss({"idx_BN": s[None]}, torch.tensor([1]))[1]["ce"] * 4 for s in seqs]
    assert sum(math.exp(-x) for x in nll) == pytest.approx(1.0, abs=1e-4)


def test_cli_eval_of_a_samples_file_and_its_errors(tmp_path, capsys):
    test = load_dataset("digits", "test")
    np.savez(tmp_path / "s.npz", images=test.images[:50].permute(0, 2, 3, 1).numpy(), labels=test.labels[:50].numpy())
    assert main(["eval", "--samples", str(tmp_path / "s.npz"), "--data", "digits", "--out", str(tmp_path / "e"),
                 "--json", "--device", "cpu"]) == 0
    saved = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert saved["class_accuracy"] > 0.9
    out, err = capsys.readouterr()
    assert json.loads(out) == saved and "wrote" in err  # stdout: one JSON document, status on stderr
    assert main(["eval", "--samples", str(tmp_path / "s.npz"), "--out", str(tmp_path / "e2")]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["eval", "--samples", str(tmp_path / "missing.npz"), "--data", "digits", "--out", str(tmp_path)]) == 2


def test_the_cli_knows_how_many_samples_the_metrics_need():
    import argen.flags
    from argen.errors import ArgenError
    from argen.evaluation.evaluate import MIN_SAMPLES, check_samples

    assert argen.flags.MIN_EVAL_SAMPLES == MIN_SAMPLES
    images = np.zeros((MIN_SAMPLES, 8, 8, 1), dtype=np.uint8)
    check_samples(images, np.arange(MIN_SAMPLES), "digits")
    with pytest.raises(ArgenError, match="at least"):
        check_samples(images[:-1], None, "digits")
    with pytest.raises(ArgenError, match="10 is out of range"):
        check_samples(images, np.arange(MIN_SAMPLES) + 5, "digits")


def test_adm_format_holds_the_same_images_and_evaluates_the_same(tmp_path, capsys):
    """`argen sample --format adm` writes what the standard FID suites read (arr_0 RGB uint8, arr_1 labels);
    `argen eval --samples` reads it back to the same metrics as the argen layout."""
    common = ["sample", "--model", "digits-var", "--per-label", "10", "--seed", "3", "--quiet", "--device", "cpu",
              "--threads", "1"]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--format", "adm", "--out", str(tmp_path / "b")]) == 0
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert "images" not in b and b["arr_0"].dtype == np.uint8 and b["arr_0"].shape == (100, 8, 8, 3)
        assert np.array_equal(b["arr_0"], np.repeat(a["images"], 3, axis=-1))
        assert np.array_equal(b["arr_1"], a["labels"]) and json.loads(str(b["meta"]))["sampler"] == "var"
    for name in ("a", "b"):
        assert main(["eval", "--samples", str(tmp_path / f"{name}.npz"), "--data", "digits", "--quiet",
                     "--out", str(tmp_path / f"e{name}"), "--device", "cpu", "--threads", "1"]) == 0
    ea, eb = (json.loads((tmp_path / f"e{n}" / "metrics.json").read_text()) for n in ("a", "b"))
    assert ea["FD-digits"] == eb["FD-digits"] and ea["class_accuracy"] == eb["class_accuracy"]
    with pytest.raises(SystemExit):
        main([*common, "--format", "png", "--out", str(tmp_path / "c")])
    assert "--format" in capsys.readouterr().err
