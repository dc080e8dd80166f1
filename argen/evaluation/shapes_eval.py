"""ShapesEval: GenEval's six categories, scored exactly on images of the ``shapes`` data set, from pixels alone.

No learned parts. :func:`detect` reads the objects of an image:

1. **Colour.** A pixel is foreground when its brightest channel is above ``min_value``. Its colour is the
   palette colour (``argen.data.shapes.COLOURS``) nearest to its chromaticity (the pixel divided by that
   brightness: blur against the black background dims a colour but keeps its chromaticity), if within
   ``max_chroma_dist``; other foreground pixels are unreadable and ignored.
2. **Objects.** Per colour, holes are filled (noise specks inside an object), 8-connected components are
   labelled, and components under ``min_area`` of a small triangle's area are dropped as noise.
3. **Geometry.** A component is a triangle when the skewness of its pixels' rows is below ``triangle_skew``
   (the rows of a triangle with its apex up pile up at its base: skewness -0.6, that of a circle or square
   is 0; blur keeps the sign); else a square when its corners stick out: its pixels' fourth moment along the
   diagonals exceeds that along the axes by more than ``square_corners`` times the squared second moment
   (0.6 for a square, 0 for a disc; an isotropic blur adds the same to both, so the difference stays),
   else a circle. A box longer than ``max_aspect`` times its width (two objects
   merged, a smear) is no shape. Size: big when the side of its shape at its area (``sqrt(area / fill)``,
   fill pi/4, 1, 1/2) is over the mean of the two sizes. Position: its centroid.

:func:`judge` scores one prompt by GenEval's rule that every part must be right, and more strictly than
GenEval: the image must hold exactly the objects the prompt names, nothing else. Each named group needs
exactly its count of objects of its shape (and colour and size where named); a relation ``a <rel> b``
needs the centroids ``relation_margin`` of the side apart along its axis; a region ("at the top") needs
the centroid in that half. :func:`score` gives the accuracy per category and overall = their mean (over
the categories present), plus each prompt's verdict and the reason for a miss.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from argen.config import check
from argen.data.shapes import CATEGORIES, COLOURS, SHAPES, SIZES, Group, Prompt, parse_prompt, phrase
from argen.errors import ArgenError

__all__ = ["Detection", "ShapesEvalConfig", "detect", "judge", "score"]

_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32) / 255  # (K, 3), chromaticities (max channel 1)
_NAMES = tuple(COLOURS)
_FILL = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}  # share of its box a shape covers
_SMALL_TRIANGLE_AREA = _FILL["triangle"] * min(SIZES.values()) ** 2  # fraction of the image area
_PLANE8 = np.zeros((3, 3, 3, 3), dtype=bool)
_PLANE8[1, 1] = True  # connect within each (H, W) plane of a (N, K, H, W) stack, never across images/colours
_PLANE4 = np.zeros((3, 3, 3, 3), dtype=bool)
_PLANE4[1, 1] = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class ShapesEvalConfig:
    """Thresholds of :func:`detect` and :func:`judge` (module docstring); the defaults fit ``shapes`` renders."""

    min_value: float = 0.5
    max_chroma_dist: float = 0.45
    min_area: float = 0.3
    triangle_skew: float = -0.15
    square_corners: float = 0.15
    max_aspect: float = 1.5
    relation_margin: float = 0.02

    def __post_init__(self) -> None:
        for name in ("min_value", "max_chroma_dist", "min_area", "square_corners"):
            value = getattr(self, name)
            check(0 < value < 1, f"ShapesEvalConfig.{name} must be in (0, 1), got {value!r}")
        check(
            -1 < self.triangle_skew < 0,
            f"ShapesEvalConfig.triangle_skew must be in (-1, 0), got {self.triangle_skew!r}",
        )
        check(self.max_aspect >= 1, f"ShapesEvalConfig.max_aspect must be >= 1, got {self.max_aspect!r}")
        check(
            0 <= self.relation_margin < 1,
            f"ShapesEvalConfig.relation_margin must be in [0, 1), got {self.relation_margin!r}",
        )


@dataclass(frozen=True)
class Detection:
    """One object read from an image; ``shape`` and ``size`` are None for a component of no known shape."""

    shape: str | None
    colour: str
    size: str | None
    x: float  # centroid, fraction of the side (x right, y down)
    y: float
    area: int  # pixels


def _check_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ArgenError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {tuple(images.shape)}")
    return images


def detect(images_NHWC, config: ShapesEvalConfig | None = None, chunk: int = 1024) -> list[list[Detection]]:
    """The objects of each image of ``images_NHWC`` (uint8 RGB), as :class:`Detection` lists."""
    images, config = _check_images(images_NHWC), config or ShapesEvalConfig()
    out: list[list[Detection]] = []
    for a in range(0, len(images), chunk):
        out += _detect_chunk(images[a : a + chunk], config)
    return out


def _detect_chunk(images: np.ndarray, config: ShapesEvalConfig) -> list[list[Detection]]:
    N, H, W, _ = images.shape
    p = images.astype(np.float32) / 255
    value = p.max(-1)  # (N, H, W)
    chroma = p / np.maximum(value, 1e-6)[..., None]
    dist = np.linalg.norm(chroma[..., None, :] - _PALETTE, axis=-1)  # (N, H, W, K)
    nearest = dist.argmin(-1)
    readable = (value > config.min_value) & (dist.min(-1) < config.max_chroma_dist)
    masks = readable[:, None] & (nearest[:, None] == np.arange(len(_PALETTE))[None, :, None, None])  # (N, K, H, W)
    masks = ndimage.binary_fill_holes(masks, structure=_PLANE4)
    labels, n = ndimage.label(masks, structure=_PLANE8)
    if n == 0:
        return [[] for _ in range(N)]

    where = np.nonzero(labels)  # per foreground pixel: image, colour, row, column
    lab = labels[where] - 1
    area = np.bincount(lab, minlength=n)
    image, colour = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    image[lab], colour[lab] = where[0], where[1]
    row, col = where[2] + 0.5, where[3] + 0.5  # pixel centres
    cy, cx = np.bincount(lab, row, n) / area, np.bincount(lab, col, n) / area
    boxes = ndimage.find_objects(labels)  # per label: slices over (N, K, H, W)
    h = np.array([b[2].stop - b[2].start for b in boxes])
    w = np.array([b[3].stop - b[3].start for b in boxes])
    dy, dx = row - cy[lab], col - cx[lab]  # per pixel, from its component's centroid

    def mean(per_pixel: np.ndarray) -> np.ndarray:  # (n,): the mean over each component
        return np.bincount(lab, per_pixel, n) / area

    skew = mean(dy**3) / np.maximum(mean(dy**2), 1e-6) ** 1.5
    u, v = (dx + dy) / math.sqrt(2), (dx - dy) / math.sqrt(2)  # the diagonals
    m2 = np.maximum(mean(dx**2 + dy**2) / 2, 1e-6)
    corners = (mean(u**4 + v**4) - mean(dx**4 + dy**4)) / 2 / m2**2

    aspect = np.maximum(h, w) / np.minimum(h, w)
    circle, square, triangle = (SHAPES.index(s) for s in ("circle", "square", "triangle"))
    shape = np.where(skew < config.triangle_skew, triangle, np.where(corners > config.square_corners, square, circle))
    shape = np.where(aspect > config.max_aspect, -1, shape)  # -1: no known shape
    nominal_fill = np.array([_FILL[s] for s in SHAPES])[np.maximum(shape, 0)]
    side = np.sqrt(area / nominal_fill) / H  # the side of the shape's box at this area, fraction of the image
    big = side > sum(SIZES.values()) / 2
    keep = area >= config.min_area * _SMALL_TRIANGLE_AREA * H * W

    out: list[list[Detection]] = [[] for _ in range(N)]
    for i in np.flatnonzero(keep):
        known = shape[i] >= 0
        out[image[i]].append(
            Detection(
                shape=SHAPES[shape[i]] if known else None,
                colour=_NAMES[colour[i]],
                size=("big" if big[i] else "small") if known else None,
                x=float(cx[i] / W),
                y=float(cy[i] / H),
                area=int(area[i]),
            )
        )
    return out


def _matches(o: Detection, g: Group) -> bool:
    return o.shape == g.shape and g.colour in (None, o.colour) and g.size in (None, o.size)


def _relation_holds(a: Detection, b: Detection, relation: str, margin: float) -> bool:
    offset = {"left of": b.x - a.x, "right of": a.x - b.x, "above": b.y - a.y, "below": a.y - b.y}[relation]
    return offset > margin


def _region_holds(o: Detection, region: str) -> bool:
    return {"left": o.x < 0.5, "right": o.x > 0.5, "top": o.y < 0.5, "bottom": o.y > 0.5}[region]


def judge(prompt: Prompt, objects: Sequence[Detection], config: ShapesEvalConfig | None = None) -> tuple[bool, str]:
    """``(correct, reason)``: whether ``objects`` are exactly what ``prompt`` asks for, and if not, why."""
    config = config or ShapesEvalConfig()
    groups = prompt.groups
    want = sum(g.count for g in groups)
    if len(objects) != want:
        return False, f"found {len(objects)} objects, want {want}"
    for g in groups:
        found = sum(_matches(o, g) for o in objects)
        if found < g.count:
            return False, f"want {phrase(g)}, found {found}"
    reason = "no one-to-one match of objects to what the prompt names"
    # Few objects (<= 8, checked above): try every assignment of objects to groups.
    for assign in itertools.product(range(len(groups)), repeat=len(objects)):
        if any(not _matches(o, groups[a]) for o, a in zip(objects, assign)):
            continue
        if [assign.count(j) for j in range(len(groups))] != [g.count for g in groups]:
            continue
        members = [[o for o, a in zip(objects, assign) if a == j] for j in range(len(groups))]
        if prompt.relation is not None and not all(
            _relation_holds(a, b, prompt.relation, config.relation_margin) for a in members[0] for b in members[1]
        ):
            reason = f"{phrase(groups[0])} is not {prompt.relation} {phrase(groups[1])}"
            continue
        if prompt.region is not None and not all(_region_holds(o, prompt.region) for o in members[0]):
            reason = f"{phrase(groups[0])} is not in the {prompt.region} half"
            continue
        return True, "ok"
    return False, reason


def score(images_NHWC, specs: Sequence[Prompt | str], config: ShapesEvalConfig | None = None) -> dict:
    """ShapesEval of ``images_NHWC`` (uint8 RGB) against ``specs`` (one :class:`Prompt` or caption per image).

    Returns ``{"overall": mean over the categories present, <category>: accuracy for each category present,
    "n": number of prompts, "per_prompt": [{"caption", "category", "correct", "reason"}, ...]}``.
    """
    images = _check_images(images_NHWC)
    prompts = [s if isinstance(s, Prompt) else parse_prompt(s) for s in specs]
    if len(prompts) != len(images):
        raise ArgenError(f"specs: {len(prompts)} prompts for {len(images)} images; want one per image")
    config = config or ShapesEvalConfig()
    per_prompt = []
    for prompt, objects in zip(prompts, detect(images, config)):
        correct, reason = judge(prompt, objects, config)
        per_prompt.append(
            {"caption": prompt.caption, "category": prompt.category, "correct": correct, "reason": reason}
        )
    result: dict = {}
    for category in CATEGORIES:
        verdicts = [r["correct"] for r in per_prompt if r["category"] == category]
        if verdicts:
            result[category] = float(np.mean(verdicts))
    result = {"overall": float(np.mean(list(result.values()))) if result else float("nan"), **result}
    return {**result, "n": len(per_prompt), "per_prompt": per_prompt}
