"""Parity with the official LlamaGen: same random weights, same logits, greedy tokens and images.

    python benchmarks/parity/llamagen.py --official /path/to/LlamaGen [--size B] [--threads 2]

Builds the official GPT and VQ-16 (from a checkout of FoundationVision/LlamaGen, never copied
into argen) with random weights, saves their state dicts as the official training code does
(``{"model": ...}``), converts both files with ``argen convert``'s code path, and compares:

1. teacher-forced logits for the same tokens and labels (max abs difference; allclose at 1e-4);
2. greedy decoding with CFG (official ``generate(top_k=1)`` against argen's KV-cached sampler with
   ``top_k=1``): token agreement over 256 tokens per image;
3. VQ-16: the tokens of the same images, and the official ``decode_code`` of the official greedy
   tokens against the uint8 images ``argen sample --checkpoint OUT --top-k 1`` writes.

Exits 1 when a check fails. The official output head is zero-initialised, so every weight is
redrawn (normal, std 0.02) to make the logits informative.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import argen
from argen.cli import main as argen_main
from argen.convert.llamagen import convert
from argen.sampling.autoregressive import RasterSamplerConfig, sample


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official", required=True, help="checkout of FoundationVision/LlamaGen")
    p.add_argument("--size", default="B", choices=["B", "L", "XL", "XXL", "3B"])
    p.add_argument("--cfg-scale", type=float, default=2.0, help="the official scale s (argen's w = s - 1)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(args.official).resolve()))
    from autoregressive.models.generate import generate
    from autoregressive.models.gpt import GPT_models
    from tokenizer.tokenizer_image.vq_model import VQ_models

    torch.manual_seed(0)
    # dropouts off so that the official model's training-mode forward (its teacher-forcing path) is deterministic
    official = GPT_models[f"GPT-{args.size}"](vocab_size=16384, block_size=256, num_classes=1000, cls_token_num=1,
                                              model_type="c2i", resid_dropout_p=0.0, ffn_dropout_p=0.0,
                                              token_dropout_p=0.0, drop_path_rate=0.0)
    official.cls_embedding.dropout_prob = 0.0  # keeps the null-class row (built for prob > 0) but never drops
    with torch.no_grad():
        for t in official.parameters():
            t.normal_(0, 0.02)
    vq = VQ_models["VQ-16"]().eval()
    tmp_dir = tempfile.TemporaryDirectory()
    tmp = Path(tmp_dir.name)
    torch.save({"model": official.state_dict(), "steps": 0}, tmp / "official.pt")
    torch.save({"model": vq.state_dict(), "steps": 0}, tmp / "vq_ds16_c2i.pt")
    print(f"converted: {convert(tmp / 'official.pt', tmp / 'vq_ds16_c2i.pt', tmp / 'argen')}")
    ours, tok = argen.load(tmp / "argen"), argen.load(tmp / "argen" / "tokenizer")

    B = args.batch
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 16384, (B, 256), generator=g)
    labels = torch.randint(0, 1000, (B,), generator=g)
    official.train()  # the official teacher-forcing path; every dropout is 0
    with torch.no_grad():
        ref, _ = official(idx[:, :-1], labels)
        got = ours(idx, labels)
    logit_diff = (ref - got).abs().max().item()
    logits_ok = torch.allclose(ref, got, atol=1e-4, rtol=1e-4)

    official.eval()
    t0 = time.time()
    with torch.no_grad():
        ref_tokens = generate(official, labels, 256, cfg_scale=args.cfg_scale, cfg_interval=-1, top_k=1,
                              temperature=1.0, top_p=1.0, sample_logits=True)
    t_official = time.time() - t0
    t0 = time.time()
    tokens = sample(ours, None, labels, RasterSamplerConfig(cfg=args.cfg_scale - 1.0, top_k=1)).flatten(1)
    t_argen = time.time() - t0
    agree = (ref_tokens == tokens).float().mean().item()
    first_diff = [int((r != t).nonzero()[0]) if (r != t).any() else None for r, t in zip(ref_tokens, tokens)]

    images = torch.rand(B, 3, 256, 256, generator=g) * 2 - 1
    with torch.no_grad():
        vq_agree = (vq.encode(images)[2][2].view(B, 16, 16) == tok.encode(images)).float().mean().item()
        ref_img = vq.decode_code(ref_tokens, shape=(B, 8, 16, 16)).clamp(-1, 1)
    ref_u8 = ((ref_img.permute(0, 2, 3, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    out = tmp / "samples"
    assert argen_main(["sample", "--checkpoint", str(tmp / "argen"), "--labels", ",".join(map(str, labels.tolist())),
                       "--per-label", "1", "--cfg", str(args.cfg_scale - 1.0), "--top-k", "1", "--out", str(out),
                       "--quiet", "--device", "cpu", "--threads", str(args.threads)]) == 0
    pix = int(np.abs(ref_u8.astype(int) - np.load(out.with_suffix(".npz"))["images"].astype(int)).max())
    tmp_dir.cleanup()

    print(f"\n| LlamaGen GPT-{args.size} (random weights, fp32, {args.threads} threads) | result |")
    print("|---|---|")
    print(f"| teacher-forced logits, max abs diff ({B} x 256 x 16384) | {logit_diff:.2e} "
          f"({'allclose 1e-4' if logits_ok else 'NOT allclose 1e-4'}) |")
    print(f"| greedy tokens with CFG s={args.cfg_scale}, agreement | {agree:.2%} (first difference at {first_diff}) |")
    print(f"| greedy sampling wall time, official / argen | {t_official:.1f} s / {t_argen:.1f} s |")
    print(f"| VQ-16 tokens of {B} random images, agreement | {vq_agree:.2%} |")
    print(f"| greedy images, `argen sample --top-k 1` uint8 vs official decode_code, max abs diff | {pix} / 255 |")
    return 0 if logits_ok and agree == 1.0 and vq_agree == 1.0 and pix <= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
