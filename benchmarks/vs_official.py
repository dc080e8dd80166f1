"""Sampling speed beside the official code: same weights, same settings, one process each in turn.

    python benchmarks/vs_official.py --var /path/to/VAR --llamagen /path/to/LlamaGen \\
        --mar /path/to/mar --mar-deps DIR --batch-sizes 1,8 --threads 2

Each official model is built from its checkout (never copied into argen) with seeded random
weights, saved as its own code saves it, and converted by ``argen convert``; both sides then
sample with the same settings, fp32 on CPU with ``--threads`` torch threads:

* ``var-d16``: 680 tokens over 10 scales, cfg 1.5 on the official linear ramp, greedy (top-k 1),
  VQVAE decode included: the official ``autoregressive_infer_cfg`` against argen's ``Pipeline``
  with the converted folder's sampler. Same outputs: uint8 images within 1/255.
* ``llamagen-gpt-b``: 256 tokens, CFG scale 2.0, greedy, token generation only: the official
  ``generate`` against argen's KV-cached sampler. Same outputs: identical tokens.
* ``mar-b``: 64 AR steps, 100 diffusion steps, CFG 2.9 on MAR's linear schedule, temperature 1.0,
  token generation only (KL-16 decode excluded): the official ``sample_tokens`` against argen's
  ``argen.sampling.mar.sample``. The two draw orders and noise from different random streams, so their
  outputs are not compared, only the work (the same number of body and head calls).

``--bf16`` adds a third run of argen under bf16 autocast (``argen sample --precision bf16``),
compared with the official fp32 outputs: a setting rather than an implementation advantage
(the official code would gain from autocast too), reported beside the fp32 ratio, not in it.

Each measurement runs in a fresh process (``--model M --impl official|argen --batch B``), after
one warm-up call at batch 1 (MAR: 2 AR steps), and prints one JSON line; the driver prints a
markdown table with the ratio official / argen. Run one measurement by hand with ``--profile``
to see where its time goes (torch.profiler's op table, on stderr). The official MAR code calls ``.cuda()``; on a machine without a GPU
``Tensor.cuda`` is made the identity for the official process only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

import argen
from argen.pipeline import Pipeline

SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


def _randomize(model: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for t in model.parameters():
            t.normal_(0, 0.02)  # the official inits zero some output layers: redraw everything
    return model.eval()


def setup_var(args, tmp: Path):
    from argen.convert.var import convert

    sys.path.insert(0, str(Path(args.var).resolve()))
    sys.modules.setdefault("huggingface_hub", types.SimpleNamespace(PyTorchModelHubMixin=type("Mixin", (), {})))
    from models.var import VAR
    from models.vqvae import VQVAE

    torch.manual_seed(0)
    vae = VQVAE(vocab_size=4096, z_channels=32, ch=160, test_mode=True, share_quant_resi=4, v_patch_nums=SCALES)
    official = _randomize(VAR(vae, num_classes=1000, depth=16, embed_dim=1024, num_heads=16, drop_path_rate=0.0,
                              attn_l2_norm=True, patch_nums=SCALES, flash_if_available=False, fused_if_available=False))
    torch.save(official.state_dict(), tmp / "var_d16.pth")
    torch.save(vae.state_dict(), tmp / "vae.pth")
    convert(tmp / "var_d16.pth", tmp / "vae.pth", tmp / "argen")
    pipe = Pipeline.from_pretrained(tmp / "argen")

    def run_official(lab, warm=False):
        img = official.autoregressive_infer_cfg(len(lab), lab, cfg=1.5, top_k=1, top_p=0.0)  # [0, 1]
        return (img * 255).round().to(torch.uint8)

    def run_argen(lab, warm=False):
        return ((pipe(lab.tolist(), top_k=1) + 1) * 127.5).round().to(torch.uint8)

    return run_official, run_argen


def setup_llamagen(args, tmp: Path):
    from argen.convert.llamagen import convert
    from argen.sampling.autoregressive import RasterSamplerConfig, sample

    sys.path.insert(0, str(Path(args.llamagen).resolve()))
    from autoregressive.models.generate import generate
    from autoregressive.models.gpt import GPT_models

    official = _randomize(GPT_models["GPT-B"](vocab_size=16384, block_size=256, num_classes=1000, cls_token_num=1,
                                              model_type="c2i"))
    torch.save({"model": official.state_dict()}, tmp / "gpt.pt")
    convert(tmp / "gpt.pt", None, tmp / "argen")
    ours = argen.load(tmp / "argen")
    config = RasterSamplerConfig(cfg=1.0, top_k=1)  # argen's w = official scale 2.0 - 1

    def run_official(lab, warm=False):
        return generate(official, lab, 256, cfg_scale=2.0, cfg_interval=-1, top_k=1, temperature=1.0, top_p=1.0,
                        sample_logits=True)

    def run_argen(lab, warm=False):
        return sample(ours, None, lab, config).flatten(1)

    return run_official, run_argen


def setup_mar(args, tmp: Path):
    from argen.convert.mar import convert
    from argen.sampling.mar import MARSamplerConfig
    from argen.sampling.mar import sample as sample_continuous

    sys.path.insert(0, str(Path(__file__).parent / "parity"))
    from mar import stub_torchvision  # benchmarks/parity/mar.py

    try:
        import torchvision  # noqa: F401
    except ImportError:
        stub_torchvision()
    sys.path[:0] = [str(Path(args.mar).resolve()), str(Path(args.mar_deps).resolve())]
    from models import mar as official_mar

    official = _randomize(official_mar.mar_base(
        img_size=256, vae_stride=16, patch_size=1, vae_embed_dim=16, mask_ratio_min=0.7, label_drop_prob=0.1,
        class_num=1000, attn_dropout=0.1, proj_dropout=0.1, buffer_size=64, diffloss_d=6, diffloss_w=1024,
        num_sampling_steps="100", diffusion_batch_mul=4))
    torch.save({"model_ema": official.state_dict(), "args": argparse.Namespace()}, tmp / "checkpoint-last.pth")
    convert(tmp / "checkpoint-last.pth", None, tmp / "argen")
    ours = argen.load(tmp / "argen")
    gen = torch.Generator().manual_seed(0)

    def run_official(lab, warm=False):
        if not torch.cuda.is_available():
            torch.Tensor.cuda = lambda self, *a, **k: self
        return official.sample_tokens(len(lab), num_iter=2 if warm else 64, cfg=2.9, cfg_schedule="linear",
                                      labels=lab, temperature=1.0)

    def run_argen(lab, warm=False):
        config = MARSamplerConfig(ar_steps=2 if warm else 64, head_steps=100, cfg=1.9, cfg_schedule="linear")
        return sample_continuous(ours, None, lab, config, gen)

    return run_official, run_argen


IMPLS = ("official", "argen", "argen-bf16")
SETUPS = {"var-d16": setup_var, "llamagen-gpt-b": setup_llamagen, "mar-b": setup_mar}
WHAT = {"var-d16": "680 tokens, cfg 1.5, greedy, decode included",
        "llamagen-gpt-b": "256 tokens, CFG 2.0, greedy, tokens only",
        "mar-b": "64 AR x 100 diffusion steps, CFG 2.9, tokens only"}


def measure(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run_official, run_argen = SETUPS[args.model](args, Path(tmp))
        run = run_official if args.impl == "official" else run_argen
        labels = torch.arange(args.batch) * 97 % 1000

        def call(lab, warm=False):
            # argen-bf16: the same call under bf16 autocast, entered per call as `argen sample --precision
            # bf16` does (autocast's bf16 weight copies live for one call, so their cost is timed)
            with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=args.impl == "argen-bf16"):
                return run(lab, warm)

        call(labels[:1], warm=True)  # warm-up: first-call allocations and kernel selection
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if args.profile \
                else contextlib.nullcontext() as prof:
            t0 = time.perf_counter()
            out = call(labels)
            dt = time.perf_counter() - t0
    if args.profile:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15), file=sys.stderr)
    with open(args.save, "wb") as f:
        np.save(f, out.cpu().numpy())
    return {"impl": args.impl, "model": args.model, "batch": args.batch, "s_per_image": dt / args.batch,
            "threads": torch.get_num_threads()}


def same(model: str, a: np.ndarray, b: np.ndarray) -> str:
    """How far argen's outputs ``b`` are from the official ``a``."""
    if model == "mar-b":
        return "n/a (different random streams)"
    if model == "var-d16":
        diff = np.abs(a.astype(int) - b.astype(int))
        return "yes (images within 1/255)" if diff.max() <= 1 else f"no: mean pixel diff {diff.mean():.1f} / 255"
    return "yes (tokens)" if np.array_equal(a, b) else f"no: {np.mean(a == b):.0%} of tokens agree"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--var", help="checkout of FoundationVision/VAR (times var-d16)")
    p.add_argument("--llamagen", help="checkout of FoundationVision/LlamaGen (times llamagen-gpt-b)")
    p.add_argument("--mar", help="checkout of LTH14/mar (times mar-b; needs --mar-deps)")
    p.add_argument("--mar-deps", help="folder holding timm (pip install --no-deps --target DIR timm)")
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", choices=sorted(SETUPS), help="(internal) the model of one measurement")
    p.add_argument("--bf16", action="store_true",
                   help="also time argen under bf16 autocast (`--precision bf16`) and compare its outputs")
    p.add_argument("--impl", choices=IMPLS, help="(internal) the side of one measurement")
    p.add_argument("--batch", type=int, default=1, help="(internal) batch of one measurement")
    p.add_argument("--save", default=os.devnull, help="(internal) where one measurement writes its outputs (.npy)")
    p.add_argument("--profile", action="store_true",
                   help="with --model/--impl: print torch.profiler's op table of the timed call to stderr")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.impl:
        print(json.dumps(measure(args)), flush=True)
        return 0
    models = [m for m, d in (("var-d16", args.var), ("llamagen-gpt-b", args.llamagen), ("mar-b", args.mar)) if d]
    if not models:
        p.error("give at least one of --var, --llamagen, --mar (checkouts of the official repositories)")
    if args.mar and not args.mar_deps:
        p.error("--mar needs --mar-deps (a folder holding timm)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            for batch in [int(b) for b in args.batch_sizes.split(",")]:
                pair = []
                for impl in IMPLS[:3 if args.bf16 else 2]:
                    save = Path(tmp) / f"{model}-{batch}-{impl}.npy"
                    cmd = [sys.executable, __file__, "--model", model, "--impl", impl, "--batch", str(batch),
                           "--threads", str(args.threads), "--save", str(save)]
                    for flag in ("var", "llamagen", "mar", "mar_deps"):
                        if getattr(args, flag):
                            cmd += [f"--{flag.replace('_', '-')}", getattr(args, flag)]
                    out = subprocess.run(cmd, check=False, capture_output=True, text=True)
                    if out.returncode != 0:
                        sys.exit(f"{model} {impl} batch {batch} failed:\n{out.stderr[-3000:]}")
                    pair.append(json.loads(out.stdout.strip().splitlines()[-1]))
                    print(json.dumps(pair[-1]), flush=True)
                outputs = [np.load(Path(tmp) / f"{model}-{batch}-{r['impl']}.npy") for r in pair]
                rows.append((model, batch, pair, [same(model, outputs[0], o) for o in outputs[1:]]))
    print(f"\n| model ({args.threads} threads) | batch | official fp32 s/img | argen fp32 s/img | official / argen "
          "| same outputs |" + (" argen bf16 s/img | official / argen bf16 | bf16 outputs |" if args.bf16 else ""))
    print("|---|---|---|---|---|---|" + ("---|---|---|" if args.bf16 else ""))
    for model, batch, (off, *ours), agree in rows:
        cells = [f"{model}: {WHAT[model]}", str(batch), f"{off['s_per_image']:.2f}"]
        for r, a in zip(ours, agree):
            cells += [f"{r['s_per_image']:.2f}", f"{off['s_per_image'] / r['s_per_image']:.2f}x", a]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
