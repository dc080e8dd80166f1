"""Class accuracy of class-conditional samples, per class, for the demo or any generator checkpoints.

    python benchmarks/demo_quality.py --out argen-demo            # reads an existing `argen demo` folder
    python benchmarks/demo_quality.py --out /tmp/d --train        # runs `argen demo` first
    python benchmarks/demo_quality.py --generators runs/raster-digits runs/maskgit-fmnist ...

Each checkpoint is judged on the dataset it was trained on (its ``meta.data``): digits by an
RBF SVM fitted on the real digits train split, Fashion-MNIST by argen's shipped CNN
classifier. The judge's accuracy on the real test split is printed beside the figures, and a
closing markdown table gives one row per checkpoint (accuracy, sampling time, training time).
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
from argen.images import to_uint8
from argen.pipeline import Pipeline


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
    summary = []
    for path in args.generators:
        pipe = Pipeline.from_pretrained(path)
        meta = pipe.record.meta
        data = meta.get("data", "digits")
        labels = [c for c in range(pipe.num_classes) for _ in range(PER_CLASS)]
        print(f"\n{path} ({type(pipe.generator).__name__}, {data}), sampler: {json.dumps(pipe.settings.to_dict())}")
        print("seed | all   | " + " | ".join(f"{c:>4}" for c in range(pipe.num_classes)) + f" | s/{len(labels)} img")
        accs = []
        for seed in [int(s) for s in args.seeds.split(",")]:
            t0 = time.time()
            images = pipe(labels, seed=seed)
            dt = time.time() - t0
            acc = class_accuracy(to_uint8(images), labels, dataset=data)
            accs.append(acc["class_accuracy"])
            row = " | ".join(f"{acc[f'class_accuracy_{c}']:.2f}" for c in range(pipe.num_classes))
            print(f"{seed:>4} | {acc['class_accuracy']:.3f} | {row} | {dt:.2f}")
        print(f"judge's accuracy on the real {data} test split: {acc['classifier_test_accuracy']:.3f}")
        train_s = meta.get("train_seconds")
        summary.append(f"| {path} | {data} | {meta.get('step', '?')} | {train_s or '?'} | "
                       f"{' / '.join(f'{a:.1%}' for a in accs)} | {dt / len(labels) * 1000:.1f} |")
    print("\n| checkpoint | data | train steps | train s | class accuracy (per seed) | ms / image |")
    print("|---|---|---|---|---|---|")
    print("\n".join(summary))


def report_tokenizer(tok) -> None:
    m = evaluate_tokenizer(tok, load_dataset("digits", "test"))
    print(f"tokenizer on held-out digits (355 images): PSNR {m['psnr']:.2f} dB, codebook usage {m['usage']:.1%}, "
          f"perplexity {m['perplexity']:.1f} / {tok.codebook_size}")
    if len(getattr(tok, "scales", ())) > 1:
        print("  per scale: " + ", ".join(f"s{i} ({pn}x{pn}) usage {m[f'usage_s{i}']:.0%} "
                                          f"ppl {m[f'perplexity_s{i}']:.1f}" for i, pn in enumerate(tok.scales)))


if __name__ == "__main__":
    main()
