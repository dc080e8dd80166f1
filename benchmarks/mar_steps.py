"""MAR sample quality and speed against head steps and AR steps.

    python benchmarks/mar_steps.py runs/mar-digits runs/mar-flow-digits

For each checkpoint: one row per head-step count at the preset's AR steps, then one row per
AR-step count at the preset's head steps. Each row samples ``--n`` images (classes balanced,
seed 0) at batch ``--batch-size`` and reports class accuracy and FD in the reference
classifier's feature space against the real test split, and seconds per image (wall time of
the whole sampling call over n). AR steps above the number of tokens N run as N steps
(one token per step, the most a map of N tokens can take).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from argen.evaluation.evaluate import evaluate_samples, short_name
from argen.images import to_uint8
from argen.pipeline import Pipeline

HEAD_STEPS = {"diffusion": (100, 50, 25, 10, 5), "flow": (8, 4, 2, 1)}
AR_STEPS = (64, 16, 8, 4)


def row(pipe: Pipeline, data: str, n: int, batch_size: int, **overrides) -> dict:
    labels = np.arange(n) % pipe.num_classes
    t0 = time.time()
    images = to_uint8(pipe(labels.tolist(), seed=0, batch_size=batch_size, **overrides))
    dt = (time.time() - t0) / n
    m = evaluate_samples(images, labels, data)
    return {"class_accuracy": m["class_accuracy"], "fd": m[f"FD-{short_name(data)}"], "s_per_image": dt}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for path in args.checkpoints:
        pipe = Pipeline.from_pretrained(path)
        data = pipe.record.meta["data"]
        head = pipe.generator.config.head
        N = pipe.generator.config.num_tokens
        s = pipe.settings
        print(f"\n{path} ({head} head, {N} tokens, preset sampler {s.to_dict()}), n={args.n}, "
              f"batch {args.batch_size}, {args.threads} threads")
        print(f"| AR steps | head steps | class accuracy | FD-{short_name(data)} | s / image |")
        print("|---|---|---|---|---|")
        ar_steps = dict.fromkeys(min(a, N) for a in AR_STEPS if min(a, N) != s.ar_steps)  # ordered, no repeats
        grid = [(s.ar_steps, h) for h in HEAD_STEPS[head]] + [(a, s.head_steps) for a in ar_steps]
        for ar, hs in grid:
            r = row(pipe, data, args.n, args.batch_size, ar_steps=ar, head_steps=hs)
            print(f"| {ar} | {hs} | {r['class_accuracy']:.1%} | {r['fd']:.2f} | {r['s_per_image']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
