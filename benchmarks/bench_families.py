"""Sampling speed of every family on its Fashion-MNIST preset: images/s at batch 1 and 64, forward
passes per image, peak memory; one markdown table and a JSON file.

    python benchmarks/bench_families.py                       # runs/{var,raster,maskgit,mar,mar-flow}-fmnist
    python benchmarks/bench_families.py --checkpoints runs/a runs/b --threads 2 --device cuda

Each checkpoint is sampled with its own sampler settings (``meta.sampler``), changed by ``--set`` where its
sampler has the field; a missing checkpoint is reported in one line and skipped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from argen.evaluation.bench import bench, format_table
from argen.pipeline import Pipeline

DEFAULT = ["var-fmnist", "raster-fmnist", "maskgit-fmnist", "mar-fmnist", "mar-flow-fmnist", "nar-fmnist", "hmar-fmnist",
           "xar-fmnist"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs", help="folder holding the <preset> checkpoints (default runs)")
    p.add_argument("--checkpoints", nargs="*", default=None, help="explicit checkpoint folders instead")
    p.add_argument("--batch-sizes", default="1,64")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default="bench_families.json")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="sampler setting for every model whose sampler has it, e.g. --set refine_steps=1 (JSON values)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    paths = args.checkpoints or [str(Path(args.runs) / name) for name in DEFAULT]
    rows = []
    for path in paths:
        if not (Path(path) / "config.json").is_file():
            print(f"{path}: no checkpoint, skipped")
            continue
        pipe = Pipeline.from_pretrained(path, args.device)
        fields = pipe.settings.to_dict()
        settings = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set) if k in fields}
        rows += bench(pipe, batch_sizes=tuple(int(b) for b in args.batch_sizes.split(",")), repeats=args.repeats,
                      **settings)
        print(format_table(rows[-len(args.batch_sizes.split(",")):]).splitlines()[-1], flush=True)
    print(f"\nthreads {args.threads}, device {args.device}\n" + format_table(rows))
    Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
