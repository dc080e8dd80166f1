"""``shapes``: procedural captioned scenes whose prompts can be checked exactly (by ShapesEval).

A scene is one to four objects on a black background. Each object has a shape (``SHAPES``: circle,
square, triangle with its apex up), a colour (``COLOURS``: the seven corners of the RGB cube other than
black, all channels 0 or 255), a size (``SIZES``: its box is 0.34 or 0.22 of the image side) and a
centre. Rendering has no anti-aliasing: every pixel is black or exactly its object's colour. Objects
never touch: their boxes are at least ``GAP`` of the side apart (>= 2 px at 32 px).

Each scene is drawn for one prompt (:class:`Prompt`: the caption and what it asks for) of one of
GenEval's six categories (``CATEGORIES``, the label of the image), and holds exactly what it names:

==============  =================================================  ===========================
category        captions (templates vary the words)                 objects
==============  =================================================  ===========================
single_object   "a triangle", "one small square at the top"         1 (colour not named)
two_object      "a circle and a square", "a square with a circle"   2 of different shapes
counting        "two blue squares", "three small cyan triangles"   2-4 of one shape/colour/size
colors          "a big red circle", "a green square"               1
position        "a green triangle to the left of a yellow circle"  2 of different shapes
color_attr      "a red square and a white circle"                  2 of different shapes/colours
==============  =================================================  ===========================

Splits (``SPLIT_SIZES``), the same on every machine (``numpy.random.RandomState`` streams are frozen):
``train`` 20000, ``validation`` 1000 and ``test`` 1000 scenes cycle through the six categories
(scene i has category i % 6). None of their captions names a held-out composition:

- no caption names a colour-shape pair of ``HELDOUT_PAIRS`` ("a red triangle" is never said);
- no caption states a relation of ``HELDOUT_RELATIONS`` or its converse ("a circle above a
  triangle", "a triangle below a circle").

Their images may hold them where the caption does not say so: a red triangle is drawn under "a
triangle" or "a circle and a triangle" (captions that name no colour choose among all seven), and
two objects of a caption without a relation fall where they may. So a held-out prompt asks the model
to put into words what it has seen but never heard named together, as the held-out compositions of
GenEval-style benchmarks do. (A first version kept them out of the images too: no model came above
0.03 on the held-out split; the tokenizer could draw them, but no generator had ever seen one.)

``heldout`` (1000 scenes) holds only prompts that name a held-out composition: a held-out pair in
colors, counting and color_attr, a held-out relation in position (scene i has category i % 4 of those
four; single_object and two_object name no colour, so they cannot name a held-out pair).

``load_dataset("shapes", split, image_size=..., scenes=n)`` (:func:`load_shapes`) gives the images with
``labels`` = category ids (``CATEGORIES`` are the classes) and ``captions``; :func:`prompts` gives
the prompts of a split in the same order, for evaluation; :func:`parse_prompt` turns a caption
written in this grammar (one's own too) into a :class:`Prompt`.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass

import numpy as np
import torch

from argen.errors import DataError

__all__ = [
    "CATEGORIES",
    "COLOURS",
    "HELDOUT_PAIRS",
    "HELDOUT_RELATIONS",
    "REGIONS",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "SPLIT_SIZES",
    "VERSION",
    "Group",
    "Obj",
    "Prompt",
    "Scene",
    "load_shapes",
    "parse_prompt",
    "phrase",
    "prompts",
    "render",
    "scenes",
]

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
    "white": (255, 255, 255),
}
SIZES = {"big": 0.34, "small": 0.22}  # side of the object's box, as a fraction of the image side
RELATIONS = ("left of", "right of", "above", "below")  # groups[0] <relation> groups[1]
REGIONS = ("left", "right", "top", "bottom")  # the half of the image a single object is in
CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")  # GenEval's tags
HELDOUT_PAIRS = (("red", "triangle"), ("blue", "circle"), ("yellow", "square"))
HELDOUT_RELATIONS = (("circle", "above", "triangle"), ("square", "left of", "circle"))
VERSION = 2  # of the scene rules; 1 kept held-out compositions out of the images too (and drew other scenes)
SPLIT_SIZES = {"train": 20000, "validation": 1000, "test": 1000, "heldout": 1000}
MIN_IMAGE_SIZE = 32  # below this the 2-px gap and a small triangle's shape no longer survive pixel rounding

GAP = 0.125  # boxes at least this far apart (Chebyshev), so objects stay separate components
MARGIN = 1 / 32  # boxes at least this far from the border
REL_MIN = 0.2  # a drawn relation: centres this far apart along its axis, and twice as far as across it
REGION_MAX = 0.4  # a drawn region: the centre within 0.4 of the named border (the checker asks < 0.5)

_SPLIT_SEEDS = {"train": 1501, "validation": 1502, "test": 1503, "heldout": 1504}
_HELDOUT_CATEGORIES = ("colors", "counting", "position", "color_attr")
_NUMBERS = {2: "two", 3: "three", 4: "four"}
_CONVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
_RELATION_WORDS = {
    "left of": ("to the left of", "left of"),
    "right of": ("to the right of", "right of"),
    "above": ("above", "over"),
    "below": ("below", "under"),
}
_REGION_WORDS = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}


@dataclass(frozen=True)
class Obj:
    """One object of a scene; ``x``, ``y``: its box centre as fractions of the image side (x right, y down)."""

    shape: str
    colour: str
    size: str
    x: float
    y: float


@dataclass(frozen=True)
class Group:
    """``count`` objects of ``shape`` that a prompt names; ``colour`` / ``size`` are None when it does not say."""

    shape: str
    count: int = 1
    colour: str | None = None
    size: str | None = None


@dataclass(frozen=True)
class Prompt:
    """What a caption asks for: exactly the objects of ``groups`` (one or two), and nothing else.

    ``relation``: ``groups[0] <relation> groups[1]`` (position prompts); ``region``: the half of the
    image the single object is in (some single_object prompts).
    """

    category: str
    caption: str
    groups: tuple[Group, ...]
    relation: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class Scene:
    prompt: Prompt
    objects: tuple[Obj, ...]


# ------------------------------------------------------------------------------------ captions


def phrase(g: Group, rng: np.random.RandomState | None = None) -> str:
    """``a big red circle`` / ``three small squares``; ``rng`` picks among synonyms of "a"."""
    words = [g.size] if g.size else []
    words += [g.colour] if g.colour else []
    words.append(g.shape + ("s" if g.count > 1 else ""))
    if g.count > 1:
        det = _NUMBERS[g.count]
    else:
        det = "a" if rng is None else ("a", "a", "one", "a single")[rng.randint(4)]
    return " ".join([det, *words])


def _caption(p: Prompt, rng: np.random.RandomState) -> str:
    first = phrase(p.groups[0], rng)
    if p.relation is not None:
        words = _RELATION_WORDS[p.relation]
        return f"{first} {words[rng.randint(len(words))]} {phrase(p.groups[1])}"
    if len(p.groups) == 2:
        return f"{first} {('and', 'with')[rng.randint(2)]} {phrase(p.groups[1])}"
    if p.region is not None:
        return f"{first} {_REGION_WORDS[p.region]}"
    return first


_ARTICLES = {"a": 1, "an": 1, "one": 1, **{w: n for n, w in _NUMBERS.items()}}


def _parse_phrase(text: str, caption: str) -> Group:
    """``[a|an|one|a single|two|three|four] [size] [colour] shape[s]`` -> :class:`Group`."""
    words = text.split()
    if words[:2] == ["a", "single"]:
        words = ["a", *words[2:]]
    known = {*_ARTICLES, *SIZES, *COLOURS, *SHAPES, *(s + "s" for s in SHAPES)}
    unknown = [w for w in words if w not in known]
    if unknown:
        raise DataError(
            f"prompt {caption!r}: unknown words {', '.join(unknown)}; shapes: {', '.join(SHAPES)}; "
            f"colours: {', '.join(COLOURS)}; sizes: {', '.join(SIZES)}; relations: {', '.join(RELATIONS)}"
        )
    count, *attrs, noun = words if len(words) >= 2 else ["", ""]
    size, colour = (next((w for w in attrs if w in names), None) for names in (SIZES, COLOURS))
    if count not in _ARTICLES or noun.removesuffix("s") not in SHAPES or [w for w in (size, colour) if w] != attrs:
        raise DataError(
            f"prompt {caption!r}: cannot read {text!r}; want [a|one|two|three|four] [big|small] [colour] shape, "
            "e.g. 'a big red circle', 'three squares'"
        )
    return Group(shape=noun.removesuffix("s"), count=_ARTICLES[count], colour=colour, size=size)


def parse_prompt(caption: str) -> Prompt:
    """The :class:`Prompt` of a caption in this data set's grammar (``DataError`` if it is not)."""
    text = " ".join(re.sub(r"[^a-z ]", " ", str(caption).lower()).split())
    text = text.removeprefix("a photo of ")
    for relation, phrases in _RELATION_WORDS.items():
        for words in phrases:  # the longer phrase first: "to the left of" before "left of"
            if f" {words} " in text:
                left, right = text.split(f" {words} ", 1)
                groups = (_parse_phrase(left, caption), _parse_phrase(right, caption))
                return Prompt("position", caption, groups, relation=relation)
    for conj in (" and ", " with "):
        if conj in text:
            left, right = text.split(conj, 1)
            groups = (_parse_phrase(left, caption), _parse_phrase(right, caption))
            category = "color_attr" if any(g.colour for g in groups) else "two_object"
            return Prompt(category, caption, groups)
    region = next((r for r, words in _REGION_WORDS.items() if text.endswith(" " + words)), None)
    if region is not None:
        text = text.removesuffix(" " + _REGION_WORDS[region])
    g = _parse_phrase(text, caption)
    category = "counting" if g.count > 1 else ("colors" if g.colour else "single_object")
    return Prompt(category, caption, (g,), region=region)


