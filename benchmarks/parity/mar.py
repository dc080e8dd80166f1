"""Parity with the official MAR: same random weights, same z, same head predictions, same KL-16.

    python benchmarks/parity/mar.py --official /path/to/mar --deps DIR [--size base] [--threads 2]

Builds the official MAR and KL-16 autoencoder (a checkout of LTH14/mar, never copied into argen)
with random weights, saves them as the official code does (``{"model", "model_ema", "epoch",
"args": Namespace}``; ``kl16.ckpt`` as ``{"model": ...}``), converts both files with
``argen convert``'s code path and compares, in eval mode:

1. the encoder + decoder output z (B, 256, C) for the same tokens, mask and labels;
2. the diffusion head network's output for the same x_t, t and z;
3. KL-16: the posterior mean of the same images, and the images decoded from the same tokens
   (``decode(tokens / 0.2325)`` as the official sampler does).

Max abs differences, allclose at 1e-4. Sampling is not compared: MAR draws its orders with numpy
and its noise with torch in an order argen does not reproduce.

The official code imports timm's ViT ``Block``; timm is put on the path from ``--deps`` (``pip
install --no-deps --target DIR timm``). timm imports torchvision, which cannot be installed beside
this CPU build of torch and which the Block never calls: empty stand-in modules take its place.
Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import types
from pathlib import Path

import torch
from torch import nn

import argen
from argen.convert.mar import convert


def stub_torchvision() -> None:
    """Empty stand-ins for the torchvision modules timm imports (it is not installable beside this torch)."""
    class Stub(types.ModuleType):
        def __getattr__(self, name):  # any class timm names at import time; none is ever called
            if name.startswith("__"):
                raise AttributeError(name)
            return type(name, (nn.Module,), {"BILINEAR": 2, "BICUBIC": 3, "NEAREST": 0, "LANCZOS": 1,
                                             "HAMMING": 5, "BOX": 4})

    names = ["torchvision", "torchvision.ops", "torchvision.ops.misc", "torchvision.transforms",
             "torchvision.transforms.functional", "torchvision.transforms.v2", "torchvision.datasets",
             "torchvision.models", "torchvision.models.feature_extraction", "torchvision.models._utils"]
    for name in names:
        sys.modules[name] = Stub(name)
        sys.modules[name].__path__ = []
    for name in names[1:]:
        parent, _, child = name.rpartition(".")
        setattr(sys.modules[parent], child, sys.modules[name])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official", required=True, help="checkout of LTH14/mar")
    p.add_argument("--deps", required=True, help="folder holding timm (pip install --no-deps --target DIR timm)")
    p.add_argument("--size", default="base", choices=["base", "large", "huge"])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        stub_torchvision()
    sys.path[:0] = [str(Path(args.official).resolve()), str(Path(args.deps).resolve())]
    from models import mar as official_mar
    from models.vae import AutoencoderKL

    torch.manual_seed(0)
    official = getattr(official_mar, f"mar_{args.size}")(
        img_size=256, vae_stride=16, patch_size=1, vae_embed_dim=16, mask_ratio_min=0.7, label_drop_prob=0.1,
        class_num=1000, attn_dropout=0.1, proj_dropout=0.1, buffer_size=64, diffloss_d=6, diffloss_w=1024,
        num_sampling_steps="100", diffusion_batch_mul=4).eval()
    with torch.no_grad():
        for t in official.parameters():
            t.normal_(0, 0.02)
    vae = AutoencoderKL(embed_dim=16, ch_mult=(1, 1, 2, 2, 4)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        sd = official.state_dict()
        torch.save({"model": sd, "model_ema": sd, "epoch": 0, "args": argparse.Namespace(model="mar_base")},
                   Path(tmp) / "checkpoint-last.pth")
        torch.save({"model": vae.state_dict()}, Path(tmp) / "kl16.ckpt")
        summary = convert(Path(tmp) / "checkpoint-last.pth", Path(tmp) / "kl16.ckpt", Path(tmp) / "argen")
        ours, tok = argen.load(Path(tmp) / "argen"), argen.load(Path(tmp) / "argen" / "tokenizer")
    print(f"converted: {summary}")

    B, N = args.batch, 256
    g = torch.Generator().manual_seed(1)
    tokens = torch.randn(B, N, 16, generator=g)
    labels = torch.randint(0, 1000, (B,), generator=g)
    order = torch.argsort(torch.rand(B, N, generator=g), dim=1)
    mask = torch.zeros(B, N)
    mask.scatter_(1, order[:, :180], 1.0)  # the same count per image, as MAR's masking gives
    with torch.no_grad():
        ref_z = official.forward_mae_decoder(official.forward_mae_encoder(tokens, mask, official.class_emb(labels)),
                                             mask)
        got_z = ours(tokens, mask.bool(), labels)
        x_t = torch.randn(B * N, 16, generator=g)
        t = torch.randint(0, 1000, (B * N,), generator=g)
        ref_eps = official.diffloss.net(x_t, t, ref_z.flatten(0, 1))
        got_eps = ours.diffloss.net(x_t, t, ref_z.flatten(0, 1))
        images = torch.rand(B, 3, 256, 256, generator=g) * 2 - 1
        ref_mean, got_mean = vae.encode(images).mean, tok.posterior(images)[0]
        ref_img = vae.decode(tokens.transpose(1, 2).reshape(B, 16, 16, 16) / 0.2325).clamp(-1, 1)
        got_img = tok.decode(tokens.transpose(1, 2).reshape(B, 16, 16, 16))
    rows = [("encoder + decoder z", ref_z, got_z), ("diffusion head output", ref_eps, got_eps),
            ("KL-16 posterior mean", ref_mean, got_mean), ("KL-16 decoded images", ref_img, got_img)]
    ok = True
    print(f"\n| MAR-{args.size} (random weights, fp32, {args.threads} threads) | max abs diff | allclose 1e-4 |")
    print("|---|---|---|")
    for name, ref, got in rows:
        close = torch.allclose(ref, got, atol=1e-4, rtol=1e-4)
        ok &= close
        print(f"| {name} {tuple(ref.shape)} | {(ref - got).abs().max().item():.2e} | {close} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
