"""Reconstruction metrics of a tokenizer on held-out images: PSNR and codebook usage."""

from __future__ import annotations

import torch

from argen.tokenizers.base import usage_stats


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2), averaged over the whole batch."""
    mse = (x.float() - y.float()).pow(2).mean()
    return float(10 * torch.log10(4.0 / mse.clamp(min=1e-12)))


@torch.no_grad()
def evaluate_tokenizer(tokenizer, dataset, batch_size: int = 256, device: str | torch.device = "cpu") -> dict[str, float]:
    """PSNR, codebook usage and perplexity over ``dataset`` (per scale too for multi-scale tokenizers)."""
    tokenizer.eval()
    se, n, per_scale = 0.0, 0, None
    for i in range(0, len(dataset), batch_size):
        images, _ = dataset.batch(torch.arange(i, min(i + batch_size, len(dataset))))
        images = images.to(device)
        tokens = tokenizer.encode(images)
        rec = tokenizer.decode(tokens)
        se += float((rec.float() - images).pow(2).sum())
        n += images.numel()
        scales = tokens if isinstance(tokens, list) else [tokens]
        per_scale = [s.flatten().cpu() for s in scales] if per_scale is None else \
            [torch.cat([a, s.flatten().cpu()]) for a, s in zip(per_scale, scales)]
    V = tokenizer.codebook_size
    out = {"psnr": float(10 * torch.log10(torch.tensor(4.0 / max(se / n, 1e-12)))),
           **usage_stats(torch.cat(per_scale), V)}
    if len(per_scale) > 1:
        for si, idx in enumerate(per_scale):
            s = usage_stats(idx, V)
            out[f"usage_s{si}"], out[f"perplexity_s{si}"] = s["usage"], s["perplexity"]
    return out