# ------------------------------------------------------------------------------------- scenes


def _colours(shape: str, heldout: bool, named: bool, rng: np.random.RandomState) -> str:
    """A colour for ``shape``: a held-out pair if ``heldout``; else, if the caption ``named`` it, one
    that is not a held-out pair; else any colour."""
    names = [c for c in COLOURS if ((c, shape) in HELDOUT_PAIRS) == heldout or not (heldout or named)]
    return names[rng.randint(len(names))]


def _pick(seq, rng: np.random.RandomState):
    return seq[rng.randint(len(seq))]


def _draw_prompt(category: str, heldout: bool, rng: np.random.RandomState) -> tuple[Prompt, list[tuple[str, str, str]]]:
    """A prompt of ``category`` (without its caption) and the (shape, colour, size) of each object to draw."""
    size = _pick(tuple(SIZES), rng)
    if category in ("single_object", "colors"):
        shape = _pick(SHAPES, rng)
        colour = _colours(shape, heldout, category == "colors", rng)
        named_size = size if rng.randint(2) else None
        if category == "colors":
            return Prompt(category, "", (Group(shape, 1, colour, named_size),)), [(shape, colour, size)]
        region = _pick(REGIONS, rng) if rng.randint(2) else None
        return Prompt(category, "", (Group(shape, 1, None, named_size),), region=region), [(shape, colour, size)]
    if category == "counting":
        shape, count = _pick(SHAPES, rng), 2 + rng.randint(3)
        named = heldout or bool(rng.randint(2))  # held out: the pair must be named
        colour = _colours(shape, heldout, named, rng)
        named_colour = colour if named else None
        named_size = size if rng.randint(2) else None
        return Prompt(category, "", (Group(shape, count, named_colour, named_size),)), [(shape, colour, size)] * count

    # two objects of different shapes
    s1, s2 = (SHAPES[i] for i in rng.permutation(len(SHAPES))[:2])
    relation = None
    if category == "position" and heldout:
        a, relation, b = _pick(HELDOUT_RELATIONS, rng)
        (s1, s2), relation = ((a, b), relation) if rng.randint(2) else ((b, a), _CONVERSE[relation])
    elif category == "position":
        relation = _pick(RELATIONS, rng)
        while _is_heldout_relation(s1, relation, s2):
            relation = _pick(RELATIONS, rng)
    # held-out color_attr: the first, the second or both objects in a held-out pair
    which = rng.randint(3) if category == "color_attr" and heldout else -1
    named = category == "color_attr" or (category == "position" and bool(rng.randint(2)))
    while True:  # colour attribution needs two colours to bind
        c1, c2 = _colours(s1, which in (0, 2), named, rng), _colours(s2, which in (1, 2), named, rng)
        if category != "color_attr" or c1 != c2:
            break
    z1, z2 = _pick(tuple(SIZES), rng), _pick(tuple(SIZES), rng)
    groups = (Group(s1, 1, c1 if named else None), Group(s2, 1, c2 if named else None))
    return Prompt(category, "", groups, relation=relation), [(s1, c1, z1), (s2, c2, z2)]


