"""Pack trained generator checkpoints as the pretrained models that ship in argen/assets/models/.

    python benchmarks/ship_models.py fmnist-var=runs/var-fmnist fmnist-raster=runs/raster-fmnist \\
        fmnist-maskgit=runs/maskgit-fmnist fmnist-mar=runs/mar-fmnist digits-var=argen-demo/generator

Each model is judged first (200 class-conditional samples, 20 per class, seed 0, its preset
sampler; the dataset's reference classifier; a text model by ShapesEval on 200 test and 200 held-out prompts), and the figure goes into its config beside how it
was trained. Weights are stored in float16; the script prints each model's size and the total,
which must stay under 35 MB.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from argen.evaluation.classifier import class_accuracy
from argen.evaluation.evaluate import shapes_eval_checkpoint
from argen.images import to_uint8
from argen.pipeline import Pipeline
from argen.pretrained import MODELS_DIR, export

LIMIT_MB = 35.0  # the wheel carries these; two text models share a 1.9 MB tokenizer, stored twice


def judge(pipe: Pipeline, per_class: int = 20, seed: int = 0) -> dict:
    """The figure a shipped model records, sampled with its default sampler settings (``pipe.settings``)."""
    if pipe.text_conditioned:  # a shapes text model: ShapesEval of 200 test and 200 held-out prompts
        t0 = time.time()
        metrics, _, _ = shapes_eval_checkpoint(pipe, n=200, seed=seed)
        return {"shapes_eval": round(metrics["shapes_eval_overall"], 4),
                "shapes_eval_heldout": round(metrics["shapes_eval_heldout_overall"], 4),
                "judged_on": f"200 test + 200 held-out prompts, seed {seed}, its default sampler",
                "sampling_seconds": round(time.time() - t0, 2)}
    data = pipe.record.meta.get("data", "digits")
    labels = [c for c in range(pipe.num_classes) for _ in range(per_class)]
    t0 = time.time()
    images = pipe(labels, seed=seed)
    acc = class_accuracy(to_uint8(images), labels, dataset=data)
    return {"class_accuracy": round(acc["class_accuracy"], 4), "judge_test_accuracy": acc["classifier_test_accuracy"],
            "judged_on": f"{len(labels)} samples, seed {seed}, its default sampler", "sampling_seconds": round(time.time() - t0, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="NAME=CHECKPOINT_DIR pairs")
    p.add_argument("--sampler", action="append", default=[], metavar="NAME.KEY=VALUE",
                   help="a shipped model's default sampler setting, e.g. shapes-raster.cfg=1.0 (the weight a sweep "
                        "chose); judged with it and stored in its meta.sampler")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    samplers: dict[str, dict] = {}
    for item in args.sampler:
        target, _, value = item.partition("=")
        name, _, key = target.partition(".")
        if not (key and value):
            p.error(f"--sampler: expected NAME.KEY=VALUE, got {item!r}")
        try:  # numbers, booleans, lists as JSON; anything else (a solver name) as the string itself
            samplers.setdefault(name, {})[key] = json.loads(value)
        except json.JSONDecodeError:
            samplers.setdefault(name, {})[key] = value
    torch.set_num_threads(args.threads)
    for pair in args.models:
        name, _, path = pair.partition("=")
        if not path:
            p.error(f"expected NAME=CHECKPOINT_DIR, got {pair!r}")
        pipe = Pipeline.from_pretrained(path)
        pipe.settings = pipe.settings.replace(**samplers.get(name, {}))
        scores = judge(pipe)
        dst = export(path, name, meta_update={"eval": scores, "sampler": pipe.settings.to_dict()})
        size = sum(f.stat().st_size for f in dst.rglob("*") if f.is_file()) / 2**20
        print(f"{name}: {json.dumps(scores)} -> {dst} ({size:.1f} MB)")
    total = sum(f.stat().st_size for f in MODELS_DIR.rglob("*") if f.is_file()) / 2**20
    print(f"all shipped models: {total:.1f} MB (limit {LIMIT_MB:.0f} MB)")
    if total > LIMIT_MB:
        raise SystemExit(f"shipped models take {total:.1f} MB, over the {LIMIT_MB:.0f} MB limit")


if __name__ == "__main__":
    main()
