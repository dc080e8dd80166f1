"""Parity with the official VAR: same random weights, same logits, same tokens, same greedy images.

    python benchmarks/parity/var.py --official /path/to/VAR [--depth 16] [--threads 2]

Builds the official VAR-d{depth} and its multi-scale VQVAE (from a checkout of
FoundationVision/VAR, never copied into argen) with random weights, saves both as the released
files are saved (bare state dicts), converts them with ``argen convert`` and compares:

1. teacher-forced logits of all 680 positions for the same labels and inputs (max abs
   difference; allclose at 1e-4); label dropout is off on both sides;
2. the tokenizer: the token maps of every scale for the same images, and the images decoded
   from the same tokens;
3. greedy sampling: the official ``autoregressive_infer_cfg(cfg=1.5, top_k=1)`` against
   ``argen sample --checkpoint OUT --top-k 1`` (the converted folder's own sampler settings:
   cfg 1.5 on the official linear ramp), tokens of every scale and the written uint8 images.

Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

import argen
from argen.cli import main as argen_main
from argen.convert.var import convert
from argen.sampling.next_scale import VARSamplerConfig
from argen.sampling.next_scale import sample as next_scale

SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official", required=True, help="checkout of FoundationVision/VAR")
    p.add_argument("--depth", type=int, default=16, choices=[16, 20, 24, 30])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(args.official).resolve()))
    # models/var.py subclasses huggingface_hub's PyTorchModelHubMixin only to upload and download
    # weights; nothing here uses it, so an empty stand-in avoids installing the hub client.
    sys.modules.setdefault("huggingface_hub", types.SimpleNamespace(PyTorchModelHubMixin=type("Mixin", (), {})))
    import models.var as official_var
    from models.vqvae import VQVAE

    torch.manual_seed(0)
    d, B = args.depth, args.batch
    vae = VQVAE(vocab_size=4096, z_channels=32, ch=160, test_mode=True, share_quant_resi=4, v_patch_nums=SCALES)
    official = official_var.VAR(vae, num_classes=1000, depth=d, embed_dim=64 * d, num_heads=d, drop_path_rate=0.0,
                                cond_drop_rate=0.0, attn_l2_norm=True, patch_nums=SCALES, flash_if_available=False,
                                fused_if_available=False).eval()
    with torch.no_grad():
        for t in official.parameters():
            t.normal_(0, 0.02)
    rows, ok = [], True
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.save(official.state_dict(), tmp / f"var_d{d}.pth")
        torch.save(vae.state_dict(), tmp / "vae_ch160v4096z32.pth")
        print(f"converted: {convert(tmp / f'var_d{d}.pth', tmp / 'vae_ch160v4096z32.pth', tmp / 'argen')}")
        ours, tok = argen.load(tmp / "argen"), argen.load(tmp / "argen" / "tokenizer")

        # 1. teacher-forced logits
        g = torch.Generator().manual_seed(1)
        labels = torch.randint(0, 1000, (B,), generator=g)
        x = torch.randn(B, sum(s * s for s in SCALES) - 1, 32, generator=g)
        with torch.no_grad():
            ref, got = official(labels, x).float(), ours(labels, x).float()
        close = torch.allclose(ref, got, atol=1e-4, rtol=1e-4)
        ok &= close
        rows.append((f"teacher-forced logits, max abs diff ({B} x 680 x 4096)",
                     f"{(ref - got).abs().max().item():.2e} ({'allclose 1e-4' if close else 'NOT allclose 1e-4'})"))
        rows.append(("argmax agreement over all positions", f"{(ref.argmax(-1) == got.argmax(-1)).float().mean():.2%}"))

        # 2. tokenizer: encode the same images, decode the same tokens
        images = torch.rand(B, 3, 256, 256, generator=g) * 2 - 1
        with torch.no_grad():
            ref_idx = vae.img_to_idxBl(images)
            got_idx = tok.encode(images)
            agree = torch.cat([(r == o.flatten(1)).flatten() for r, o in zip(ref_idx, got_idx)]).float().mean()
            ref_img = vae.idxBl_to_img(ref_idx, same_shape=True, last_one=True)
            got_img = tok.decode([r.view(B, pn, pn) for r, pn in zip(ref_idx, SCALES)])
        diff = (ref_img - got_img).abs().max().item()
        ok &= bool(agree == 1) and diff < 1e-4
        rows.append((f"VQVAE tokens of {B} random images, all 10 scales", f"{agree:.2%} agree"))
        rows.append(("VQVAE decode of the same tokens, max abs diff (pixels in [-1, 1])", f"{diff:.2e}"))

        # 3. greedy sampling: official top-1 against `argen sample --top-k 1`
        drawn = []
        sample = official_var.sample_with_top_k_top_p_
        official_var.sample_with_top_k_top_p_ = lambda *a, **k: drawn.append(sample(*a, **k)) or drawn[-1]
        with torch.no_grad():
            ref_img = official.autoregressive_infer_cfg(B, labels, cfg=1.5, top_k=1, top_p=0.0)  # [0, 1]
        official_var.sample_with_top_k_top_p_ = sample
        ref_u8 = (ref_img.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
        out = tmp / "samples"
        assert argen_main(["sample", "--checkpoint", str(tmp / "argen"), "--labels", ",".join(map(str, labels.tolist())),
                           "--per-label", "1", "--top-k", "1", "--out", str(out), "--quiet", "--device", "cpu",
                           "--threads", str(args.threads)]) == 0
        got_u8 = np.load(out.with_suffix(".npz"))["images"]
        with torch.no_grad():  # the tokens behind those images: the same sampler the CLI ran
            tokens = next_scale(ours, tok, labels, VARSamplerConfig(cfg=1.5, top_k=1))
        same = torch.cat([(r[:, :, 0] == o.flatten(1)).flatten() for r, o in zip(drawn, tokens)]).float().mean()
        pix = np.abs(ref_u8.astype(int) - got_u8.astype(int)).max()
        ok &= bool(same == 1) and pix <= 1
        rows.append((f"greedy sampling, cfg 1.5: tokens, {B} x 680", f"{same:.2%} agree"))
        rows.append(("greedy images, `argen sample --top-k 1` uint8 vs official, max abs diff", f"{pix} / 255"))

    print(f"\n| VAR-d{d} (random weights, fp32, {args.threads} threads) | result |")
    print("|---|---|")
    for what, result in rows:
        print(f"| {what} | {result} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