def _is_heldout_relation(s1: str, relation: str, s2: str) -> bool:
    return (s1, relation, s2) in HELDOUT_RELATIONS or (s2, _CONVERSE[relation], s1) in HELDOUT_RELATIONS


def _place(objects: list[tuple[str, str, str]], prompt: Prompt, rng: np.random.RandomState) -> np.ndarray:
    """Centres ``(k, 2)`` for ``objects``: rejection sampling, ``tries`` configurations at a time.

    Crowded scenes (four big objects) rarely fit by chance: after a first failed round, each of three
    or four objects is drawn inside its own quadrant of the image.
    """
    half = np.array([SIZES[z] / 2 for _, _, z in objects])  # (k,)
    k, tries = len(objects), 256
    lo, hi = np.repeat(half[:, None] + MARGIN, 2, 1), np.repeat(1 - half[:, None] - MARGIN, 2, 1)  # (k, 2)
    for attempt in itertools.count():
        if attempt == 1 and k >= 3:
            quadrant = rng.permutation(4)[:k]
            qx, qy = quadrant % 2, quadrant // 2
            quadrant_lo = np.stack([qx, qy], 1) * 0.5  # (k, 2); half a gap inside each quadrant's border
            lo = np.maximum(lo, quadrant_lo + half[:, None] + GAP / 2)
            hi = np.minimum(hi, quadrant_lo + 0.5 - half[:, None] - GAP / 2)
        xy = lo + (hi - lo) * rng.random_sample((tries, k, 2))  # (T, k, 2)
        ok = np.ones(tries, dtype=bool)
        for i in range(k):
            for j in range(i + 1, k):
                apart = np.abs(xy[:, i] - xy[:, j]).max(-1)
                ok &= apart >= half[i] + half[j] + GAP
        if prompt.region is not None:
            axis, sign = {"left": (0, -1), "right": (0, 1), "top": (1, -1), "bottom": (1, 1)}[prompt.region]
            ok &= sign * (xy[:, 0, axis] - 0.5) >= 0.5 - REGION_MAX
        if prompt.relation is not None:
            d = _offset(xy[:, 0], xy[:, 1], prompt.relation)  # > 0 when the relation holds
            across = np.abs(xy[:, 0] - xy[:, 1])[:, 1 if prompt.relation in ("left of", "right of") else 0]
            ok &= (d >= REL_MIN) & (d >= 2 * across)
        if ok.any():
            return xy[int(np.argmax(ok))]


