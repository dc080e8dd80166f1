"""Pipeline round trip, bf16 sampling, and bf16 autocast training."""

import pytest
import torch
from helpers import tiny_msvq, tiny_var

from argen.data import load_dataset
from argen.errors import ArgenError
from argen.images import save_samples
from argen.pipeline import Pipeline
from argen.pretrained import list_models
from argen.training.trainer import GeneratorObjective, TrainConfig, train


def test_save_pretrained_round_trip_gives_the_same_images(tmp_path):
    pipe = Pipeline(tiny_msvq(), tiny_var(), {"cfg": 0.5, "top_k": 5})
    pipe.save_pretrained(tmp_path / "gen")
    again = Pipeline.from_pretrained(tmp_path / "gen")
    assert again.settings == pipe.settings
    a, b = pipe([0, 1, 2], seed=7), again([0, 1, 2], seed=7)
    assert a.shape == (3, 1, 8, 8) and torch.equal(a, b)
    assert not torch.equal(a, pipe([0, 1, 2], seed=8))


def test_batching_does_not_change_the_images():
    pipe = Pipeline(tiny_msvq(), tiny_var(), {"top_k": 1})  # greedy: batch composition must not matter
    labels = [0, 1, 2, 0, 1]
    a, b = pipe(labels, seed=0, batch_size=2), pipe(labels, seed=0, batch_size=5)
    # same tokens; the conv decoder's float sums may differ in the last bits between batch sizes
    assert torch.allclose(a, b, atol=1e-5)


def test_save_samples_writes_uint8_npz_and_png(tmp_path):
    import numpy as np

    images = torch.linspace(-1, 1, 2 * 64).view(2, 1, 8, 8)
    npz, png = save_samples(images, [3, 4], tmp_path / "s.png", nrow=2)
    data = np.load(npz)
    assert data["images"].dtype == np.uint8 and data["images"].shape == (2, 8, 8, 1)
    assert data["images"].min() == 0 and data["images"].max() == 255
    assert data["labels"].tolist() == [3, 4] and data["labels"].dtype == np.int64
    assert png.stat().st_size > 0


def test_bf16_autocast_training_runs_and_learns(tmp_path):
    torch.manual_seed(0)
    model, tok = tiny_var(randomize=False, num_classes=10), tiny_msvq()
    cfg = TrainConfig(steps=8, batch_size=16, lr=3e-3, warmup=0, bf16=True, log_every=1)
    train(model, load_dataset("digits"), cfg, tmp_path, objective=GeneratorObjective(model, tok), quiet=True)
    import json

    rows = [json.loads(r) for r in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert rows[-1]["loss"] < rows[0]["loss"]


@pytest.mark.parametrize("name", list_models())
def test_bf16_precision_samples_under_autocast_for_every_family(name):
    pipe = Pipeline.from_pretrained(name, precision="bf16")
    seen = []
    linear = next(m for m in pipe.generator.modules() if isinstance(m, torch.nn.Linear))
    hook = linear.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    try:
        conditions = {"prompts": ["a red circle", "two blue squares"]} if pipe.text_conditioned else {"labels": [0, 1]}
        images = pipe(seed=0, **conditions, **({"ar_steps": 2} if pipe.generator.family == "mar" else {}))
    finally:
        hook.remove()
    assert seen and set(seen) == {torch.bfloat16}  # the generator's matmuls ran in bf16
    assert images.dtype == torch.float32 and images.shape[0] == 2
    assert torch.isfinite(images).all() and images.abs().max() <= 1


def test_unknown_precision_is_refused_by_name():
    with pytest.raises(ArgenError, match="--precision must be one of fp32, bf16"):
        Pipeline(tiny_msvq(), tiny_var(), precision="fp16")


@pytest.mark.parametrize("labels, words", [([1.7], "integers"), (["3"], "integers"), ([], "at least one"),
                                           ([0, 10], "out of range")])
def test_labels_must_be_class_ids(labels, words):
    pipe = Pipeline(tiny_msvq(), tiny_var())
    with pytest.raises(ArgenError, match=words):
        pipe(labels)


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, None])
def test_batch_size_must_be_a_positive_integer(batch_size):
    with pytest.raises(ArgenError, match="batch_size"):
        Pipeline(tiny_msvq(), tiny_var())([0], batch_size=batch_size)


@pytest.mark.parametrize("field", ["cfg", "temperature", "top_p"])
def test_sampler_settings_must_be_finite(field):
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ArgenError, match=field):
            Pipeline(tiny_msvq(), tiny_var(), {field: bad})


def test_save_samples_writes_both_files_or_neither(tmp_path):
    import numpy as np

    images = torch.zeros(2, 1, 8, 8)
    (tmp_path / "x.png").mkdir()
    (tmp_path / "x.npz").write_bytes(b"old")
    with pytest.raises(ArgenError, match="x.png"):
        save_samples(images, [0, 1], tmp_path / "x", nrow=2)
    assert (tmp_path / "x.npz").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz", "x.png"]  # no temporary file left
    # temporary names are unique: the old fixed ones taken (by another process) do not matter
    (tmp_path / ".y.tmp.npz").mkdir()
    (tmp_path / ".y.png.tmp").mkdir()
    npz, png = save_samples(images, [0, 1], tmp_path / "y", nrow=2)
    assert np.load(npz)["labels"].tolist() == [0, 1] and png.stat().st_size > 0
