"""Text-to-image on the shapes scenes: every family under one training budget, scored by ShapesEval.

    python benchmarks/t2i_shapes.py                                   # runs/t2i/<family>-shapes
    python benchmarks/t2i_shapes.py --checkpoints runs/t2i/raster-shapes runs/t2i/raster-shapes-minilm
    python benchmarks/t2i_shapes.py --checkpoints runs/t2i/var-shapes --update       # add one row to the JSON
    python benchmarks/t2i_shapes.py --checkpoints runs/t2i/raster-shapes --cfg 0,1,2 --temperature 1,0.8,0.6

Per checkpoint:

1. the tokenizer's ceiling: ShapesEval of its reconstructions of the real test images of the same prompts
   (what a perfect generator over its tokens could score), and of the real held-out images;
2. a sweep on the *validation* prompts (``--sweep-n`` of them, seed 1): ShapesEval overall for each
   guidance weight in ``--cfg`` and sampling temperature in ``--temperature``; the best pair is used for
   the figures below;
3. with those settings: ShapesEval overall and per category on the first ``--n`` *test* prompts (compositions
   training captions name) and on as many *held-out* compositions (never in a training caption), seed 0;
4. how often held-out colour prompts get the named shape, the named colour and both on one object (also at
   each weight of ``--binding-cfg``: does stronger guidance bind the new colour to the shape?);
5. FD-shapes of the test prompts' images against the real test scenes (``argen eval``'s feature space),
   forward passes and seconds per image at batch 64 (``argen bench``), and the training budget.

Writes the markdown tables to stdout and JSON to ``--out`` (default benchmarks/results/t2i_shapes.json);
``--grid FILE.png`` also draws the samples of ``GRID_PROMPTS`` of the best checkpoint measured in this call.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from argen.data.shapes import CATEGORIES, SPLIT_SIZES, VERSION, prompts, render, scenes
from argen.evaluation.bench import bench
from argen.evaluation.evaluate import sample_feature_metrics, shapes_eval_checkpoint, shapes_metrics
from argen.evaluation.shapes_eval import detect
from argen.images import grid_image, to_uint8
from argen.pipeline import Pipeline

FAMILIES = ("raster-shapes", "maskgit-shapes", "var-shapes", "mar-shapes", "raster-shapes-minilm")
GRID_PROMPTS = ("a red circle to the left of a blue square", "two green triangles", "a big yellow square",
                "a white circle above a magenta triangle", "three cyan circles", "a small red triangle",
                "a blue circle", "a circle above a triangle")  # all but the 1st, 2nd and 5th name held-out
# compositions: the yellow square, red triangle and blue circle pairs, the circle above a triangle


def tokenizer_ceiling(pipe: Pipeline, n: int, split: str = "test") -> dict[str, float]:
    """ShapesEval of the tokenizer's reconstructions of the first ``n`` real scenes of ``split``."""
    test = scenes(split, n)
    real = torch.from_numpy(render(test, pipe.tokenizer.config.image_size)).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        rec = torch.cat([pipe.tokenizer.decode(pipe.tokenizer.encode(x)) for x in real.split(250)])
    return shapes_metrics(to_uint8(rec), [s.prompt for s in test])


def heldout_binding(pipe: Pipeline, cfg: float, temperature: float, n: int = 250) -> dict[str, float]:
    """Held-out colour prompts ("a blue circle", a pair no training caption names): how often the image holds
    the named shape, the named colour, and one object of both: tells "draws the shape in a colour it has seen
    it in" apart from "cannot draw at all"."""
    specs = [p for p in prompts("heldout", SPLIT_SIZES["heldout"]) if p.category == "colors"][:n]
    found = detect(to_uint8(pipe(prompts=[p.caption for p in specs], seed=0, batch_size=250, cfg=cfg,
                                 temperature=temperature)))
    hits = {"shape": 0, "colour": 0, "both": 0}
    for spec, objects in zip(specs, found):
        g = spec.groups[0]
        hits["shape"] += any(o.shape == g.shape for o in objects)
        hits["colour"] += any(o.colour == g.colour for o in objects)
        hits["both"] += any(o.shape == g.shape and o.colour == g.colour for o in objects)
    return {k: v / len(specs) for k, v in hits.items()}


