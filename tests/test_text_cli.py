"""The sampling commands on a text model: eval (ShapesEval), edit --prompt, bench."""

import json

import numpy as np
import pytest

from argen.cli import main
from argen.data.shapes import render, scenes

CPU = ["--threads", "1", "--quiet", "--device", "cpu"]


def _samples(path, images, labels, captions):
    np.savez(path, images=images, labels=np.asarray(labels), prompts=np.asarray(captions))


def test_eval_of_samples_files_scores_each_image_against_its_prompt(tmp_path, capsys):
    test = scenes("test", 60)
    images, captions = render(test), [s.prompt.caption for s in test]
    _samples(tmp_path / "right.npz", images, np.arange(60), captions)
    _samples(tmp_path / "shuffled.npz", images, np.roll(np.arange(60), 7), captions)  # another image's prompt
    noise = np.random.default_rng(0).integers(0, 256, images.shape, dtype=np.uint8)
    _samples(tmp_path / "noise.npz", noise, np.arange(60), captions)
    scores = {}
    for name in ("right", "shuffled", "noise"):
        assert main(["eval", "--samples", str(tmp_path / f"{name}.npz"), "--data", "shapes", "--out",
                     str(tmp_path / name), "--json", *CPU]) == 0
        scores[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert scores["right"]["shapes_eval_overall"] == 1.0
    assert {"shapes_eval_counting", "shapes_eval_position", "shapes_eval_color_attr"} <= scores["right"].keys()
    assert scores["shuffled"]["shapes_eval_overall"] < 0.2
    # beside alignment, FD-shapes (the shipped shapes CNN's features) against the real test scenes
    assert scores["right"]["FD-shapes"] < 0.2 * scores["noise"]["FD-shapes"]
    assert scores["noise"]["shapes_eval_overall"] < 0.1
    # a samples file of a class model has no prompts: one line, nothing written
    np.savez(tmp_path / "classes.npz", images=images, labels=np.zeros(60, dtype=np.int64))
    capsys.readouterr()
    assert main(["eval", "--samples", str(tmp_path / "classes.npz"), "--data", "shapes", "--out",
                 str(tmp_path / "c"), *CPU]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no prompts" in err and len(err.splitlines()) == 1 and not (tmp_path / "c").exists()


def test_eval_of_a_text_checkpoint_reports_shapes_eval_on_test_and_heldout(shapes_raster, tmp_path):
    out = tmp_path / "ev"
    assert main(["eval", "--checkpoint", str(shapes_raster / "gen"), "--n", "12", "--out", str(out), *CPU]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for split in ("", "heldout_"):
        assert 0.0 <= metrics[f"shapes_eval_{split}overall"] <= 1.0
    saved = np.load(out / "samples.npz")
    assert saved["images"].shape == (24, 32, 32, 3)  # 12 test + 12 held-out prompts
    assert len(saved["prompts"]) == 24 and saved["labels"].tolist() == list(range(24))
    # the checkpoint's score is that of its samples file
    assert main(["eval", "--samples", str(out / "samples.npz"), "--data", "shapes", "--out", str(tmp_path / "again"),
                 *CPU]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    both = [metrics["shapes_eval_overall"], metrics["shapes_eval_heldout_overall"]]
    assert min(both) <= again["shapes_eval_overall"] <= max(both)


def _image_and_mask(tmp_path):
    from PIL import Image

    Image.fromarray(render(scenes("test", 1))[0]).save(tmp_path / "img.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[:, 16:] = 255  # regenerate the right half
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return ["--image", str(tmp_path / "img.png"), "--mask", str(tmp_path / "mask.png")]


def test_edit_with_a_prompt_is_the_pipelines_edit_under_that_caption(shapes_raster, tmp_path):
    from argen.images import load_image, load_mask, to_uint8
    from argen.pipeline import Pipeline

    args = _image_and_mask(tmp_path)
    assert main(["edit", "--checkpoint", str(shapes_raster / "gen"), *args, "--prompt", "a red circle", "--n", "3",
                 "--out", str(tmp_path / "e"), *CPU]) == 0
    saved = np.load(tmp_path / "e.npz")
    assert saved["images"].shape == (3, 32, 32, 3) and saved["prompts"].tolist() == ["a red circle"]
    assert saved["labels"].tolist() == [0, 0, 0]
    pipe = Pipeline.from_pretrained(shapes_raster / "gen")
    image, mask = load_image(tmp_path / "img.png", 3, (32, 32)), load_mask(tmp_path / "mask.png", (32, 32))
    assert np.array_equal(saved["images"], to_uint8(pipe.edit(image, mask, ["a red circle"] * 3, seed=0)))


@pytest.mark.parametrize("argv, message", [
    (["--label", "3"], "--label: this model is conditioned on text"),
    ([], "--prompt: this model is conditioned on text"),
    (["--prompt", "a lilac dragon"], "--prompt: unknown word(s) 'lilac', 'dragon'"),
])
def test_edit_of_a_text_model_needs_a_known_prompt(shapes_raster, tmp_path, capsys, argv, message):
    args = _image_and_mask(tmp_path)
    capsys.readouterr()
    code = main(["edit", "--checkpoint", str(shapes_raster / "gen"), *args, *argv, "--out", str(tmp_path / "e"), *CPU])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1 and not (tmp_path / "e.npz").exists()


def test_bench_of_a_text_model(shapes_raster, capsys):
    capsys.readouterr()
    assert main(["bench", "--checkpoint", str(shapes_raster / "gen"), "--batch-sizes", "2", "--repeats", "1",
                 "--json", "--threads", "1", "--device", "cpu"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["forward_calls"] == 64 and rows[0]["batch_size"] == 2  # one pass per token of the 8 x 8 grid
