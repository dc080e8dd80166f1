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
from argen.images import to_uint8
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


# ---- against reference images the user supplies (any model), in Inception space ----------------------

class StandIn(torch.nn.Module):
    """The FID network's interface at a fraction of its cost: one torchvision-named conv + BN unit, 16-d
    pooled features. ``load_inception`` builds it (monkeypatched) and fills it from the weights file."""

    def __init__(self):
        super().__init__()
        from argen.evaluation.inception import BasicConv2d

        self.Conv2d_1a_3x3 = BasicConv2d(3, 16, kernel_size=3, stride=2)

    def features(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.Conv2d_1a_3x3(x_BCHW.expand(-1, 3, -1, -1)).mean((2, 3))

    forward = features


@pytest.fixture
def scorer(tmp_path, monkeypatch):
    """A weights file of the stand-in network with a 1008-way fc (as pytorch-fid's file), and the network."""
    from argen.evaluation import inception

    monkeypatch.setattr(inception, "InceptionV3", StandIn)
    torch.manual_seed(0)
    net = StandIn().eval()
    sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    sd["fc.weight"], sd["fc.bias"] = torch.randn(1008, 16) * 3, torch.randn(1008)
    path = tmp_path / "pt_inception.pth"
    torch.save(sd, path)
    return path, net, sd["fc.weight"]


def _ref_images(n: int = 20) -> np.ndarray:
    return load_dataset("digits", "test").images[:n].permute(0, 2, 3, 1).numpy()  # uint8 (n, 8, 8, 1)


def _reference_folder(root, images_u8: np.ndarray):
    """PNGs in two sub-folders (an ImageNet-like layout; read in the order of ``images_u8``), plus files that
    are not reference images."""
    from PIL import Image

    for i, im in enumerate(images_u8):
        sub = root / f"c{2 * i // len(images_u8)}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im[..., 0]).save(sub / f"{i:03d}.png")
    (root / "README.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"not a png either: skipped, as hidden")
    return root


def _cli(*args) -> int:
    return main(["eval", *map(str, args), "--quiet", "--threads", "1", "--device", "cpu"])


def test_eval_of_samples_against_a_reference_folder_or_npz(tmp_path, scorer):
    weights, net, fc = scorer
    ref = _ref_images()
    folder = _reference_folder(tmp_path / "ref", ref)
    np.savez(tmp_path / "ref.npz", arr_0=np.repeat(ref, 3, axis=-1))  # an ADM reference batch: RGB
    np.savez(tmp_path / "same.npz", images=ref, labels=np.zeros(len(ref), dtype=np.int64))
    noise = np.random.default_rng(0).integers(0, 256, (12, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "noise.npz", images=noise)
    runs = {}
    for name, samples, reference in (("same-folder", "same", folder), ("same-npz", "same", tmp_path / "ref.npz"),
                                     ("noise", "noise", folder)):
        assert _cli("--samples", tmp_path / f"{samples}.npz", "--reference", reference, "--inception-weights",
                    weights, "--out", tmp_path / name) == 0
        runs[name] = json.loads((tmp_path / name / "metrics.json").read_text())
        assert (tmp_path / name / "report.html").stat().st_size > 0
    same, noisy = runs["same-folder"], runs["noise"]
    # the samples are the reference images: FID 0 and every sample inside the reference manifold and back
    assert same["FID"] < 1e-6 and same["precision"] == same["recall"] == 1.0
    assert same["n_samples"] == same["n_reference"] == 20 and same["reference"] == str(folder)
    # the folder (grey PNGs read as RGB, README and hidden file skipped) and the npz hold the same images
    assert {k: v for k, v in same.items() if k != "reference"} == {k: v for k, v in runs["same-npz"].items()
                                                                    if k != "reference"}
    assert not any(k.endswith("-digits") for k in same)  # no --data: no reference-classifier metrics
    # noise against digits, checked against the metric functions on the network's own features
    from argen.evaluation.metrics import features_of, frechet_distance_from_features

    f_fake, f_real = features_of(net, noise), features_of(net, ref)
    assert noisy["FID"] > 10 * max(same["FID"], 1e-3)
    assert noisy["FID"] == pytest.approx(frechet_distance_from_features(f_fake, f_real), rel=1e-6)
    # IS from the file's 1008-way fc without its bias: exp(E KL(p(y|x) || p(y)))
    p = (f_fake.double() @ fc.double().T).softmax(-1).numpy()
    want = math.exp(np.mean(np.sum(p * (np.log(p) - np.log(p.mean(0, keepdims=True))), 1)))
    assert noisy["IS"] == pytest.approx(want, rel=1e-6) and noisy["IS_std"] == 0.0 and noisy["IS"] > 1.01


def test_eval_of_a_checkpoint_with_no_reference_classifier(tmp_path, scorer, capsys):
    """A model trained on data argen has no classifier for (a folder, or a converted official checkpoint):
    its samples against the user's reference images."""
    weights, _, _ = scorer
    Pipeline(tiny_vq(), tiny_raster(num_classes=3, vocab_size=16), {}).save_pretrained(
        tmp_path / "gen", meta={"data": "folder"})
    assert _cli("--checkpoint", tmp_path / "gen", "--out", tmp_path / "e0") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'folder'" in err[0] and "--reference" in err[0]
    folder = _reference_folder(tmp_path / "ref", _ref_images())
    assert _cli("--checkpoint", tmp_path / "gen", "--reference", folder, "--inception-weights", weights,
                "--n", "12", "--seed", "3", "--out", tmp_path / "e") == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    for key in ("FID", "KID", "precision", "recall", "IS"):
        assert math.isfinite(metrics[key]), key
    assert metrics["n_samples"] == 12 and metrics["dataset"] == "folder" and metrics["seed"] == 3
    assert "class_accuracy" not in metrics and "floor" not in metrics
    with np.load(tmp_path / "e" / "samples.npz") as z:  # the images the metrics saw: the pipeline's, seeded
        want = to_uint8(Pipeline.from_pretrained(tmp_path / "gen")([i % 3 for i in range(12)], seed=3,
                                                                    batch_size=250))
        assert np.array_equal(z["images"], want) and z["labels"].tolist() == [i % 3 for i in range(12)]


def test_reference_folder_images_are_centre_cropped_to_the_samples_size(tmp_path):
    from PIL import Image

    from argen.evaluation.evaluate import load_reference

    wide = np.zeros((8, 16, 3), dtype=np.uint8)
    wide[:, 4:12] = 255  # white in the middle: the centre crop to a square
    for i in range(6):
        Image.fromarray(wide).save(tmp_path / f"{i}.png")
    out = load_reference(tmp_path, (8, 8))
    assert out.shape == (6, 8, 8, 3) and (out == 255).all()
    assert load_reference(tmp_path).shape == (6, 8, 16, 3)  # without a size: the first image's


def test_bad_references_are_one_line_errors(tmp_path, scorer, capsys):
    weights, _, _ = scorer
    np.savez(tmp_path / "s.npz", images=_ref_images(8))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    broken = _reference_folder(tmp_path / "broken", _ref_images(8))
    (broken / "c0" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (tmp_path / "list.txt").write_text("a.png\n")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    np.savez(tmp_path / "float.npz", arr_0=np.zeros((8, 8, 8, 3), dtype=np.float32))
    np.savez(tmp_path / "few.npz", arr_0=np.zeros((3, 8, 8, 3), dtype=np.uint8))
    cases = {  # REF: what the one line says
        tmp_path / "missing": "no such file or folder",
        tmp_path / "empty": "no image files",
        broken: "cannot read image",
        tmp_path / "list.txt": "not a folder of images, or an .npz",
        tmp_path / "junk.npz": "cannot read it as an .npz",
        tmp_path / "other.npz": "no arr_0 array",
        tmp_path / "float.npz": "arr_0 must be uint8 (N, H, W, C)",
        tmp_path / "few.npz": "3 images; the metrics need at least 6",
    }
    for ref, what in cases.items():
        assert _cli("--samples", tmp_path / "s.npz", "--reference", ref, "--inception-weights", weights,
                    "--out", tmp_path / "e") == 2, ref
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--reference" in err[0] and what in err[0], (ref, err)
    assert _cli("--samples", tmp_path / "s.npz", "--reference", tmp_path / "few.npz", "--out", tmp_path / "e") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--reference" in err[0] and "--inception-weights" in err[0]
    assert not (tmp_path / "e").exists()  # nothing written
