"""``argen demo``: the whole path on 8x8 digits in a few minutes on a laptop CPU.

1. train the multi-scale VQ tokenizer ``msvq-digits``  -> OUT/tokenizer/
2. train the VAR generator ``var-digits`` on its tokens -> OUT/generator/ (tokenizer copied inside)
3. sample 20 images per class -> OUT/samples.png (one row per class), OUT/samples.npz
4. judge them with a classifier fitted on real digits  -> OUT/metrics.json
A step whose checkpoint is already complete is not trained again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

import argen.checkpoint as ckpt
from argen.evaluation.classifier import class_accuracy
from argen.images import save_samples, to_uint8
from argen.pipeline import Pipeline
from argen.training.run import train_preset

PER_CLASS = 20


def _done(out: Path, steps: int | None) -> bool:
    """A checkpoint that finished its run (``eval`` is written at the very end of training)."""
    if not (out / ckpt.CONFIG).is_file():
        return False
    meta = ckpt.read_config(out)["meta"]
    return "eval" in meta and (steps is None or meta.get("step") == steps)


def run_demo(out: str | Path = "argen-demo", device: str | torch.device = "cpu", seed: int = 0,
             tokenizer_steps: int | None = None, generator_steps: int | None = None, quiet: bool = False) -> dict:
    out = Path(out)
    t0 = time.time()
    metrics: dict = {}
    steps = {"tokenizer": tokenizer_steps, "generator": generator_steps}
    for kind, preset in (("tokenizer", "msvq-digits"), ("generator", "var-digits")):
        d = out / kind
        if _done(d, steps[kind]):
            result = ckpt.read_config(d)["meta"]["eval"]
        else:
            over = {"seed": seed, **({"steps": steps[kind]} if steps[kind] else {})}
            # the demo's folders are its own: an unfinished or differently sized run is trained again
            tok = str(out / "tokenizer") if kind == "generator" else None
            result = train_preset(kind, preset, str(d), tokenizer_dir=tok, train_overrides=over, device=device,
                                 overwrite=True, quiet=quiet, command=f"argen demo --out {out}")
        metrics[kind] = result

    pipe = Pipeline.from_pretrained(out / "generator", device)
    labels = [c for c in range(pipe.num_classes) for _ in range(PER_CLASS)]
    t1 = time.time()
    images = pipe(labels, seed=seed)
    sample_s = time.time() - t1
    save_samples(images, labels, out / "samples", nrow=PER_CLASS)
    metrics["samples"] = {"n": len(labels), "seconds": round(sample_s, 2), "sampler": pipe.settings.to_dict(),
                          **class_accuracy(to_uint8(images), labels, "digits")}
    metrics["total_seconds"] = round(time.time() - t0, 1)
    ckpt.write_json(out / "metrics.json", metrics)
    if not quiet:
        print(f"demo: wrote {out}/samples.png, samples.npz and metrics.json in {metrics['total_seconds']} s; "
              f"class accuracy of samples {metrics['samples']['class_accuracy']:.1%}")
    return json.loads(json.dumps(metrics))
