"""Parity with the official LlamaGen text-to-image GPT: same random weights, same caption features, same logits
and greedy tokens.

    python benchmarks/parity/llamagen_t2i.py --official /path/to/LlamaGen [--size XL|B] [--threads 2]

Builds the official T2I GPT (``GPT_models["GPT-XL"](block_size=256, cls_token_num=120, model_type="t2i")``,
from a checkout of FoundationVision/LlamaGen, never copied into argen) with random weights, saves its state
dict as the official training code does (``{"model": ...}``) and converts it with ``argen convert``'s code
path (``--size XL``, the released size; other sizes of the same layout are not presets, so their file
goes through the converter's key map onto the preset resized). T5 is not run: both models read the same
random caption features (B, 120, 2048) with masks of different lengths, left-padded as the official
``sample_t2i.py`` feeds them; argen reads them from a precomputed-features file. Compared:

1. teacher-forced logits (official training path, its ``dataset/t2i.py`` attention mask) against argen's
   forward: max abs difference, allclose at 1e-4; and the same with the features right-padded in argen's
   file (argen left-pads them itself);
2. greedy decoding with CFG (official ``generate(emb_masks=..., top_k=1)`` against argen's KV-cached
   sampler with ``top_k=1``): token agreement over 256 tokens per image.

Exits 1 when a check fails. Every official parameter is redrawn (normal, std 0.02; the output head is
zero-initialised otherwise); ``uncond_embedding``, a buffer, keeps its official draw.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

import argen
from argen.convert.common import Tensors, load_strict
from argen.convert.llamagen import GPT_FRESH, GPT_RULES, convert
from argen.presets.raster import LLAMAGEN_SIZES
from argen.sampling.autoregressive import RasterSamplerConfig, sample
from argen.text import save_precomputed

T, D = 120, 2048  # caption positions and FLAN-T5-XL width


def convert_gpt(path: Path, size: str, out: Path) -> torch.nn.Module:
    """The official file as argen's model: ``argen convert`` for the released XL; for another size the
    converter's key map and strict load onto ``llamagen-t2i-xl`` at that size."""
    if size == "XL":
        print(f"converted: {convert(path, None, out)}")
        return argen.load(out)
    depth, heads, width = LLAMAGEN_SIZES[size]
    model = argen.build("llamagen-t2i-xl", depth=depth, heads=heads, width=width)
    tensors = Tensors(torch.load(path, map_location="cpu", weights_only=True)["model"], path, ignore=("freqs_cis",))
    mapped = tensors.rename(GPT_RULES)
    own = model.state_dict()
    mapped.update({name: torch.full(own[name].shape, value) for name, value in GPT_FRESH})
    load_strict(model, mapped, path)
    tensors.finish()
    return model


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official", required=True, help="checkout of FoundationVision/LlamaGen")
    p.add_argument("--size", default="XL", choices=["B", "XL"], help="XL: the released t2i_XL_stage1_256.pt layout")
    p.add_argument("--cfg-scale", type=float, default=7.5, help="the official scale s (argen's w = s - 1)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(args.official).resolve()))
    from autoregressive.models.generate import generate
    from autoregressive.models.gpt import GPT_models

    torch.manual_seed(0)
    # dropouts off so that the official model's training-mode forward (its teacher-forcing path) is deterministic
    official = GPT_models[f"GPT-{args.size}"](vocab_size=16384, block_size=256, cls_token_num=T, model_type="t2i",
                                              caption_dim=D, resid_dropout_p=0.0, ffn_dropout_p=0.0,
                                              token_dropout_p=0.0, drop_path_rate=0.0)
    official.cls_embedding.uncond_prob = 0.0  # never swaps a caption for uncond_embedding in training mode
    with torch.no_grad():
        for t in official.parameters():
            t.normal_(0, 0.02)
    tmp_dir = tempfile.TemporaryDirectory()
    tmp = Path(tmp_dir.name)
    torch.save({"model": official.state_dict(), "steps": 0}, tmp / f"t2i_{args.size}.pt")
    ours = convert_gpt(tmp / f"t2i_{args.size}.pt", args.size, tmp / "argen").eval()

    # The same caption features for both: B captions of different lengths, left-padded (real tokens last)
    # and zero at the padding, as sample_t2i.py hands them to generate().
    B = args.batch
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([T * (i + 1) // (B + 1) + 3 for i in range(B)])
    left_BT = torch.arange(T)[None] >= T - lengths[:, None]
    feats_BTD = torch.randn(B, T, D, generator=g) * left_BT[..., None]
    right_BT = torch.arange(T)[None] < lengths[:, None]  # the same tokens at the start, as T5 gives them
    right_feats = torch.stack([torch.roll(f, -int(n), 0) for f, n in zip(feats_BTD, T - lengths)])
    captions = [f"caption {i}" for i in range(B)]
    save_precomputed(tmp / "left.safetensors", feats_BTD, left_BT, captions)
    save_precomputed(tmp / "right.safetensors", right_feats, right_BT, captions)
    idx = torch.randint(0, 16384, (B, 256), generator=g)

    # 1. teacher forcing: the official training forward with its data set's mask (causal, caption columns
    # times the caption mask, the diagonal set), image tokens 0..254 after the caption
    L = T + 255
    mask = torch.tril(torch.ones(B, L, L))
    mask[:, :, :T] = mask[:, :, :T] * left_BT[:, None, :].float()
    eye = torch.eye(L)
    mask = (mask * (1 - eye) + eye).bool()[:, None]
    official.train()  # the official teacher-forcing path; every dropout is 0
    got = {}
    with torch.no_grad():
        ref, _ = official(idx[:, :-1], feats_BTD, mask=mask)
        for side in ("left", "right"):
            ours.text.encoder.use_file(tmp / f"{side}.safetensors")
            with ours.conditioned(captions) as ids:
                got[side] = ours(idx, ids)
    diff = {side: (ref - x).abs().max().item() for side, x in got.items()}
    close = {side: torch.allclose(ref, x, atol=1e-4, rtol=1e-4) for side, x in got.items()}

    # 2. greedy decoding with CFG: the null caption is uncond_embedding under the prompt's mask in both
    official.eval()
    t0 = time.time()
    with torch.no_grad():
        ref_tokens = generate(official, feats_BTD, 256, left_BT.long(), cfg_scale=args.cfg_scale, cfg_interval=-1,
                              top_k=1, temperature=1.0, top_p=1.0, sample_logits=True)
    t_official = time.time() - t0
    ours.text.encoder.use_file(tmp / "left.safetensors")
    t0 = time.time()
    with ours.conditioned(captions) as ids:
        tokens = sample(ours, None, ids, RasterSamplerConfig(cfg=args.cfg_scale - 1.0, top_k=1)).flatten(1)
    t_argen = time.time() - t0
    agree = (ref_tokens == tokens).float().mean().item()
    first_diff = [int((r != t).nonzero()[0]) if (r != t).any() else None for r, t in zip(ref_tokens, tokens)]
    distinct = len(set(ref_tokens.flatten().tolist()))
    tmp_dir.cleanup()

    ok = all(close.values()) and agree == 1.0
    print(f"\n| LlamaGen T2I GPT-{args.size} (random weights, fp32, {args.threads} threads) | result |")
    print("|---|---|")
    print(f"| caption lengths (of {T}), left-padded | {', '.join(map(str, lengths.tolist()))} |")
    print(f"| official teacher-forced logits, std | {ref.std().item():.3f} |")
    for side, words in (("left", "left-padded features"), ("right", "right-padded features (argen left-pads)")):
        print(f"| teacher-forced logits, max abs diff ({B} x 256 x 16384), {words} | {diff[side]:.2e} "
              f"({'allclose 1e-4' if close[side] else 'NOT allclose 1e-4'}) |")
    print(f"| greedy tokens with CFG s={args.cfg_scale}, agreement | {agree:.2%} ({distinct} distinct tokens; "
          f"first difference at {first_diff}) |")
    print(f"| greedy sampling wall time, official / argen | {t_official:.1f} s / {t_argen:.1f} s |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
