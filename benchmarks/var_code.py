"""Collaborative decoding (CoDe) for VAR: speed and sample quality against the large model alone.

    python benchmarks/var_code.py --refiner runs/var-fmnist-small --n 1000 --seeds 0,1,2

The large model (default: the shipped ``fmnist-var``, var-fmnist) alone with its preset sampler is
the baseline; then CoDe at several switch scales J (scales 0..J-1 by the large model, J.. by the
refiner, ``--sampler code``), the refiner alone (J = 0), and guidance on the coarse scales only
(``cfg_scales = J``: scales >= J run without the unconditional half), alone and combined with CoDe.
Every setting samples ``--n`` images (classes balanced) per seed through
``argen.evaluation.evaluate.run_eval`` and reports FD in the reference classifier's feature space
and class accuracy (mean and min..max over the seeds), and seconds per image at batch 1 and at
batch 64 (wall time of sampling and decoding, one thread, the best of ``--reps`` rounds; each round
times every setting in turn, so a load that changes during the run touches all settings alike).

A setting is "inside the spread" when its mean FD is at most the baseline's worst seed. The JSON
(``--json``) is rewritten after every row; the markdown table is printed at the end and kept in
the JSON under ``markdown``. ``--reuse FILE`` takes the quality of rows of an earlier run (same
setting, n and seeds) as they are and times again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from argen.evaluation.evaluate import run_eval, short_name
from argen.pipeline import Pipeline
from argen.pretrained import model_path


def seconds_per_image(pipe: Pipeline, batch: int, images: int, seed: int, **overrides) -> float:
    """Wall time of sampling ``images`` images at ``batch``, per image."""
    labels = [i % pipe.num_classes for i in range(images)]
    t0 = time.perf_counter()
    pipe(labels, seed=seed, batch_size=batch, **overrides)
    return (time.perf_counter() - t0) / images


def timings(pipes: dict, rows: list[tuple[str, str, dict]], reps: int, images_b1: int) -> dict[str, tuple]:
    """(s / image at batch 1, at batch 64) per setting: the best of ``reps`` interleaved rounds."""
    for _, sampler, overrides in rows:  # warm-up (allocator, lazily loaded refiner)
        pipes[sampler]([0], seed=99, batch_size=1, **overrides)
    best = {name: [float("inf"), float("inf")] for name, _, _ in rows}
    for r in range(reps):
        for name, sampler, overrides in rows:
            for i, (batch, images) in enumerate(((1, images_b1), (64, 128))):
                dt = seconds_per_image(pipes[sampler], batch, images, 100 + r, **overrides)
                best[name][i] = min(best[name][i], dt)
        print(f"timing round {r + 1}/{reps} done", flush=True)
    return {name: tuple(b) for name, b in best.items()}


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "values": values}


def settings(K: int, switches: list[int], cfg_scales: list[int]) -> list[tuple[str, str, dict]]:
    """(name, sampler, overrides); the first is the baseline."""
    rows = [("large alone", "var", {})]
    rows += [(f"CoDe J={j}", "code", {"switch_scale": j}) for j in switches if 0 < j < K]
    rows += [("refiner alone", "code", {"switch_scale": 0})]
    rows += [(f"large, cfg on scales < {c}", "var", {"cfg_scales": c}) for c in cfg_scales if 0 < c < K]
    rows += [(f"CoDe J={j}, cfg on scales < {j}", "code", {"switch_scale": j, "cfg_scales": j})
             for j in switches if 0 < j < K and j in cfg_scales]
    return rows


def table(result: dict) -> str:
    tag = result["fd_name"]
    base = result["rows"][0]
    lines = [(f"| setting | s / image, batch 1 | s / image, batch 64 | speed-up (b1 / b64) | {tag} (min..max) | "
              "class accuracy (min..max) | inside the spread |"),
             "|---|---|---|---|---|---|---|"]
    worst = base["fd"]["max"]
    for r in result["rows"]:
        fd, acc = r["fd"], r["class_accuracy"]
        lines.append(
            f"| {r['name']} | {r['s_per_image_b1']:.4f} | {r['s_per_image_b64']:.5f} | "
            f"{base['s_per_image_b1'] / r['s_per_image_b1']:.2f}x / {base['s_per_image_b64'] / r['s_per_image_b64']:.2f}x"
            f" | {fd['mean']:.2f} ({fd['min']:.2f}..{fd['max']:.2f}) | {acc['mean']:.1%} "
            f"({acc['min']:.1%}..{acc['max']:.1%}) | {'yes' if fd['mean'] <= worst else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--large", default="fmnist-var", help="the large VAR: a checkpoint folder or a shipped model name")
    p.add_argument("--refiner", default="runs/var-fmnist-small", help="the small VAR's checkpoint folder")
    p.add_argument("--n", type=int, default=1000, help="images per setting and seed")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--switch-scales", default="2,3,4,5")
    p.add_argument("--cfg-scales", default="3,4,5")
    p.add_argument("--reps", type=int, default=5, help="timing rounds (the best counts)")
    p.add_argument("--timing-images", type=int, default=64, help="images per timing at batch 1 (batch 64: 2 x 64)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default="benchmarks/results/var_code.json")
    p.add_argument("--reuse", default=None, help="an earlier JSON whose quality rows are kept (times again)")
    p.add_argument("--eval-dir", default="runs/var-code-eval", help="run_eval's metrics.json and report.html go here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    large = Path(args.large) if Path(args.large).exists() else model_path(args.large)
    pipes = {name: Pipeline.from_pretrained(large, sampler=name) for name in ("var", "code")}
    pipes["code"].settings = pipes["code"].settings.replace(refiner=str(args.refiner))
    K = len(pipes["var"].generator.config.scales)
    refiner = pipes["code"]._sampler_models(pipes["code"].settings)["refiner"]  # loaded once, kept by the pipeline
    data = pipes["var"].record.meta["data"]
    n_params = {"large": sum(t.numel() for t in pipes["var"].generator.parameters()),
                "refiner": sum(t.numel() for t in refiner.parameters())}
    result = {"large": str(large), "refiner": str(args.refiner), "n": args.n, "seeds": seeds, "threads": args.threads,
              "scales": list(pipes["var"].generator.config.scales), "params": n_params,
              "preset_sampler": pipes["var"].settings.to_dict(), "fd_name": f"FD-{short_name(data)}",
              "command": "python benchmarks/var_code.py " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("json", "eval_dir", "reuse")),
              "rows": []}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"large {large} ({n_params['large']:,} parameters), refiner {args.refiner} ({n_params['refiner']:,}), "
          f"scales {result['scales']}, n={args.n}, seeds {seeds}, {args.threads} thread(s)", flush=True)
    rows = settings(K, [int(s) for s in args.switch_scales.split(",")], [int(s) for s in args.cfg_scales.split(",")])
    earlier = {}
    if args.reuse:
        old = json.loads(Path(args.reuse).read_text())
        if old["n"] == args.n and old["seeds"] == seeds:
            earlier = {(r["name"], json.dumps(r["overrides"], sort_keys=True)): r for r in old["rows"]}
            result["quality_reused_from"] = args.reuse
    speed = timings(pipes, rows, args.reps, args.timing_images)
    for name, sampler, overrides in rows:
        pipe = pipes[sampler]
        t0 = time.time()
        row = {"name": name, "sampler": sampler, "overrides": overrides, "s_per_image_b1": speed[name][0],
               "s_per_image_b64": speed[name][1]}
        kept = earlier.get((name, json.dumps(overrides, sort_keys=True)))
        if kept is not None:
            row.update(fd=kept["fd"], class_accuracy=kept["class_accuracy"])
        else:
            fds, accs = [], []
            for seed in seeds:
                slug = name.replace(" ", "_").replace(",", "").replace("<", "lt").replace("=", "")
                m = run_eval(Path(args.eval_dir) / f"{slug}-seed{seed}", checkpoint=large, n=args.n, seed=seed,
                             progress=False, pipe=pipe, **overrides)
                fds.append(m[result["fd_name"]])
                accs.append(m["class_accuracy"])
            row.update(fd=spread(fds), class_accuracy=spread(accs))
        result["rows"].append(row)
        fd = row["fd"]
        print(f"{name}: {row['s_per_image_b1']:.4f} s/img (b1), {row['s_per_image_b64']:.5f} s/img (b64), "
              f"{result['fd_name']} {fd['mean']:.2f} ({fd['min']:.2f}..{fd['max']:.2f}), "
              f"acc {row['class_accuracy']['mean']:.1%} [{time.time() - t0:.0f} s]", flush=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    result["markdown"] = table(result)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n" + result["markdown"])


if __name__ == "__main__":
    main()
