"""Tests for the ``shapes`` data set (argen.data.shapes) and its exact checker ShapesEval (argen.evaluation.shapes_eval).

Measured on the fixed splits (32 px): ground truth is read right on 100% of the 1000 test and 1000 held-out
prompts in every category; images paired with shuffled prompts score 0.050-0.059 overall over six
derangements (chance: a two-object prompt "a circle and a square" fits ~1/6 of all images); blurred and
noisy renders score 1.000 (blur 0.7 px, noise 10) and 0.999 (blur 1 px, noise 15).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import ndimage

from argen.config import ConfigError
from argen.data import ImageDataset, load_dataset, shapes
from argen.data.shapes import CATEGORIES, HELDOUT_PAIRS, HELDOUT_RELATIONS, Group, Obj, Prompt, Scene
from argen.errors import ArgenError, DataError
from argen.evaluation.shapes_eval import Detection, ShapesEvalConfig, detect, judge, score


def _scores(result: dict) -> dict:
    return {k: round(v, 3) for k, v in result.items() if k not in ("per_prompt", "n")}


def _degrade(images: np.ndarray, blur: float, noise: float, seed: int = 0) -> np.ndarray:
    """What a tokenizer round trip roughly does to a render: a gaussian blur and gaussian noise."""
    x = ndimage.gaussian_filter(images.astype(np.float32), sigma=(0, blur, blur, 0))
    x += np.random.RandomState(seed).normal(0, noise, x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def test_split():
    chosen = shapes.scenes("test")
    return shapes.render(chosen), [s.prompt for s in chosen]


# ------------------------------------------------------------------------------------ data set


def test_load_dataset_gives_captioned_images_labelled_by_category():
    ds = load_dataset("shapes", "test")
    assert ds.name == "shapes" and len(ds) == 1000 and ds.images.shape == (1000, 3, 32, 32)
    assert ds.images.dtype == torch.uint8 and ds.classes == CATEGORIES
    assert torch.equal(torch.bincount(ds.labels), torch.tensor([167, 167, 167, 167, 166, 166]))  # i % 6
    prompts = shapes.prompts("test")
    assert ds.captions == tuple(p.caption for p in prompts)
    assert [CATEGORIES[int(c)] for c in ds.labels] == [p.category for p in prompts]
    idx = torch.tensor([5, 0, 999])
    assert ds.captions_of(idx) == [prompts[5].caption, prompts[0].caption, prompts[999].caption]
    x, y = ds.batch(idx)
    assert x.shape == (3, 3, 32, 32) and float(x.min()) == -1.0 and torch.equal(y, ds.labels[idx])
    # the images are the renders of the prompts' scenes, in the same order
    assert np.array_equal(ds.images.permute(0, 2, 3, 1).numpy(), shapes.render(shapes.scenes("test")))

    assert load_dataset("shapes", "heldout", image_size=64).images.shape == (1000, 3, 64, 64)
    assert len(load_dataset("shapes", "validation")) == 1000
    with pytest.raises(DataError, match="split 'all'.*train, validation, test, heldout"):
        load_dataset("shapes", "all")
    with pytest.raises(DataError, match="image size must be an integer >= 32"):
        load_dataset("shapes", "test", image_size=16)
    with pytest.raises(DataError, match="digits: this data set has no captions"):
        load_dataset("digits", "test").captions_of([0])
    with pytest.raises(ValueError, match="2 images but 1 captions"):
        ImageDataset("x", ds.images[:2], ds.labels[:2], CATEGORIES, captions=["a circle"])


def test_splits_are_deterministic_and_pinned():
    first = shapes.scenes("test", 100)
    assert shapes.scenes("test")[:100] == first  # the first n of a stream do not depend on n
    shapes._scenes.cache_clear()  # draw again, not from the cache
    again = shapes.scenes("test", 100)
    assert again == first and np.array_equal(shapes.render(again), shapes.render(first))
    assert shapes.scenes("test", 100, seed=1) != first
    assert shapes.prompts("train", 50) != shapes.prompts("validation", 50)
    # The fixed test split itself: renders and captions of its first 100 scenes, on every machine.
    digest = hashlib.sha256(shapes.render(first).tobytes() + "\n".join(s.prompt.caption for s in first).encode())
    assert digest.hexdigest() == "e70880c039545960a6214cff65b10a47a58b63674c8a8123f208bb2973e1cf59"


def test_scenes_are_pure_renders_of_separate_objects():
    chosen = shapes.scenes("validation", 300)
    images = shapes.render(chosen)
    palette = {(0, 0, 0), *shapes.COLOURS.values()}
    assert set(map(tuple, np.unique(images.reshape(-1, 3), axis=0))) <= palette  # no anti-aliasing
    for image, scene in zip(images, chosen):  # each object is its own 8-connected component
        _, n = ndimage.label(image.max(-1) > 0, structure=np.ones((3, 3)))
        assert n == len(scene.objects), scene


def _assert_caption_names_no_heldout_composition(scene: Scene) -> None:
    p = scene.prompt  # the prompt is what the caption says (tested below)
    assert not {(g.colour, g.shape) for g in p.groups} & set(HELDOUT_PAIRS), p.caption
    assert p.relation is None or not shapes._is_heldout_relation(p.groups[0].shape, p.relation, p.groups[1].shape)


def _heldout_relation_holds(scene: Scene) -> bool:
    return any(
        shapes._offset(np.array([oa.x, oa.y]), np.array([ob.x, ob.y]), relation) > shapes.REL_MIN
        for a, relation, b in HELDOUT_RELATIONS
        for oa in scene.objects if oa.shape == a
        for ob in scene.objects if ob.shape == b
    )


def test_held_out_compositions_never_named_in_train_validation_test_captions():
    for split in ("train", "validation", "test"):
        for scene in shapes.scenes(split):
            _assert_caption_names_no_heldout_composition(scene)
    # The images hold them, under captions that do not say so: a red triangle under "a triangle"
    # or "a circle and a triangle", a circle above a triangle under "a circle and a triangle".
    train = shapes.scenes("train", 3000)
    pictured = [(s, o) for s in train for o in s.objects if (o.colour, o.shape) in HELDOUT_PAIRS]
    assert {(o.colour, o.shape) for _, o in pictured} == set(HELDOUT_PAIRS)
    for scene, obj in pictured:  # no group of that shape names the colour
        assert all(g.colour is None for g in scene.prompt.groups if g.shape == obj.shape), scene
    assert sum(map(_heldout_relation_holds, train)) > 50
    # ... and what the checker reads off the train images agrees.
    found = {(o.colour, o.shape) for objects in detect(shapes.render(train[:600])) for o in objects}
    assert found >= set(HELDOUT_PAIRS)

    # Every held-out prompt names a held-out composition.
    for p in shapes.prompts("heldout"):
        named_pair = any((g.colour, g.shape) in HELDOUT_PAIRS for g in p.groups)
        named_relation = p.relation is not None and shapes._is_heldout_relation(
            p.groups[0].shape, p.relation, p.groups[1].shape
        )
        assert named_pair or named_relation, p
    assert {p.category for p in shapes.prompts("heldout")} == {"colors", "counting", "position", "color_attr"}


def test_scenes_extend_a_split_by_its_own_rules():
    more = load_dataset("shapes", "validation", scenes=1300)  # 300 past the fixed 1000
    fixed = load_dataset("shapes", "validation")
    assert len(more) == 1300 and torch.equal(more.images[:1000], fixed.images)
    assert more.captions[:1000] == fixed.captions and len(set(more.captions[1000:]) - set(fixed.captions)) > 50
    fewer = load_dataset("shapes", "validation", scenes=7)
    assert len(fewer) == 7 and torch.equal(fewer.images, fixed.images[:7])
    for scene in shapes.scenes("validation", 1300)[1000:]:  # their captions name no held-out composition either
        _assert_caption_names_no_heldout_composition(scene)
    with pytest.raises(DataError, match="--scenes: only the shapes data set.*digits"):
        load_dataset("digits", "train", scenes=10)


def test_captions_say_what_the_specs_say():
    for split in shapes.SPLIT_SIZES:
        chosen = shapes.scenes(split, 1000)
        for scene in chosen:
            p = scene.prompt
            assert shapes.parse_prompt(p.caption) == p, p.caption
            # the scene's own objects (read exactly, from the spec) satisfy the prompt
            exact = [Detection(o.shape, o.colour, o.size, o.x, o.y, 0) for o in scene.objects]
            assert judge(p, exact) == (True, "ok"), p.caption
    assert shapes.parse_prompt("A green triangle, to the LEFT of a yellow circle!") == Prompt(
        "position",
        "A green triangle, to the LEFT of a yellow circle!",
        (Group("triangle", 1, "green"), Group("circle", 1, "yellow")),
        relation="left of",
    )
    assert shapes.parse_prompt("three small cyan triangles").groups == (Group("triangle", 3, "cyan", "small"),)
    assert shapes.parse_prompt("a big square at the top").region == "top"
    with pytest.raises(DataError, match="unknown words purple, dog"):
        shapes.parse_prompt("a purple dog")
    with pytest.raises(DataError, match="cannot read 'a red big circle'"):
        shapes.parse_prompt("a red big circle")


# ------------------------------------------------------------------------------------- checker


def test_checker_reads_ground_truth_right_in_every_category(test_split):
    images, prompts = test_split
    result = score(images, prompts)
    print("ShapesEval on ground-truth test renders:", _scores(result))
    assert result["n"] == 1000 and set(result) >= set(CATEGORIES)
    assert all(result[c] >= 0.99 for c in CATEGORIES), _scores(result)
    held = shapes.scenes("heldout")
    result = score(shapes.render(held), [s.prompt for s in held])
    print("ShapesEval on ground-truth held-out renders:", _scores(result))
    assert all(result[c] >= 0.99 for c in ("colors", "counting", "position", "color_attr")), _scores(result)
    # at another size too
    chosen = shapes.scenes("test", 240)
    assert score(shapes.render(chosen, 64), [s.prompt for s in chosen])["overall"] >= 0.99


def test_checker_scores_shuffled_prompts_near_zero(test_split):
    """Every image gets another image's prompt (a derangement). Chance level is about 0.055 overall (two_object
    highest, ~0.2: "a circle and a square" fits any two-object image of those shapes); 0.10 leaves room for
    another derangement but fails a checker that passes what it cannot see."""
    images, prompts = test_split
    perm = np.random.RandomState(0).permutation(len(prompts))
    shuffled = [None] * len(prompts)
    for i in range(len(perm)):
        shuffled[perm[i]] = prompts[perm[(i + 1) % len(perm)]]
    result = score(images, shuffled)
    print("ShapesEval with shuffled prompts:", _scores(result))
    assert result["overall"] <= 0.10 and all(result[c] <= 0.3 for c in CATEGORIES), _scores(result)


@pytest.mark.parametrize(("blur", "noise"), [(0.7, 10.0), (1.0, 15.0)])
def test_checker_tolerates_blur_and_noise(test_split, blur, noise):
    images, prompts = test_split
    result = score(_degrade(images, blur, noise), prompts)
    print(f"ShapesEval on renders blurred {blur} px + noise {noise}:", _scores(result))
    assert result["overall"] >= 0.95, _scores(result)


def _paint(objects: list[tuple[str, str, int, int, int]], size: int = 32) -> np.ndarray:
    """A (1, size, size, 3) image drawn by hand, not by shapes.render: (shape, colour, x0, y0, side) boxes."""
    image = np.zeros((size, size, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size] + 0.5
    for shape, colour, x0, y0, side in objects:
        u, v = xx - x0, yy - y0
        inside = (u >= 0) & (u < side) & (v >= 0) & (v < side)
        if shape == "circle":
            inside &= (u - side / 2) ** 2 + (v - side / 2) ** 2 <= (side / 2) ** 2
        elif shape == "triangle":
            inside &= np.abs(u - side / 2) <= v / 2
        image[inside] = shapes.COLOURS[colour]
    return image[None]


@pytest.mark.parametrize(
    ("objects", "good", "bad"),
    [
        ([("circle", "red", 10, 10, 11)], "a big red circle", ["a blue circle", "a red square", "a small red circle"]),
        (
            [("square", "red", 3, 3, 7), ("square", "red", 20, 20, 7)],
            "two small red squares",
            ["three red squares", "a red square", "two red circles", "two green squares"],
        ),
        (
            [("triangle", "green", 2, 10, 11), ("circle", "yellow", 19, 10, 11)],
            "a green triangle to the left of a yellow circle",
            [
                "a green triangle to the right of a yellow circle",
                "a yellow circle to the left of a green triangle",
                "a green triangle above a yellow circle",
                "a yellow triangle to the left of a green circle",
            ],
        ),
        (
            [("square", "blue", 3, 3, 11), ("circle", "red", 18, 18, 11)],
            "a blue square and a red circle",
            ["a red square and a blue circle", "a blue square", "a blue square and a red triangle"],
        ),
        (
            [("circle", "red", 10, 10, 11), ("square", "blue", 24, 24, 7)],
            "a red circle with a square",
            ["a red circle"],
        ),
        ([], None, ["a circle", "two squares"]),
    ],
)
def test_checker_rejects_hand_made_mismatches(objects, good, bad):
    image = _paint(objects)
    if good is not None:
        assert score(image, [good])["overall"] == 1.0, good
    for caption in bad:
        result = score(image, [caption])
        assert result["overall"] == 0.0 and result["per_prompt"][0]["reason"] != "ok", caption


def test_checker_explains_misses():
    image = _paint([("square", "red", 3, 3, 7), ("square", "red", 20, 20, 7)])
    assert score(image, ["three red squares"])["per_prompt"][0]["reason"] == "found 2 objects, want 3"
    image = _paint([("triangle", "green", 19, 10, 11), ("circle", "yellow", 2, 10, 11)])
    reason = score(image, ["a green triangle left of a yellow circle"])["per_prompt"][0]["reason"]
    assert reason == "a green triangle is not left of a yellow circle"
    # a smear of two touching same-coloured objects is no shape, so it matches nothing
    merged = _paint([("square", "red", 5, 10, 9), ("square", "red", 14, 10, 9)])
    assert [o.shape for o in detect(merged)[0]] == [None]


def test_score_api_and_errors():
    one = shapes.scenes("test", 6)
    images = shapes.render(one)
    by_caption = score(images, [s.prompt.caption for s in one])  # captions are parsed
    assert by_caption["overall"] == 1.0 and by_caption["n"] == 6 and len(by_caption["per_prompt"]) == 6
    assert set(by_caption) == {"overall", "n", "per_prompt", *CATEGORIES}
    assert score(torch.from_numpy(images), [s.prompt for s in one])["overall"] == 1.0
    with pytest.raises(ArgenError, match=r"images must be uint8 \(N, H, W, 3\)"):
        score(images.astype(np.float32), [s.prompt for s in one])
    with pytest.raises(ArgenError, match=r"images must be uint8 \(N, H, W, 3\)"):
        score(images.transpose(0, 3, 1, 2), [s.prompt for s in one])
    with pytest.raises(ArgenError, match="specs: 5 prompts for 6 images"):
        score(images, [s.prompt for s in one[:5]])
    with pytest.raises(ConfigError, match="triangle_skew must be in"):
        ShapesEvalConfig(triangle_skew=0.2)
    scene = Scene(
        Prompt("colors", "a red circle", (Group("circle", 1, "red"),)), (Obj("circle", "red", "big", 0.5, 0.5),)
    )
    assert score(shapes.render([scene]), [scene.prompt])["colors"] == 1.0


def test_import_prints_nothing():
    code = "import argen.data.shapes, argen.evaluation.shapes_eval"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert r.stdout == "" and r.stderr == ""
