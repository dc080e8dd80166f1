"""Validation ShapesEval along a training run: does a longer run still help, or does it overfit?

    python benchmarks/t2i_curve.py runs/t2i/raster-shapes-200k/snapshots/step-*      # copies of its checkpoints

Each folder is a generator checkpoint (``config.json``, ``model.safetensors`` and its ``tokenizer``) saved
along one run; each is scored by ShapesEval overall on the first ``--n`` validation prompts (seed 1, the
prompts of ``t2i_shapes.py``'s CFG sweep) at guidance ``--cfg`` and ``--temperature``, in the order of their
training step. Writes a markdown table to stdout and JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from argen.data.shapes import prompts
from argen.evaluation.evaluate import shapes_metrics
from argen.images import to_uint8
from argen.pipeline import Pipeline


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="checkpoint folders of one run (any order)")
    p.add_argument("--n", type=int, default=200, help="validation prompts (default 200)")
    p.add_argument("--cfg", type=float, default=1.0, help="guidance weight (default 1)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="JSON file to write")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    specs = prompts("validation", args.n)
    rows = []
    for ckpt in args.checkpoints:
        pipe = Pipeline.from_pretrained(ckpt)
        images = to_uint8(pipe(prompts=[s.caption for s in specs], seed=1, batch_size=250, cfg=args.cfg,
                               temperature=args.temperature))
        metrics = shapes_metrics(images, specs)
        meta = pipe.record.meta
        rows.append({"checkpoint": ckpt, "step": meta.get("step"), "train_loss": meta.get("metrics", {}).get("loss"),
                     "validation_shapes_eval": metrics["shapes_eval_overall"]})
        print(f"{ckpt}: step {rows[-1]['step']}, validation ShapesEval {metrics['shapes_eval_overall']:.3f}",
              flush=True)
    rows.sort(key=lambda r: r["step"] or 0)
    print(f"\n| step | train loss | validation ShapesEval (w = {args.cfg:g}, temperature {args.temperature:g}, "
          f"{args.n} prompts) |\n|---|---|---|")
    for r in rows:
        loss = f"{r['train_loss']:.3f}" if r["train_loss"] is not None else "-"
        print(f"| {r['step']} | {loss} | {r['validation_shapes_eval']:.3f} |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