def _offset(a_T2: np.ndarray, b_T2: np.ndarray, relation: str) -> np.ndarray:
    """How far (fraction of the side) ``a`` is ``relation`` of ``b``: positive when it holds (y points down)."""
    if relation == "left of":
        return b_T2[..., 0] - a_T2[..., 0]
    if relation == "right of":
        return a_T2[..., 0] - b_T2[..., 0]
    if relation == "above":
        return b_T2[..., 1] - a_T2[..., 1]
    return a_T2[..., 1] - b_T2[..., 1]


def _check_split(split: str) -> None:
    if split not in SPLIT_SIZES:
        raise DataError(f"shapes: unknown split {split!r}; choose one of: {', '.join(SPLIT_SIZES)}")


@functools.lru_cache(maxsize=8)
def _scenes(split: str, n: int, seed: int) -> tuple[Scene, ...]:
    rng = np.random.RandomState([_SPLIT_SEEDS[split], seed])
    heldout = split == "heldout"
    categories = _HELDOUT_CATEGORIES if heldout else CATEGORIES
    out = []
    for i in range(n):
        prompt, objects = _draw_prompt(categories[i % len(categories)], heldout, rng)
        xy = _place(objects, prompt, rng)
        caption = _caption(prompt, rng)
        prompt = Prompt(prompt.category, caption, prompt.groups, prompt.relation, prompt.region)
        objs = tuple(Obj(s, c, z, float(x), float(y)) for (s, c, z), (x, y) in zip(objects, xy))
        out.append(Scene(prompt, objs))
    return tuple(out)