def cfg_sweep(pipe: Pipeline, weights: list[float], temperatures: list[float], n: int) -> list[dict]:
    """Validation ShapesEval for every guidance weight and sampling temperature."""
    specs = prompts("validation", n)
    rows = []
    for w in weights:
        for t in temperatures:
            images = to_uint8(pipe(prompts=[p.caption for p in specs], seed=1, batch_size=250, cfg=w, temperature=t))
            rows.append({"cfg": w, "temperature": t, **shapes_metrics(images, specs)})
            print(f"    cfg {w:<4} temperature {t:<4} validation ShapesEval {rows[-1]['shapes_eval_overall']:.3f}",
                  flush=True)
    return rows


def _version(row: dict) -> int:
    """The version of the scenes a row was measured on (rows written before it was recorded: 1)."""
    return row.get("data_version", 1)


def _label(row: dict) -> str:
    return f"{row['name']} (v{_version(row)})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", nargs="+", default=None, help="generator folders (default runs/t2i/<preset>)")
    p.add_argument("--n", type=int, default=500, help="test and held-out prompts each (default 500)")
    p.add_argument("--sweep-n", type=int, default=300, help="validation prompts per CFG weight (default 300)")
    p.add_argument("--cfg", default="0,1,2,3,4", help="guidance weights to sweep (argen's w; 0 = no guidance)")
    p.add_argument("--temperature", default="1", help="sampling temperatures to sweep with each weight (default 1)")
    p.add_argument("--binding-cfg", default="", help="also measure the held-out colour prompts at these guidance "
                                                     "weights (at the chosen temperature), e.g. 1,2,4,8")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/t2i_shapes.json")
    p.add_argument("--grid", default=None, help="also write the samples of GRID_PROMPTS of the best model measured "
                                                "in this call here")
    p.add_argument("--update", action="store_true",
                   help="keep the rows already in --out of other checkpoints, or of other versions of the scenes "
                        "(measure one new model, print all)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    checkpoints = args.checkpoints or [f"runs/t2i/{f}" for f in FAMILIES if Path(f"runs/t2i/{f}").is_dir()]
    weights = [float(x) for x in args.cfg.split(",")]
    temperatures = [float(x) for x in args.temperature.split(",")]
    binding_weights = [float(x) for x in args.binding_cfg.split(",") if x]
    rows = []
    for ckpt in checkpoints:
        pipe = Pipeline.from_pretrained(ckpt)
        meta = pipe.record.meta
        text = pipe.generator.config.text
        name = Path(ckpt).name
        print(f"{name}: {pipe.generator.family}, text encoder {text['kind']}", flush=True)
        ceiling = tokenizer_ceiling(pipe, args.n)
        # can its tokens draw what the held-out prompts ask for? (if not, no generator over them can)
        ceiling_heldout = tokenizer_ceiling(pipe, args.n, "heldout")
        sweep = cfg_sweep(pipe, weights, temperatures, args.sweep_n)
        chosen = max(sweep, key=lambda r: r["shapes_eval_overall"])
        best = {"cfg": chosen["cfg"], "temperature": chosen["temperature"]}
        t0 = time.time()
        metrics, images, _ = shapes_eval_checkpoint(pipe, n=args.n, seed=0, **best)
        fd = sample_feature_metrics(images[: args.n], "shapes")["FD-shapes"]  # the test prompts' images
        binding = heldout_binding(pipe, **best)
        by_cfg = {w: binding if w == best["cfg"] else heldout_binding(pipe, w, best["temperature"])
                  for w in binding_weights}
        speed = bench(pipe, batch_sizes=(64,), repeats=2, **best)[0]
        rows.append({"checkpoint": ckpt, "name": name, "data_version": VERSION, "family": pipe.generator.family,
                     "text_encoder": text["kind"],
                     "params": sum(t.numel() for t in pipe.generator.parameters()), **best, "sweep": sweep,
                     "tokenizer_ceiling": ceiling, "tokenizer_ceiling_heldout": ceiling_heldout, "fd_shapes": fd,
                     "heldout_binding": binding, **({"heldout_binding_by_cfg": by_cfg} if by_cfg else {}),
                     **{k: v for k, v in metrics.items() if k.startswith("shapes_eval")},
                     "passes_per_image": speed["forward_calls"], "s_per_image_64": speed["s_per_image"],
                     "train_steps": meta.get("step"), "train_batch": meta.get("train_config", {}).get("batch_size"),
                     "train_seconds": meta.get("eval", {}).get("train_seconds"), "eval_seconds": time.time() - t0})
        print(f"    test {metrics['shapes_eval_overall']:.3f}, held-out {metrics['shapes_eval_heldout_overall']:.3f} "
              f"(cfg {best['cfg']:g}, temperature {best['temperature']:g}); tokenizer ceiling "
              f"{ceiling['shapes_eval_overall']:.3f}, held-out {ceiling_heldout['shapes_eval_overall']:.3f}", flush=True)

    measured = list(rows)
    if args.update and Path(args.out).is_file():
        new = {(r["checkpoint"], VERSION) for r in rows}  # a row per checkpoint and version of the scenes
        rows = [r for r in json.loads(Path(args.out).read_text())
                if (r["checkpoint"], _version(r)) not in new] + rows
    cats = list(CATEGORIES)
    # rows kept by --update may come from version 1 of the scenes: other prompts, no held-out pair in any image
    print(f"\n| model | data | encoder | cfg | temperature | test overall | {' | '.join(cats)} | held-out overall "
          "| tokenizer ceiling (test / held-out) | FD-shapes | passes/img | s/img @64 |")
    print("|---|---|---|---|---|---|" + "---|" * len(cats) + "---|---|---|---|---|")
    for r in rows:  # rows kept by --update may predate the temperature sweep and the held-out ceiling
        per = " | ".join(f"{r.get('shapes_eval_' + c, float('nan')):.3f}" for c in cats)
        held_ceiling = r.get("tokenizer_ceiling_heldout", {}).get("shapes_eval_overall", float("nan"))
        print(f"| {r['name']} | v{_version(r)} | {r['text_encoder']} | {r['cfg']:g} | "
              f"{r.get('temperature', 1.0):g} | "
              f"**{r['shapes_eval_overall']:.3f}** | {per} | {r['shapes_eval_heldout_overall']:.3f} | "
              f"{r['tokenizer_ceiling']['shapes_eval_overall']:.3f} / {held_ceiling:.3f} | "
              f"{r['fd_shapes']:.2f} | {r['passes_per_image']} | {r['s_per_image_64']:.4f} |")
    print("\nHeld-out colour prompts (250, e.g. \"a blue circle\"): the named shape / colour / both present\n")
    print("| model | shape | colour | both |\n|---|---|---|---|")
    for r in rows:
        b = r.get("heldout_binding")
        if b:
            print(f"| {_label(r)} | {b['shape']:.2f} | {b['colour']:.2f} | {b['both']:.2f} |")
        for w, b in r.get("heldout_binding_by_cfg", {}).items():  # JSON keys are strings
            print(f"| {_label(r)}, w = {float(w):g} | {b['shape']:.2f} | {b['colour']:.2f} | {b['both']:.2f} |")
    print(f"\nCFG sweep (validation ShapesEval overall, {args.sweep_n} prompts):\n")
    print("| model | temperature | " + " | ".join(f"w={w:g}" for w in weights) + " |")
    print("|---|---|" + "---|" * len(weights))
    for r in rows:  # rows kept by --update may have swept other settings (and, before temperature, only w)
        by_tw = {(s.get("temperature", 1.0), s["cfg"]): f"{s['shapes_eval_overall']:.3f}" for s in r["sweep"]}
        for t in sorted({t for t, _ in by_tw}, reverse=True):
            print(f"| {_label(r)} | {t:g} | " + " | ".join(by_tw.get((t, w), "-") for w in weights) + " |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    if args.grid and measured:
        best_row = max(measured, key=lambda r: r["shapes_eval_overall"])
        pipe = Pipeline.from_pretrained(best_row["checkpoint"])
        per = 8
        images = to_uint8(pipe(prompts=[t for t in GRID_PROMPTS for _ in range(per)], seed=0, cfg=best_row["cfg"],
                               temperature=best_row.get("temperature", 1.0)))
        grid_image(images, nrow=per, scale=2).save(args.grid)
        print(f"wrote {args.grid}: {best_row['name']}, one row per prompt of GRID_PROMPTS")


if __name__ == "__main__":
    main()
