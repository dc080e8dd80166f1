"""Peak memory per rank of training with FSDP against DDP (2 ranks, CPU, gloo).

    python benchmarks/fsdp_memory.py                                   # llamagen-gpt-xl at depth 2
    python benchmarks/fsdp_memory.py --preset llamagen-gpt-xxl --set depth=4 --steps 4

A large official preset is built at reduced depth (``--set depth=2``: its full width, vocabulary and
embeddings, two blocks) and trained a few steps on random tokens by each strategy under
``torchrun --nproc_per_node 2``, each in fresh processes, with what ``argen train`` uses:
``argen.training.fsdp.shard_model`` and its gradient clipping for FSDP, DDP around the trainer's loss
module otherwise, AdamW over the trainer's parameter groups.

Per rank it reports the bytes of the training state each rank keeps (its parameters, gradients and
AdamW moments: local shards under FSDP), and the resident set: after start-up (torch imported, before
the model is built), and its peak (``ru_maxrss``) over build, sharding and the steps. The peak includes
one whole fp32 copy of the weights while the model is built on every rank before ``fully_shard``
shards it (argen's models initialise their weights in their constructors). One table is printed; the
rows go to ``benchmarks/results/fsdp_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "fsdp_memory.json"

WORKER = r"""
import json, os, resource, sys, time

import torch
import torch.distributed as tdist
from torch import nn

args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
tdist.init_process_group("gloo")

import argen
from argen.training import dist, fsdp
from argen.training.trainer import _LossForward, _param_groups


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Tokens(nn.Module):  # the trainer's GeneratorObjective with the tokenizer already run: batches are tokens

    def __init__(self, generator):
        super().__init__()
        self.generator = generator

    def loss(self, batch):
        return self.generator.loss(*batch)


rank, world = dist.rank(), dist.world_size()
start_mb = rss_mb()
torch.manual_seed(0)
model = argen.build(args["preset"], **args["set"])
params = sum(p.numel() for p in model.parameters())
cpu = torch.device("cpu")
if args["strategy"] == "fsdp":
    fsdp.shard_model(model, cpu)
    runner = _LossForward(Tokens(model))
    clip = fsdp.clip_grad_norm_
else:
    runner = nn.parallel.DistributedDataParallel(_LossForward(Tokens(model)))
    clip = torch.nn.utils.clip_grad_norm_
opt = torch.optim.AdamW(_param_groups(model, 0.05), lr=1e-4, betas=(0.9, 0.95))
c = model.config
local_b = args["batch_size"] // world
seconds = []
for step in range(args["steps"]):
    g = torch.Generator().manual_seed(step)
    idx = torch.randint(c.vocab_size, (args["batch_size"], c.grid[0] * c.grid[1]), generator=g)
    labels = torch.randint(c.num_classes, (args["batch_size"],), generator=g)
    mine = slice(rank * local_b, (rank + 1) * local_b)
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss, _ = runner(({"idx_BN": idx[mine]}, labels[mine]))
    loss.backward()
    clip(model.parameters(), 1.0)
    opt.step()
    seconds.append(time.perf_counter() - t0)


def nbytes(tensors):
    return sum(fsdp.local(t).numel() * t.element_size() for t in tensors if t is not None)


state = {"params": nbytes(model.parameters()), "grads": nbytes(p.grad for p in model.parameters()),
         "adamw": nbytes(v for s in opt.state.values() for v in s.values() if v.dim() > 0)}
row = {"strategy": args["strategy"], "rank": rank, "params_total_m": params / 1e6,
       **{f"{k}_mb": v / 2**20 for k, v in state.items()}, "state_mb": sum(state.values()) / 2**20,
       "rss_start_mb": start_mb, "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
       "s_per_step": sorted(seconds[1:] or seconds)[len(seconds[1:] or seconds) // 2]}
rows = [None] * world
tdist.all_gather_object(rows, row)
if rank == 0:
    print("ROWS " + json.dumps(rows), flush=True)
tdist.destroy_process_group()
# DDP and the FSDP device mesh keep the gloo group alive past destroy_process_group; its threads then meet
# the interpreter's exit, which with torch 2.13 aborts now and then ("terminate called without an active
# exception", either strategy). The rows are out: leave without running the C++ destructors.
os._exit(0)
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(strategy: str, args, worker: Path) -> list[dict]:
    """One torchrun launch of ``WORKER`` (2 fresh processes); the rows of both ranks."""
    spec = {"strategy": strategy, "preset": args.preset, "steps": args.steps, "batch_size": args.batch_size,
            "threads": args.threads, "set": {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.set)}}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(worker), json.dumps(spec)]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    if r.returncode != 0:
        sys.exit(f"{strategy}: exit code {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    line = next(x for x in r.stdout.splitlines() if x.startswith("ROWS "))
    return json.loads(line.removeprefix("ROWS "))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="llamagen-gpt-xl", help="a raster (LlamaGen) generator preset")
    p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                   help="model config overrides (JSON values; default: depth=2)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=2, help="global batch (split over the 2 ranks)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--json", default=str(RESULTS))
    args = p.parse_args()
    args.set = args.set or ["depth=2"]
    with tempfile.TemporaryDirectory() as tmp:
        worker = Path(tmp) / "worker.py"
        worker.write_text(WORKER)
        rows = [row for strategy in ("ddp", "fsdp") for row in run(strategy, args, worker)]
    print(f"{args.preset} {' '.join('--set ' + s for s in args.set)}: {rows[0]['params_total_m']:.1f}M parameters, "
          f"global batch {args.batch_size}, {args.steps} steps, 2 ranks, CPU (gloo)")
    head = ["strategy", "rank", "params MB", "grads MB", "AdamW MB", "state MB", "RSS start MB", "RSS peak MB",
            "peak - start MB", "s/step"]
    print(" | ".join(head))
    for r in rows:
        print(" | ".join([r["strategy"], str(r["rank"])] + [f"{r[k]:.0f}" for k in (
            "params_mb", "grads_mb", "adamw_mb", "state_mb", "rss_start_mb", "rss_peak_mb")]
            + [f"{r['rss_peak_mb'] - r['rss_start_mb']:.0f}", f"{r['s_per_step']:.2f}"]))
    by = {s: max(r["rss_peak_mb"] - r["rss_start_mb"] for r in rows if r["strategy"] == s) for s in ("ddp", "fsdp")}
    print(f"peak growth per rank, FSDP / DDP: {by['fsdp'] / by['ddp']:.2f}")
    out = {"preset": args.preset, "set": args.set, "steps": args.steps, "batch_size": args.batch_size,
           "ranks": 2, "device": "cpu", "threads_per_rank": args.threads, "rows": rows,
           "peak_growth_ratio_fsdp_over_ddp": by["fsdp"] / by["ddp"]}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
