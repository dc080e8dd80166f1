"""Parity with the official VAR transformer: same random weights, same teacher-forced logits.

    python benchmarks/parity/var.py --official /path/to/VAR [--depth 16] [--threads 2]

Builds the official VAR-d{depth} (from a checkout of FoundationVision/VAR, never copied into
argen) with random weights, saves its state dict as a released file
(a bare state dict), converts it with ``argen convert``'s code path and compares the logits of
all 680 positions for the same labels and teacher-forcing inputs (max abs difference; allclose
at 1e-4). Label dropout is off on both sides. Greedy sampling needs the multi-scale VQVAE, whose
converter is not written yet, so it is not compared. Exits 1 when the check fails.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import types
from pathlib import Path

import torch

import argen
from argen.convert.var import convert

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
    from models.var import VAR
    from models.vqvae import VQVAE

    torch.manual_seed(0)
    d = args.depth
    vae = VQVAE(vocab_size=4096, z_channels=32, ch=160, test_mode=True, share_quant_resi=4, v_patch_nums=SCALES)
    official = VAR(vae, num_classes=1000, depth=d, embed_dim=64 * d, num_heads=d, drop_path_rate=0.0,
                   cond_drop_rate=0.0, attn_l2_norm=True, patch_nums=SCALES, flash_if_available=False,
                   fused_if_available=False).eval()
    with torch.no_grad():
        for t in official.parameters():
            t.normal_(0, 0.02)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(official.state_dict(), Path(tmp) / f"var_d{d}.pth")
        summary = convert(Path(tmp) / f"var_d{d}.pth", None, Path(tmp) / "argen")
        ours = argen.load(Path(tmp) / "argen")
    print(f"converted: {summary}")

    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 1000, (args.batch,), generator=g)
    x = torch.randn(args.batch, sum(s * s for s in SCALES) - 1, 32, generator=g)  # teacher-forcing inputs
    with torch.no_grad():
        ref = official(labels, x).float()
        got = ours(labels, x).float()
    diff = (ref - got).abs().max().item()
    ok = torch.allclose(ref, got, atol=1e-4, rtol=1e-4)
    agree = (ref.argmax(-1) == got.argmax(-1)).float().mean().item()
    print(f"\n| VAR-d{d} (random weights, fp32, {args.threads} threads) | result |")
    print("|---|---|")
    print(f"| teacher-forced logits, max abs diff ({args.batch} x 680 x 4096) | {diff:.2e} "
          f"({'allclose 1e-4' if ok else 'NOT allclose 1e-4'}) |")
    print(f"| argmax agreement over all positions | {agree:.2%} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
