"""Does the multi-scale VQ recipe prevent codebook collapse at the small scales?

Trains msvq-digits twice with the same budget and seed, once with argen's recipe (k-means
on every scale's pooled features + per-scale balanced dead-code restarts) and once naively
(random uniform codebook init, no restarts; the official VAR setup), then prints held-out
PSNR and codebook usage / perplexity per scale.

    python benchmarks/msvq_collapse.py [--steps 400] [--out /tmp/msvq-collapse]
"""

from __future__ import annotations

import argparse
import json

import torch

from argen import load
from argen.data import load_dataset
from argen.evaluation.reconstruction import evaluate_tokenizer
from argen.training.run import train_preset

VARIANTS = {
    "recipe": {},                                           # argen's default
    "naive": {"kmeans_init": False, "restart_every": 0},    # uniform init, no restarts (official VAR)
    "kmeans-only": {"restart_every": 0},
    "restarts-only": {"kmeans_init": False},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="default: the preset's")
    p.add_argument("--out", default="/tmp/msvq-collapse")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every variant, e.g. --set codebook_size=512 (JSON values)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of: " + ", ".join(VARIANTS))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    test = load_dataset("digits", "test")
    common = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    rows = []
    for i, name in enumerate(args.variants.split(",")):
        out = f"{args.out}/{i}"
        train_preset("tokenizer", "msvq-digits", out, model_overrides={**common, **VARIANTS[name]},
                     train_overrides={"steps": args.steps} if args.steps else {}, quiet=True)
        tok = load(out)
        rows.append((name, tok.scales, evaluate_tokenizer(tok, test)))
    for name, scales, m in rows:
        per = "  ".join(f"{pn}x{pn}: {m[f'usage_s{si}']:.0%} (ppl {m[f'perplexity_s{si}']:.1f})"
                        for si, pn in enumerate(scales))
        print(f"{name:<14} PSNR {m['psnr']:.2f} dB  usage {m['usage']:.0%} (ppl {m['perplexity']:.1f})  |  {per}")


if __name__ == "__main__":
    main()
