"""Sampling speed beside the official code: same weights, same settings, one process each in turn.

    python benchmarks/vs_official.py --llamagen /path/to/LlamaGen --batch-sizes 1,8 --threads 2

LlamaGen GPT-B, 256 tokens, CFG scale 2.0, greedy (top-k 1, so both runs produce the same tokens,
which is checked), fp32, token generation only (no VQ decode: the VQ-16 converter is not written
yet). Each measurement runs in a fresh process (``--impl official|argen``), after one warm-up
call at batch 1, and prints one JSON line; the driver prints a markdown table with the ratio
official / argen. VAR and MAR are not timed here: their samplers need the official tokenizers,
which argen does not convert yet.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _models(official_dir: str, tmp: Path):
    """The official GPT-B with seeded random weights, and argen's conversion of it."""
    import argen
    from argen.convert.llamagen import convert

    sys.path.insert(0, str(Path(official_dir).resolve()))
    from autoregressive.models.gpt import GPT_models

    torch.manual_seed(0)
    official = GPT_models["GPT-B"](vocab_size=16384, block_size=256, num_classes=1000, cls_token_num=1,
                                   model_type="c2i").eval()
    with torch.no_grad():
        for t in official.parameters():
            t.normal_(0, 0.02)
    torch.save({"model": official.state_dict()}, tmp / "gpt.pt")
    convert(tmp / "gpt.pt", None, tmp / "argen")
    return official, argen.load(tmp / "argen")


def measure(impl: str, official_dir: str, batch: int, scale: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        official, ours = _models(official_dir, Path(tmp))
    labels = torch.arange(batch) * 97 % 1000
    if impl == "official":
        from autoregressive.models.generate import generate

        def run(lab):
            return generate(official, lab, 256, cfg_scale=scale, cfg_interval=-1, top_k=1, temperature=1.0,
                            top_p=1.0, sample_logits=True)
    else:
        from argen.sampling.autoregressive import RasterSamplerConfig, sample

        config = RasterSamplerConfig(cfg=scale - 1.0, top_k=1)

        def run(lab):
            return sample(ours, None, lab, config).flatten(1)

    with torch.inference_mode():
        run(labels[:1])  # warm-up: first-call allocations and kernel selection
        t0 = time.perf_counter()
        tokens = run(labels)
        dt = time.perf_counter() - t0
    return {"impl": impl, "model": "llamagen-gpt-b", "batch": batch, "s_per_image": dt / batch,
            "tokens_sum": int(tokens.sum()), "threads": torch.get_num_threads()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llamagen", required=True, help="checkout of FoundationVision/LlamaGen")
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--cfg-scale", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--impl", choices=["official", "argen"], default=None, help="(internal) one measurement")
    p.add_argument("--batch", type=int, default=1, help="(internal) batch of the one measurement")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.impl:
        print(json.dumps(measure(args.impl, args.llamagen, args.batch, args.cfg_scale)), flush=True)
        return 0
    rows = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        for impl in ("official", "argen"):
            out = subprocess.run([sys.executable, __file__, "--llamagen", args.llamagen, "--impl", impl,
                                  "--batch", str(batch), "--threads", str(args.threads),
                                  "--cfg-scale", str(args.cfg_scale)], capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| model | batch | official s/img | argen s/img | official / argen | same tokens |")
    print("|---|---|---|---|---|---|")
    for off, ours in zip(rows[::2], rows[1::2]):
        print(f"| GPT-B, 256 tokens, CFG {args.cfg_scale}, {args.threads} threads | {off['batch']} | "
              f"{off['s_per_image']:.2f} | {ours['s_per_image']:.2f} | {off['s_per_image'] / ours['s_per_image']:.2f}x | "
              f"{off['tokens_sum'] == ours['tokens_sum']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
