"""Every family on Fashion-MNIST under one training budget, judged by the same metrics.

    python benchmarks/compare_families.py --sweep            # runs/<preset> for every -fmnist generator preset
    python benchmarks/compare_families.py --sweep --checkpoints runs/nar-fmnist argen/assets/models/fmnist-raster

1. (``--sweep``) per family, guidance weight and temperature (and HMAR's refinement steps) are
   chosen on a *validation* set (the last 5,000 training images, which the reference classifier
   saw but the comparison does not use for its figures): the setting with the lowest FD against
   them over ``--sweep-n`` samples wins. Without ``--sweep`` each checkpoint's preset sampler is used.
2. With that setting: ``--n`` samples (classes balanced, seed 0) against the real *test*
   split: FD-fmnist, KID, precision, recall, class accuracy, exact bits per token (raster,
   VAR, NAR), forward passes per image, seconds per image at batch 1 and 64 and peak memory at
   batch 64 (``argen bench``), with each model's training budget (optimizer steps x batch, wall
   seconds) from its checkpoint.
3. Writes the markdown table to stdout and ``--out``/compare.json and a quality-vs-speed plot
   ``--out``/compare.svg (FD-fmnist against seconds per image at batch 64, log x axis).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import numpy as np
import torch

from argen.data import load_dataset
from argen.evaluation.bench import bench
from argen.evaluation.classifier import load_reference_classifier
from argen.evaluation.evaluate import bits_per_token, evaluate_samples, real_floor
from argen.evaluation.metrics import features_of, frechet_distance_from_features
from argen.images import to_uint8
from argen.pipeline import Pipeline

FAMILIES = ["var-fmnist", "raster-fmnist", "maskgit-fmnist", "mar-fmnist", "mar-flow-fmnist", "nar-fmnist",
            "hmar-fmnist", "xar-fmnist"]
SWEEP = {"cfg": (0.0, 0.5, 1.0, 2.0), "temperature": (0.9, 1.0)}
FAMILY_SWEEP = {"hmar": {"refine_steps": (1, 2, 4)}}  # a family's own knob, swept with the two above


def sample_u8(pipe: Pipeline, n: int, seed: int, **overrides) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(n) % pipe.num_classes
    return to_uint8(pipe(labels.tolist(), seed=seed, batch_size=250, **overrides)), labels


def sweep(pipe: Pipeline, n: int, val_f: torch.Tensor) -> tuple[dict, list]:
    clf = load_reference_classifier("fashion-mnist")
    tried = []
    grid = {**SWEEP, **FAMILY_SWEEP.get(pipe.generator.family, {})}
    for values in itertools.product(*grid.values()):
        setting = dict(zip(grid, values))
        images, _ = sample_u8(pipe, n, seed=1, **setting)
        fd = frechet_distance_from_features(features_of(clf, images), val_f)
        tried.append({**setting, "val_fd": fd})
        print("    " + " ".join(f"{k} {v:<4}" for k, v in setting.items()) + f" validation FD {fd:.2f}", flush=True)
    best = min(tried, key=lambda r: r["val_fd"])
    return {k: best[k] for k in grid}, tried


def svg_plot(rows: list[dict], path: Path, w: int = 520, h: int = 320) -> None:
    pts = [(r["s_per_image_64"], r["FD-fmnist"], r["name"]) for r in rows]
    xs = [math.log10(p[0]) for p in pts]
    ys = [p[1] for p in pts]
    x0, x1 = min(xs) - 0.2, max(xs) + 0.2
    y0, y1 = 0.0, max(ys) * 1.15
    sx = lambda x: 60 + (x - x0) / (x1 - x0) * (w - 90)
    sy = lambda y: h - 40 - (y - y0) / (y1 - y0) * (h - 70)
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
             f'font-size="12"><rect width="{w}" height="{h}" fill="white"/>'),
             f'<line x1="60" y1="{h - 40}" x2="{w - 20}" y2="{h - 40}" stroke="black"/>',
             f'<line x1="60" y1="30" x2="60" y2="{h - 40}" stroke="black"/>',
             f'<text x="{w / 2 - 110}" y="{h - 8}">seconds per image at batch 64 (log scale)</text>',
             '<text x="8" y="20">FD-fmnist (lower is better)</text>']
    for e in range(math.floor(x0), math.ceil(x1) + 1):
        if x0 <= e <= x1:
            parts.append(f'<text x="{sx(e) - 14:.0f}" y="{h - 25}">1e{e}</text>')
    for frac in (0.0, 0.5, 1.0):
        y = y1 * frac
        parts.append(f'<text x="20" y="{sy(y) + 4:.0f}">{y:.1f}</text>')
    placed: list[tuple[float, float]] = []  # label positions so far: a label that would overlap one moves off
    for (x, y, name), lx in sorted(zip(pts, xs), key=lambda t: t[0][1], reverse=True):
        cx, cy = sx(lx), sy(y)
        free = [cy + 4 + d for d in (0, -13, 13, -26, 26, -39, 39)
                if not any(abs(cy + 4 + d - py) < 13 and abs(cx - px) < 70 for px, py in placed)]
        ty = free[0] if free else cy + 4
        placed.append((cx, ty))
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="#1f77b4"/>'
                     f'<text x="{cx + 8:.1f}" y="{ty:.1f}">{name}</text>')
    path.write_text("".join(parts) + "</svg>\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs")
    p.add_argument("--checkpoints", nargs="*", default=None)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--sweep", action="store_true", help="tune cfg and temperature on the validation set first")
    p.add_argument("--sweep-n", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1, help="timed sampling calls per batch size (median)")
    p.add_argument("--out", default="compare")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = args.checkpoints or [str(Path(args.runs) / f) for f in FAMILIES]
    val_f = None
    if args.sweep:
        train = load_dataset("fashion-mnist", "train")
        val_f = features_of(load_reference_classifier("fashion-mnist"), train.images[-5000:])
    rows = []
    for path in paths:
        if not (Path(path) / "config.json").is_file():
            print(f"{path}: no checkpoint, skipped")
            continue
        pipe = Pipeline.from_pretrained(path)
        meta = pipe.record.to_json()
        print(f"{path}:", flush=True)
        setting, tried = (sweep(pipe, args.sweep_n, val_f) if args.sweep else ({}, []))
        images, labels = sample_u8(pipe, args.n, seed=0, **setting)
        m = evaluate_samples(images, labels, "fashion-mnist")
        bench_rows = {r["batch_size"]: r for r in bench(pipe, batch_sizes=(1, 64), repeats=args.repeats, **setting)}
        speed = {bs: r["s_per_image"] for bs, r in bench_rows.items()}
        tc = meta["meta"].get("train_config", {})
        rows.append({"name": Path(path).name, "preset": meta.get("preset"), "family": pipe.generator.family,
                     "sampler": pipe.settings.replace(**setting).to_dict(), "sweep": tried,
                     **{k: m[k] for k in ("FD-fmnist", "KID-fmnist", "precision-fmnist", "recall-fmnist",
                                          "class_accuracy")},
                     "bits_per_token": bits_per_token(pipe, "fashion-mnist"),
                     "s_per_image_1": speed[1], "s_per_image_64": speed[64],
                     "passes_per_image": bench_rows[1]["forward_calls"], "head_calls": bench_rows[1].get("head_calls"),
                     "peak_mem_mb_64": bench_rows[64]["peak_mem_mb"],
                     "train_steps": meta["meta"].get("step"), "train_batch": tc.get("batch_size"),
                     "train_seconds": meta["meta"].get("train_seconds")})
    floor = real_floor("fashion-mnist", n=args.n)
    print(f"\nn = {args.n} samples per model, {args.threads} threads; floor (real train vs test, same n): "
          f"FD-fmnist {floor['FD-fmnist']:.2f}, KID {floor['KID-fmnist']:.4f}, precision "
          f"{floor['precision-fmnist']:.3f}, recall {floor['recall-fmnist']:.3f}\n")
    print("| model | cfg / temp | FD-fmnist | KID | precision | recall | class acc | bits/token | passes/img | s/img @1 | "
          "s/img @64 | peak MB @64 | training |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        bpt = f"{r['bits_per_token']:.2f}" if r["bits_per_token"] is not None else "-"
        print(f"| {r['name']} | {r['sampler']['cfg']} / {r['sampler']['temperature']} | {r['FD-fmnist']:.2f} | "
              f"{r['KID-fmnist']:.4f} | {r['precision-fmnist']:.3f} | {r['recall-fmnist']:.3f} | "
              f"{r['class_accuracy']:.1%} | {bpt} | {r['passes_per_image']} | {r['s_per_image_1']:.3f} | "
              f"{r['s_per_image_64']:.4f} | {r['peak_mem_mb_64']:.1f} | "
              f"{r['train_steps']} x {r['train_batch']}, {r['train_seconds']:.0f} s |")
    (out / "compare.json").write_text(json.dumps({"floor": floor, "rows": rows}, indent=2))
    if rows:
        svg_plot(rows, out / "compare.svg")


if __name__ == "__main__":
    main()
