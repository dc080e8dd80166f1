"""Reconstruction metrics of a tokenizer on held-out images: PSNR, and codebook usage for discrete ones."""

from __future__ import annotations

import torch

from argen.tokenizers.base import usage_stats


@torch.no_grad()
def evaluate_tokenizer(tokenizer, dataset, batch_size: int = 256, device: str | torch.device = "cpu") -> dict[str, float]:
    """PSNR over ``dataset``; for discrete tokenizers also codebook usage and perplexity (per scale too for
    multi-scale ones); for continuous ones the std of the (scaled) tokens, which generators expect near 1."""
    tokenizer.eval()
    se, n, tokens_per_scale = 0.0, 0, []  # tokens_per_scale[batch][scale]: flat token ids or values
    for i in range(0, len(dataset), batch_size):
        images, _ = dataset.batch(torch.arange(i, min(i + batch_size, len(dataset))))
        images = images.to(device)
        tokens = tokenizer.encode(images)
        rec = tokenizer.decode(tokens)
        se += float((rec.float() - images).pow(2).sum())
        n += images.numel()
        tokens_per_scale.append([t.flatten().cpu() for t in (tokens if isinstance(tokens, list) else [tokens])])
    per_scale = [torch.cat(ts) for ts in zip(*tokens_per_scale)]
    psnr_db = float(10 * torch.log10(torch.tensor(4.0 / max(se / n, 1e-12))))
    if tokenizer.token_spec.kind == "continuous":
        return {"psnr": psnr_db, "token_std": float(per_scale[0].float().std())}
    V = tokenizer.codebook_size
    out = {"psnr": psnr_db, **usage_stats(torch.cat(per_scale), V)}
    if len(per_scale) > 1:
        for si, idx in enumerate(per_scale):
            s = usage_stats(idx, V)
            out[f"usage_s{si}"], out[f"perplexity_s{si}"] = s["usage"], s["perplexity"]
    return out
