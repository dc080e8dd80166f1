"""MAR head-step annealing (DiSA): sample quality against head evaluations, constant vs annealed head steps.

    python benchmarks/mar_annealing.py runs/mar-fmnist fmnist-mar --n 1000 --seeds 0,1,2

For each model (a checkpoint folder or a shipped model name): the preset's constant schedule
(``ar_steps`` x ``head_steps``, e.g. 16 x 50 for mar-fmnist, 16 x 8 for fmnist-mar), then a curve
of cheaper settings: annealed head steps (``head_steps -> head_steps_end`` along a
``head_schedule``, see ``argen.sampling.mar.head_step_counts``) and, as a control, a constant
schedule at half the head steps. Every setting samples ``--n`` images (classes balanced) per seed
and reports FD and class accuracy in the reference classifier's feature space (mean and min..max
over the seeds), head network calls per image (counted with a forward hook on the head network,
as ``argen bench`` counts them, and checked against the closed form), head rows per image (the
tokens each call runs on, x2 under CFG: the head's compute), and seconds per image of sampling and
decoding on one thread (a separate timing pass: the fastest of ``--time-repeats`` runs of
``--time-n`` images, the settings interleaved; a shared machine makes single runs noisy). AR steps
stay the preset's.

A setting is "inside the spread" when its mean FD is at most the constant schedule's worst seed.
Rows of earlier runs (``--reuse FILE ...``, the same model, setting, seed and n) are taken as they
are, so that runs split over processes can be merged; the JSON is rewritten after every row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from argen.evaluation.evaluate import evaluate_checkpoint, short_name
from argen.pipeline import Pipeline
from argen.sampling.mar import head_step_counts

# (head_steps, head_steps_end, head_schedule, solver); head_steps_end 0 = constant; the solver applies to flow
# heads. The first is the baseline.
SETTINGS = {
    "diffusion": [(50, 0, "linear", "euler"), (25, 0, "linear", "euler"), (50, 5, "linear", "euler"),
                  (50, 5, "cosine", "euler"), (40, 5, "cosine", "euler"), (30, 5, "linear", "euler"),
                  (20, 2, "linear", "euler")],
    "flow": [(8, 0, "linear", "euler"), (4, 0, "linear", "euler"), (8, 2, "linear", "euler"),
             (8, 1, "cosine", "euler"), (6, 1, "linear", "euler"), (4, 1, "linear", "euler")],
}


def parse_setting(text: str) -> tuple[int, int, str, str]:
    """``50`` (constant), ``50:5`` (linear), ``50:5:cosine`` or ``4:2:linear:heun``."""
    parts = text.split(":")
    if not 1 <= len(parts) <= 4:
        raise argparse.ArgumentTypeError(f"a setting is HEAD_STEPS[:HEAD_STEPS_END[:SCHEDULE[:SOLVER]]], got {text!r}")
    return (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0, parts[2] if len(parts) > 2 else "linear",
            parts[3] if len(parts) > 3 else "euler")


def label(setting: tuple[int, int, str, str]) -> str:
    a, b, s, solver = setting
    return (f"{a} (constant)" if b == 0 else f"{a} -> {b} {s}") + ("" if solver == "euler" else f", {solver}")


class HeadCounter:
    def __init__(self, module: torch.nn.Module):
        self.calls, self.rows = 0, 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module, args, out):
        self.calls += 1
        self.rows += args[0].shape[0]


def run_row(pipe: Pipeline, setting: tuple[int, int, str, str], n: int, seed: int, batch_size: int) -> dict:
    a, b, s, solver = setting
    overrides = {"head_steps": a, "head_steps_end": b, "head_schedule": s, "solver": solver}
    config = pipe.settings.replace(**overrides)
    counts = head_step_counts(config, config.ar_steps)
    head = pipe.generator.diffloss
    per_chain = sum(head.net_calls(k, config.solver) for k in counts)  # head calls of one sampling chain
    counter = HeadCounter(pipe.generator.counted_modules()["head_calls"])
    try:
        m, _, _ = evaluate_checkpoint(pipe, n=n, seed=seed, batch_size=batch_size, **overrides)
    finally:
        counter.handle.remove()
    batches = -(-n // batch_size)
    if counter.calls != per_chain * batches:
        raise RuntimeError(f"{label(setting)}: counted {counter.calls} head calls, expected {per_chain} x {batches}")
    tag = short_name(m["dataset"])
    return {"head_steps": a, "head_steps_end": b, "head_schedule": s, "solver": solver, "seed": seed, "n": n,
            "ar_steps": config.ar_steps, "head_step_counts": counts, "head_calls_per_image": per_chain,
            "head_rows_per_image": counter.rows / n, "fd": m[f"FD-{tag}"], "class_accuracy": m["class_accuracy"],
            "s_per_image": m["seconds_per_image"], "sampler": m["sampler"]}


def time_settings(pipe: Pipeline, settings: list[tuple], n: int, repeats: int, batch_size: int) -> list[float]:
    """Seconds per image of sampling and decoding ``n`` images with each setting: the fastest of ``repeats``
    runs, the settings interleaved, so that a busy spell of a shared machine slows one run, not one setting."""
    labels = [i % pipe.num_classes for i in range(n)]
    best = [float("inf")] * len(settings)
    for _ in range(repeats):
        for i, (a, b, s, solver) in enumerate(settings):
            t0 = time.perf_counter()
            pipe(labels, seed=0, batch_size=batch_size, head_steps=a, head_steps_end=b, head_schedule=s,
                 solver=solver)
            best[i] = min(best[i], (time.perf_counter() - t0) / n)
    return best


def summarise(rows: list[dict]) -> dict:
    fd = [r["fd"] for r in rows]
    acc = [r["class_accuracy"] for r in rows]
    return {"seeds": [r["seed"] for r in rows], "fd_mean": statistics.mean(fd), "fd_min": min(fd), "fd_max": max(fd),
            "acc_mean": statistics.mean(acc), "acc_min": min(acc), "acc_max": max(acc),
            "s_per_image_eval": statistics.mean(r["s_per_image"] for r in rows),
            "head_calls_per_image": rows[0]["head_calls_per_image"],
            "head_rows_per_image": statistics.mean(r["head_rows_per_image"] for r in rows)}


def table(models: list[dict]) -> str:
    lines = []
    for mdl in models:
        base = mdl["settings"][0]
        lines += [(f"\n{mdl['model']} ({mdl['head']} head, {mdl['ar_steps']} AR steps, cfg {mdl['cfg']}), "
                   f"n = {mdl['n']} per seed, seeds {','.join(map(str, base['seeds']))}"),
                  (f"| head steps | head calls / img | fewer calls | head rows / img | fewer rows | FD-{mdl['tag']} "
                   "mean (min..max) | class acc. mean (min..max) | s / img | FD inside constant spread |"),
                  "|---|---|---|---|---|---|---|---|---|"]
        # the baseline, then the curve from the most head calls to the fewest
        for st in [base, *sorted(mdl["settings"][1:], key=lambda st: -st["head_calls_per_image"])]:
            inside = "baseline" if st is base else ("yes" if st["fd_mean"] <= base["fd_max"] else "no")
            lines.append(
                f"| {st['label']} | {st['head_calls_per_image']} | "
                f"{base['head_calls_per_image'] / st['head_calls_per_image']:.2f}x | {st['head_rows_per_image']:.0f} | "
                f"{base['head_rows_per_image'] / st['head_rows_per_image']:.2f}x | {st['fd_mean']:.2f} "
                f"({st['fd_min']:.2f}..{st['fd_max']:.2f}) | {st['acc_mean']:.1%} ({st['acc_min']:.1%}..{st['acc_max']:.1%}) "
                f"| {st.get('s_per_image', st['s_per_image_eval']):.4f} | {inside} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="checkpoint folders or shipped model names (argen info --models)")
    p.add_argument("--n", type=int, default=1000, help="images per setting and seed")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, every setting runs each")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--settings", nargs="*", type=parse_setting, default=None,
                   help="HEAD_STEPS[:HEAD_STEPS_END[:SCHEDULE[:SOLVER]]] ..., the first is the baseline "
                        "(default: a curve per head type)")
    p.add_argument("--extra", nargs="*", default=[], metavar="HEAD=SETTING",
                   help="settings appended to the curve of one head type, e.g. flow=3:2:linear:heun")
    p.add_argument("--time-n", type=int, default=250, help="images of each timing run")
    p.add_argument("--time-repeats", type=int, default=3,
                   help="timing runs per setting, interleaved; the fastest counts (0: report the mean sampling "
                        "time of the evaluation runs instead)")
    p.add_argument("--reuse", nargs="*", default=[], help="JSON files of earlier runs whose rows are taken as they are")
    p.add_argument("--out", default="benchmarks/results/mar_annealing.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    done = {}
    for f in args.reuse:
        for mdl in json.loads(Path(f).read_text())["models"]:
            for r in mdl["rows"]:
                r.setdefault("solver", "euler")
                done[(mdl["model"], r["head_steps"], r["head_steps_end"], r["head_schedule"], r["solver"], r["seed"],
                      r["n"])] = r
    out = {"command": " ".join(["python", "benchmarks/" + Path(__file__).name, *sys.argv[1:]]), "args": vars(args),
           "threads": args.threads, "torch": torch.__version__, "models": []}
    for name in args.models:
        pipe = Pipeline.from_pretrained(name)
        cfg = pipe.generator.config
        settings = (args.settings or SETTINGS[cfg.head]) + [
            parse_setting(e.split("=", 1)[1]) for e in args.extra if e.split("=", 1)[0] == cfg.head]
        mdl = {"model": name, "head": cfg.head, "preset": pipe.record.preset, "ar_steps": pipe.settings.ar_steps,
               "cfg": pipe.settings.cfg, "n": args.n, "tag": short_name(pipe.record.meta["data"]),
               "rows": [], "settings": []}
        out["models"].append(mdl)
        for setting in settings:
            rows = []
            for seed in seeds:
                key = (name, *setting, seed, args.n)
                r = done.get(key) or run_row(pipe, setting, args.n, seed, args.batch_size)
                rows.append(r)
                mdl["rows"].append(r)
                print(f"{name} {label(setting)} seed {seed}: FD {r['fd']:.2f}, acc {r['class_accuracy']:.1%}, "
                      f"{r['head_calls_per_image']} head calls, {r['s_per_image']:.4f} s/img", flush=True)
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(out, indent=1))
            mdl["settings"].append({"label": label(setting), "head_steps": setting[0], "head_steps_end": setting[1],
                                    "head_schedule": setting[2], "solver": setting[3], **summarise(rows)})
        if args.time_repeats > 0:
            timed = time_settings(pipe, settings, args.time_n, args.time_repeats, args.batch_size)
            for st, t in zip(mdl["settings"], timed, strict=True):
                st["s_per_image"] = t
        Path(args.out).write_text(json.dumps(out, indent=1))
    out["table"] = table(out["models"])
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(out["table"])


if __name__ == "__main__":
    main()