def scenes(split: str, n: int | None = None, seed: int = 0) -> list[Scene]:
    """The first ``n`` scenes (default: the split's size) of ``split``'s stream ``seed``.

    Seed 0 is the split itself; other seeds draw new scenes by the same rules (train/validation/test
    captions never name a held-out composition). The first ``n`` scenes of a stream do not depend on ``n``.
    """
    _check_split(split)
    n = SPLIT_SIZES[split] if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"shapes: n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DataError(f"shapes: seed must be a non-negative integer, got {seed!r}")
    return list(_scenes(split, n, seed))


def prompts(split: str, n: int | None = None, seed: int = 0) -> list[Prompt]:
    """Evaluation prompts: those of :func:`scenes` (``prompts("test", 500)``: the first 500 test images')."""
    return [s.prompt for s in scenes(split, n, seed)]


# ------------------------------------------------------------------------------------ render


def _box_px(side: float, image_size: int) -> int:
    """An odd number of pixels, so that circles and triangle apexes sit on a pixel centre."""
    return 2 * int(side * image_size / 2) + 1


def render(scenes: list[Scene], image_size: int = 32, chunk: int = 2048) -> np.ndarray:
    """``(N, image_size, image_size, 3)`` uint8 images of ``scenes``: pure colours on black, no anti-aliasing."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise DataError(f"shapes: image size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}")
    S, n, k = image_size, len(scenes), max((len(s.objects) for s in scenes), default=0)
    # (N, k) per-object tables; slots past a scene's objects have side 0 and draw nothing.
    shape = np.zeros((n, k), dtype=np.int64)
    rgb = np.zeros((n, k, 3), dtype=np.uint8)
    side = np.zeros((n, k), dtype=np.int64)
    top = np.zeros((n, k), dtype=np.int64)
    left = np.zeros((n, k), dtype=np.int64)
    for i, s in enumerate(scenes):
        for j, o in enumerate(s.objects):
            e = _box_px(SIZES[o.size], S)
            shape[i, j], rgb[i, j], side[i, j] = SHAPES.index(o.shape), COLOURS[o.colour], e
            top[i, j], left[i, j] = int(np.floor(o.y * S - e / 2 + 0.5)), int(np.floor(o.x * S - e / 2 + 0.5))
    out = np.zeros((n, S, S, 3), dtype=np.uint8)
    px = np.arange(S, dtype=np.float32) + 0.5  # pixel centres
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        for j in range(k):
            e = side[a:b, j, None, None].astype(np.float32)  # (B, 1, 1)
            v = px[None, :, None] - top[a:b, j, None, None]  # (B, S, 1): pixel centre in box coordinates
            u = px[None, None, :] - left[a:b, j, None, None]  # (B, 1, S)
            inside = (u >= 0) & (u < e) & (v >= 0) & (v < e)
            du, dv = u - e / 2, v - e / 2
            circle = du * du + dv * dv <= (e / 2) ** 2
            triangle = np.abs(du) <= v / 2  # apex at the top centre, base on the bottom row
            kind = shape[a:b, j, None, None]
            mask = inside & np.where(kind == 0, circle, np.where(kind == 1, True, triangle))  # (B, S, S)
            out[a:b][mask] = np.broadcast_to(rgb[a:b, j, None, None, :], (b - a, S, S, 3))[mask]
    return out


# -------------------------------------------------------------------------------- data set


def load_shapes(split: str, image_size: int | None = None,
                n: int | None = None) -> tuple[torch.Tensor, torch.Tensor, tuple, tuple]:
    """``(images (N, 3, S, S) uint8, labels (N,) int64 category ids, CATEGORIES, captions)`` of ``split``.

    ``n``: its first ``n`` scenes (default: the split's size). More than that extend the split with new
    scenes drawn by the same rules (captions still never name a held-out composition): a long run need not
    see each scene many times over (20,000 scenes overfit a raster model after ~3,000 steps of 64)."""
    chosen = scenes(split, n)
    images = render(chosen, 32 if image_size is None else image_size)
    labels = torch.tensor([CATEGORIES.index(s.prompt.category) for s in chosen], dtype=torch.int64)
    captions = tuple(s.prompt.caption for s in chosen)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels, CATEGORIES, captions
