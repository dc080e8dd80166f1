"""Figures of the digits demo: sample class accuracy per class and tokenizer quality on held-out digits.

    python benchmarks/demo_quality.py --out argen-demo            # reads an existing `argen demo` folder
    python benchmarks/demo_quality.py --out /tmp/d --train        # runs `argen demo` first
    python benchmarks/demo_quality.py --generators runs/raster-digits runs/maskgit-digits   # any digits generators

The judge is an RBF SVM fitted on the real digits train split (its accuracy on the
real test split is printed and must be >= 95% for the figure to mean anything).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from argen import load
from argen.data import load_dataset
from argen.demo import PER_CLASS, run_demo
from argen.evaluation.classifier import class_accuracy
from argen.evaluation.reconstruction import evaluate_tokenizer
from argen.pipeline import Pipeline, to_uint8


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="argen-demo")
    p.add_argument("--train", action="store_true", help="run `argen demo --out OUT` first")
    p.add_argument("--seeds", default="0", help="comma-separated sampling seeds (one table row each)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--generators", nargs="*", default=None,
                   help="generator checkpoints to judge (default: OUT/generator, plus OUT/tokenizer's figures)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.train:
        t0 = time.time()
        run_demo(args.out, quiet=True)
        print(f"argen demo: {time.time() - t0:.0f} s")

    if args.generators is None:
        args.generators = [f"{args.out}/generator"]
        report_tokenizer(load(f"{args.out}/tokenizer"))
    for path in args.generators:
        pipe = Pipeline.from_pretrained(path)
        labels = [c for c in range(pipe.num_classes) for _ in range(PER_CLASS)]
        print(f"\n{path} ({type(pipe.generator).__name__}), sampler: {json.dumps(pipe.sampler.to_dict())}")
        print("seed | all   | " + " | ".join(f"{c:>4}" for c in range(pipe.num_classes)) + " | s/200 img")
        for seed in [int(s) for s in args.seeds.split(",")]:
            t0 = time.time()
            images = pipe(labels, seed=seed)
            dt = time.time() - t0
            acc = class_accuracy(to_uint8(images), labels)
            row = " | ".join(f"{acc[f'class_accuracy_{c}']:.2f}" for c in range(pipe.num_classes))
            print(f"{seed:>4} | {acc['class_accuracy']:.3f} | {row} | {dt:.2f}")
    print(f"classifier accuracy on real held-out digits: {acc['classifier_test_accuracy']:.3f}")


def report_tokenizer(tok) -> None:
    m = evaluate_tokenizer(tok, load_dataset("digits", "test"))
    print(f"tokenizer on held-out digits (355 images): PSNR {m['psnr']:.2f} dB, codebook usage {m['usage']:.1%}, "
          f"perplexity {m['perplexity']:.1f} / {tok.codebook_size}")
    if len(getattr(tok, "scales", ())) > 1:
        print("  per scale: " + ", ".join(f"s{i} ({pn}x{pn}) usage {m[f'usage_s{i}']:.0%} "
                                          f"ppl {m[f'perplexity_s{i}']:.1f}" for i, pn in enumerate(tok.scales)))


if __name__ == "__main__":
    main()
