"""Peak memory of one sampling call, each model in a fresh process.

    python benchmarks/sampling_memory.py --batch-size 256 argen/assets/models/fmnist-var runs/hmar-fmnist
    python benchmarks/sampling_memory.py --device cuda ...        # torch.cuda.max_memory_allocated instead

Why a fresh process: ``argen bench`` measures the growth of the resident set during a call that
follows a warm-up, and by then the C allocator keeps the memory of the warm-up's tensors, so the
growth of small CPU models reads 0 MB. Here each model is loaded in a new interpreter, its resident
set read, one call made (with its preset sampler, or the settings given with ``--set``), and the
peak resident set (``ru_maxrss``) read after: the growth is what sampling itself needed (tokenizer
decode included). On CUDA
the allocator's own peak over the call is exact. One JSON row per model is printed and written to
``--json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[3]))
from argen.pipeline import Pipeline
path, batch, device, settings = sys.argv[1], int(sys.argv[2]), sys.argv[4], json.loads(sys.argv[5])
pipe = Pipeline.from_pretrained(path, device)
settings = {k: v for k, v in settings.items() if k in pipe.settings.to_dict()}  # what this sampler takes
labels = [i % pipe.num_classes for i in range(batch)]
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
before = rss_mb()
if device.startswith("cuda"):
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
t0 = time.perf_counter()
pipe(labels, seed=0, batch_size=batch, **settings)
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB -> MB (Linux)
row = {"checkpoint": path, "family": pipe.generator.family, "batch_size": batch, "device": device,
       "settings": pipe.settings.replace(**settings).to_dict(), "seconds": seconds,
       "peak_growth_mb": (torch.cuda.max_memory_allocated() - base) / 2**20 if device.startswith("cuda")
       else peak - before}
print(json.dumps(row))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="sampler setting for every model whose sampler has it, e.g. --set cfg=2.0 (JSON values)")
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per model (the median is reported)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    settings = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    rows = []
    for path in args.checkpoints:
        runs = []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, "-c", CHILD, path, str(args.batch_size), str(args.threads),
                                  args.device, json.dumps(settings)], capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        runs.sort(key=lambda r: r["peak_growth_mb"])
        row = {**runs[len(runs) // 2], "peak_growth_mb_runs": [round(r["peak_growth_mb"], 1) for r in runs]}
        rows.append(row)
        print(f"{Path(path).name:<20} {row['family']:<8} batch {args.batch_size}: peak growth "
              f"{row['peak_growth_mb']:.1f} MB (runs {row['peak_growth_mb_runs']}), {row['seconds']:.2f} s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
