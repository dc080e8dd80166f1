"""Sampling speed of every family on its Fashion-MNIST preset: images/s at batch 1 and 64, forward
passes per image, peak memory; one markdown table and a JSON file.

    python benchmarks/bench_families.py                       # runs/{var,raster,maskgit,mar,mar-flow}-fmnist
    python benchmarks/bench_families.py --checkpoints runs/a runs/b --threads 2 --device cuda

Each checkpoint is sampled with its own preset sampler settings (``meta.sampler``); a missing
checkpoint is reported in one line and skipped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from argen.evaluation.bench import bench, format_table

DEFAULT = ["var-fmnist", "raster-fmnist", "maskgit-fmnist", "mar-fmnist", "mar-flow-fmnist"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs", help="folder holding the <preset> checkpoints (default runs)")
    p.add_argument("--checkpoints", nargs="*", default=None, help="explicit checkpoint folders instead")
    p.add_argument("--batch-sizes", default="1,64")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default="bench_families.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    paths = args.checkpoints or [str(Path(args.runs) / name) for name in DEFAULT]
    rows = []
    for path in paths:
        if not (Path(path) / "config.json").is_file():
            print(f"{path}: no checkpoint, skipped")
            continue
        rows += bench(path, batch_sizes=tuple(int(b) for b in args.batch_sizes.split(",")), repeats=args.repeats,
                      device=args.device)
        print(format_table(rows[-len(args.batch_sizes.split(",")):]).splitlines()[-1], flush=True)
    print(f"\nthreads {args.threads}, device {args.device}\n" + format_table(rows))
    Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
