"""Speculative Jacobi decoding at official size: LlamaGen GPT-B, converted, random weights.

    python benchmarks/sjd_official.py [--acceptance benchmarks/results/speculative.json]

1. Random GPT-B weights (non-zero output head) are saved in LlamaGen's own layout and converted
   with ``argen convert --from llamagen``; greedy SJD (top-k 1, CFG as the preset) must give
   the greedy raster tokens token for token (checked, passes counted).
2. Seconds per verification pass over W = 1, 4, 8, 16, 32 new tokens at batch 1 (2 rows with CFG),
   100 tokens already cached, fp32 and bf16 autocast, ``--threads`` threads (median of ``--reps``).
3. A projection of seconds per image: passes(W) x t(W), where passes(W) = 256 / accepted tokens
   per pass. GPT-B with random weights accepts nothing like a trained model, so the acceptance
   is taken from another model: the measured tokens per pass of SJD on the trained
   ``fmnist-raster`` (``--acceptance``, from benchmarks/speculative.py), or ``--tokens-per-pass``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch

from argen.convert import converter
from argen.models import build, load_checkpoint
from argen.sampling import sampler_for

WINDOWS = (1, 4, 8, 16, 32)


def converted_gpt_b(folder: Path, seed: int = 0):
    torch.manual_seed(seed)
    model = build("llamagen-gpt-b")
    with torch.no_grad():
        model.output.weight.normal_(std=0.02)  # the preset zero-inits the head: uniform logits, all ties
    torch.save({"model": model.state_dict()}, folder / "c2i_B_256.pt")
    converter("llamagen")(folder / "c2i_B_256.pt", None, folder / "gpt-b")
    return load_checkpoint(folder / "gpt-b", "cpu")[0].eval()


def pass_seconds(model, W: int, reps: int, bf16: bool) -> float:
    c = model.config
    caches = model.new_caches(2, length=c.max_len + W)
    pos = 100 + torch.arange(W)
    mask = (torch.arange(c.max_len + W) <= pos[:, None]).view(1, 1, W, -1).expand(2, -1, -1, -1)
    x = torch.randint(c.vocab_size, (2, W))
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
    times = []
    with torch.no_grad(), ctx:
        for i in range(reps + 2):
            t0 = time.perf_counter()
            model.decode_step(x, pos, caches, mask)
            if i >= 2:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--acceptance", default="benchmarks/results/speculative_speed.json",
                   help="benchmarks/speculative.py's JSON: the tokens per pass measured on fmnist-raster")
    p.add_argument("--skip-greedy", action="store_true")
    p.add_argument("--out", default="benchmarks/results/sjd_official.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    result = {"threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        model = converted_gpt_b(Path(tmp))
    c = model.config
    print(f"GPT-B converted from LlamaGen's layout, random weights: {sum(p.numel() for p in model.parameters()):,} "
          f"parameters, {c.seq_len} tokens, {args.threads} threads")

    if not args.skip_greedy:
        labels = torch.tensor([207])
        rows = []
        for name, kw in (("raster", {}), ("sjd", {"window": 8, "coupled": True}), ("sjd", {"window": 16})):
            s = sampler_for("raster", name)
            calls: list[int] = []
            hook = model.layers[0].register_forward_hook(lambda *a, calls=calls: calls.append(1))
            t0 = time.perf_counter()
            tokens = s.sample(model, None, labels, s.config_class(cfg=1.0, top_k=1, **kw), torch.Generator())
            dt = time.perf_counter() - t0
            hook.remove()
            rows.append({"sampler": name, "settings": kw, "passes": len(calls), "seconds": dt, "tokens": tokens})
        same = all(torch.equal(r["tokens"], rows[0]["tokens"]) for r in rows)
        print(f"\ngreedy (top-k 1, cfg 1.0 = LlamaGen scale 2.0), batch 1: SJD tokens equal raster tokens: {same}")
        print("| sampler | passes | seconds |\n|---|---|---|")
        for r in rows:
            print(f"| {r['sampler']} {r['settings'] or ''} | {r['passes']} | {r['seconds']:.2f} |")
            r.pop("tokens")
        result["greedy"] = {"equal": same, "rows": rows}

    t = {}
    for bf16 in (False, True):
        for W in WINDOWS:
            t[(bf16, W)] = pass_seconds(model, W, args.reps, bf16)
    result["pass_seconds"] = {("bf16" if b else "fp32") + f"_W{W}": v for (b, W), v in t.items()}
    print("\nseconds per verification pass, batch 1 (2 rows with CFG), 100 tokens cached")
    print("| W | fp32 s | fp32 vs W=1 | bf16 s | bf16 vs W=1 |\n|---|---|---|---|---|")
    for W in WINDOWS:
        print(f"| {W} | {t[(False, W)]:.4f} | {t[(False, W)] / t[(False, 1)]:.2f}x | {t[(True, W)]:.4f} | "
              f"{t[(True, W)] / t[(True, 1)]:.2f}x |")

    acc = Path(args.acceptance)
    if acc.is_file():
        measured = json.loads(acc.read_text())
        speed, n_small = measured["speed_batch_1"], measured["tokens_per_image"]
        N = c.seq_len
        print(f"\nprojection for GPT-B ({N} tokens) with the tokens per pass SJD reaches on fmnist-raster "
              "(another model's acceptance: a trained GPT-B's will differ)")
        print("| setting | tokens / pass (fmnist-raster) | W | projected fp32 s/img | projected bf16 s/img |")
        print("|---|---|---|---|---|")
        proj = {"plain": {"fp32": N * t[(False, 1)], "bf16": N * t[(True, 1)]}}
        print(f"| plain raster | 1.00 | 1 | {proj['plain']['fp32']:.1f} | {proj['plain']['bf16']:.1f} |")
        for label, row in speed.items():
            m = re.match(r"SJD W=(\d+)", label)
            if m is None or int(m.group(1)) not in WINDOWS:
                continue
            W = int(m.group(1))
            tpp = n_small / row["passes_per_image"]
            passes = N / tpp
            proj[label] = {"tokens_per_pass": tpp, "fp32": passes * t[(False, W)], "bf16": passes * t[(True, W)]}
            print(f"| {label} | {tpp:.2f} | {W} | {proj[label]['fp32']:.1f} | {proj[label]['bf16']:.1f} |")
        result["projection"] = proj
        print("the official LlamaGen code measured 19.3-30.5 s per image here at fp32 (README, Speed beside the "
              "official code)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
