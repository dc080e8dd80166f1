"""Speculative and parallel raster decoding on a real tiny model: passes, seconds and quality.

    python benchmarks/speculative.py                      # fmnist-raster, n = 1000, seeds 0,1,2
    python benchmarks/speculative.py --parts quality      # the slow part alone (then --parts speed on a quiet machine)
    python benchmarks/speculative.py --quick              # n = 200, one seed, fewer settings

Three parts, each with the plain raster sampler rerun beside the others in the same run:

* speed: seconds per image at batch 1 (``--speed-images`` one-image calls per setting, the
  settings interleaved image by image so that a busy machine slows all of them alike) and at
  batch 64 (one call per repeat, interleaved the same way); forward passes per image counted
  with a hook on the first transformer block (the prefill included);
* quality: FD-fmnist and class accuracy of ``--n`` samples (classes balanced) per seed, for
  plain sampling over every seed (its spread is the noise the lossless samplers must stay in)
  and for each setting;
* lossy curves: ZipAR, LANTERN and GSD across their knobs (one seed), drawn with the lossless
  points in one SVG plot (``--plot``).

Writes ``--out`` (JSON) and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from argen.evaluation.evaluate import evaluate_samples, short_name
from argen.images import to_uint8
from argen.pipeline import Pipeline

# (sampler, settings, label); the first is the baseline
LOSSLESS = [
    ("raster", {}, "plain raster"),
    ("sjd", {"window": 16, "coupled": False}, "SJD W=16"),
    ("sjd", {"window": 16, "coupled": True}, "SJD W=16 coupled"),
    ("sjd", {"window": 8, "coupled": True}, "SJD W=8 coupled"),
    ("sjd", {"window": 4, "coupled": True}, "SJD W=4 coupled"),
]
LOSSY = ([("zipar", {"window": s}, f"ZipAR S={s}") for s in (5, 4, 3, 2, 1)]
         + [("lantern", {"window": 8, "coupled": True, "lantern_k": 16, "lantern_delta": d}, f"LANTERN d={d}")
            for d in (0.05, 0.1, 0.2, 0.4)]
         + [("gsd", {"window": 8, "coupled": True, "group_ranks": r, "group_dist": dist}, f"GSD r={r} dist={dist}")
            for r, dist in ((3, 0.3), (7, 0.3), (7, 0.5), (15, 1.0))])
QUICK_LOSSY = [LOSSY[i] for i in (1, 3, 6, 8, 11, 12)]


def count_passes(pipe: Pipeline) -> list[int]:
    calls = []
    hook = pipe.generator.layers[0].register_forward_hook(lambda *a: calls.append(1))
    return calls, hook


def speed(pipes: dict, settings: list, images: int, batch: int, repeats: int) -> dict:
    """label -> (s per image, passes per image) at ``batch``; settings interleaved call by call."""
    times = {label: [] for _, _, label in settings}
    passes = {label: [] for _, _, label in settings}
    classes = pipes["raster"].num_classes
    calls = images if batch == 1 else repeats
    for i in range(calls + 1):  # call 0 warms up
        labels = [(i + j) % classes for j in range(batch)]
        for name, kw, label in settings:
            pipe = pipes[name]
            seen, hook = count_passes(pipe)
            t0 = time.perf_counter()
            pipe.sample_tokens(labels, seed=1000 + i, **kw)
            dt = time.perf_counter() - t0
            hook.remove()
            if i:
                times[label].append(dt / batch)
                passes[label].append(len(seen))
    return {label: {"s_per_image": statistics.median(times[label]) if batch > 1 else statistics.mean(times[label]),
                    "passes_per_image": statistics.mean(passes[label])} for label in times}


def quality(pipe: Pipeline, n: int, seed: int, kw: dict) -> dict:
    labels = np.arange(n) % pipe.num_classes
    images = to_uint8(pipe(labels.tolist(), seed=seed, batch_size=250, **kw))
    data = pipe.record.meta["data"]
    m = evaluate_samples(images, labels, data, seed=seed)
    return {"fd": m[f"FD-{short_name(data)}"], "class_accuracy": m["class_accuracy"]}


def svg_plot(rows: list[dict], path: Path) -> None:
    """Four panels: passes and seconds per image at batch 1 (x) against FD and class accuracy (y), one
    colour per sampler, each sampler's settings joined by a line."""
    colours = {"raster": "#000000", "sjd": "#1f77b4", "zipar": "#d62728", "lantern": "#2ca02c", "gsd": "#9467bd"}
    W, H, pad = 420, 280, 55
    axes = {"passes_per_image": "forward passes / image (batch 1)", "s_per_image": "seconds / image (batch 1)",
            "fd": "FD-fmnist (lower is better)", "class_accuracy": "class accuracy"}
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{2 * H}" '
              'font-family="sans-serif" font-size="11">')]
    for panel, (xk, yk) in enumerate([(x, y) for y in ("fd", "class_accuracy") for x in ("passes_per_image",
                                                                                         "s_per_image")]):
        ox, oy = (panel % 2) * W, (panel // 2) * H
        xs, ys = [r[xk] for r in rows], [r[yk] for r in rows]
        x0, x1 = 0.0, max(xs) * 1.05
        y0, y1 = min(ys) - 0.05 * (max(ys) - min(ys)), max(ys) + 0.05 * (max(ys) - min(ys))

        def X(v, x0=x0, x1=x1, ox=ox):
            return ox + pad + (v - x0) / (x1 - x0) * (W - 1.5 * pad)

        def Y(v, y0=y0, y1=y1, oy=oy):
            return oy + H - pad - (v - y0) / (y1 - y0) * (H - 1.5 * pad)

        parts.append(f'<line x1="{X(x0)}" y1="{Y(y0)}" x2="{X(x1)}" y2="{Y(y0)}" stroke="#444"/>')
        parts.append(f'<line x1="{X(x0)}" y1="{Y(y0)}" x2="{X(x0)}" y2="{Y(y1)}" stroke="#444"/>')
        parts.append(f'<text x="{ox + W / 2}" y="{oy + H - 18}" text-anchor="middle">{axes[xk]}</text>')
        parts.append(f'<text x="{ox + 12}" y="{Y((y0 + y1) / 2)}" transform="rotate(-90 {ox + 12} '
                     f'{Y((y0 + y1) / 2)})" text-anchor="middle">{axes[yk]}</text>')
        for t in np.linspace(x0, x1, 5):
            parts.append(f'<text x="{X(t)}" y="{Y(y0) + 14}" text-anchor="middle">{t:.3g}</text>')
        for t in np.linspace(y0, y1, 5):
            parts.append(f'<text x="{X(x0) - 4}" y="{Y(t) + 4}" text-anchor="end">{t:.3g}</text>')
        for name, colour in colours.items():
            pts = sorted((r[xk], r[yk]) for r in rows if r["sampler"] == name)
            if len(pts) > 1:
                parts.append('<polyline fill="none" stroke="{}" points="{}"/>'.format(
                    colour, " ".join(f"{X(a):.1f},{Y(b):.1f}" for a, b in pts)))
            for a, b in pts:
                parts.append(f'<circle cx="{X(a):.1f}" cy="{Y(b):.1f}" r="3" fill="{colour}"/>')
        if panel == 0:
            for i, (name, colour) in enumerate(colours.items()):
                parts.append(f'<text x="{X(x1) - 50}" y="{Y(y1) + 14 * (i + 1)}" fill="{colour}">{name}</text>')
    parts.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n")


def report(speed_json: dict, quality_json: dict | None, plot: Path | None) -> None:
    """The markdown tables (and the plot) from the two parts' JSON files."""
    s1, s64 = speed_json["speed_batch_1"], speed_json["speed_batch_64"]
    ref1, ref64 = s1["plain raster"]["s_per_image"], s64["plain raster"]["s_per_image"]
    print(f"\nspeed: {speed_json['model']}, {speed_json['threads']} threads, batch 1 over "
          f"{speed_json['speed_images']} images, batch 64 median of {speed_json['speed_repeats']} calls")
    print("| sampler | passes / image @1 | tokens / pass @1 | s / image @1 | speed-up @1 | passes / call @64 | "
          "s / image @64 | speed-up @64 |")
    print("|---|---|---|---|---|---|---|---|")
    N = speed_json["tokens_per_image"]
    for label, b in s64.items():
        a = s1[label]
        print(f"| {label} | {a['passes_per_image']:.1f} | {N / a['passes_per_image']:.2f} | {a['s_per_image']:.4f} | "
              f"{ref1 / a['s_per_image']:.2f}x | {b['passes_per_image']:.1f} | {b['s_per_image']:.4f} | "
              f"{ref64 / b['s_per_image']:.2f}x |")
    if quality_json is None:
        return
    rows = quality_json["quality"]
    for r in rows:
        r.update(s1[r["label"]])
    plain = rows[0]["runs"]
    lo_fd, hi_fd = min(r["fd"] for r in plain), max(r["fd"] for r in plain)
    lo_acc, hi_acc = min(r["class_accuracy"] for r in plain), max(r["class_accuracy"] for r in plain)
    print(f"\nquality, n = {quality_json['n']} per run; plain sampling over seeds {quality_json['seeds']}: FD "
          f"{lo_fd:.2f}..{hi_fd:.2f}, class accuracy {lo_acc:.1%}..{hi_acc:.1%}")
    print("| sampler | lossy | passes / image @1 | s / image @1 | speed-up @1 | FD-fmnist (per seed) | "
          "class accuracy (per seed) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        fd = " / ".join(f"{x['fd']:.2f}" for x in r["runs"])
        acc = " / ".join(f"{x['class_accuracy']:.1%}" for x in r["runs"])
        print(f"| {r['label']} | {'yes' if r['lossy'] else 'no'} | {r['passes_per_image']:.1f} | "
              f"{r['s_per_image']:.4f} | {ref1 / r['s_per_image']:.2f}x | {fd} | {acc} |")
    if plot is not None:
        svg_plot(rows, plot)
        print(f"\nwrote {plot}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="fmnist-raster", help="a raster checkpoint folder or shipped model name")
    p.add_argument("--n", type=int, default=1000, help="samples per quality evaluation")
    p.add_argument("--seeds", default="0,1,2", help="seeds of the plain and lossless quality runs")
    p.add_argument("--speed-images", type=int, default=100, help="one-image calls per setting (batch 1)")
    p.add_argument("--speed-repeats", type=int, default=3, help="batch-64 calls per setting")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="n 200, one seed, 20 speed images, fewer lossy settings")
    p.add_argument("--parts", default="speed,quality",
                   help="speed, quality or both; each writes its JSON, the tables and plot need both")
    p.add_argument("--out", default="benchmarks/results/speculative", help="prefix of OUT_speed.json, OUT_quality.json")
    p.add_argument("--plot", default="docs/speculative.svg")
    args = p.parse_args()
    if args.quick:
        args.n, args.seeds, args.speed_images, args.speed_repeats = 200, "0", 20, 1
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    lossy = QUICK_LOSSY if args.quick else LOSSY
    pipes = {name: Pipeline.from_pretrained(args.model, sampler=name) for name in ("raster", "sjd", "zipar",
                                                                                   "lantern", "gsd")}
    speed_file, quality_file = Path(f"{args.out}_speed.json"), Path(f"{args.out}_quality.json")
    speed_file.parent.mkdir(parents=True, exist_ok=True)
    meta = {"model": args.model, "threads": args.threads, "torch": torch.__version__,
            "preset_sampler": pipes["raster"].settings.to_dict(),
            "tokens_per_image": pipes["raster"].generator.config.seq_len}
    if "speed" in args.parts:
        t0 = time.time()
        result = dict(meta, speed_images=args.speed_images, speed_repeats=args.speed_repeats,
                      speed_batch_1=speed(pipes, LOSSLESS + lossy, args.speed_images, 1, 0),
                      speed_batch_64=speed(pipes, LOSSLESS, 0, 64, args.speed_repeats))
        speed_file.write_text(json.dumps(result, indent=2))
        print(f"speed part: {time.time() - t0:.0f} s, wrote {speed_file}", flush=True)
    if "quality" in args.parts:
        rows = []
        for name, kw, label in LOSSLESS + lossy:
            runs = [quality(pipes[name], args.n, s, kw)
                    for s in (seeds if (name, kw, label) in LOSSLESS else seeds[:1])]
            rows.append({"label": label, "sampler": name, "settings": kw, "lossy": name in ("zipar", "lantern", "gsd"),
                         "runs": runs, "fd": statistics.mean(r["fd"] for r in runs),
                         "class_accuracy": statistics.mean(r["class_accuracy"] for r in runs)})
            print(f"{label}: FD {[round(r['fd'], 2) for r in runs]}, "
                  f"acc {[round(r['class_accuracy'], 3) for r in runs]}", flush=True)
        quality_file.write_text(json.dumps(dict(meta, n=args.n, seeds=seeds, quality=rows), indent=2))
        print(f"wrote {quality_file}")
    if speed_file.is_file():
        report(json.loads(speed_file.read_text()),
               json.loads(quality_file.read_text()) if quality_file.is_file() else None,
               Path(args.plot) if quality_file.is_file() else None)


if __name__ == "__main__":
    main()
