"""A self-contained HTML report of an evaluation: one file, images inlined as PNG data URIs.

Sections: the metrics table; a sample grid per class with its class accuracy; nearest
training neighbours of a few samples per class (in the reference classifier's feature space,
with the distance beside the typical test-to-train distance: a sample much closer to a
training image than real test images are is likely a copy); training curves read from the
checkpoint's ``log.jsonl``.
"""

from __future__ import annotations

import base64
import html
import io
import json

import numpy as np
import torch
from PIL import Image


def _png(images_u8: np.ndarray, nrow: int, scale: int) -> str:
    """(N, H, W, C) uint8 -> a data URI of a grid, ``nrow`` images per row, upscaled ``scale`` x (nearest)."""
    n, h, w, c = images_u8.shape
    rows = -(-n // nrow)
    grid = np.full((rows * (h + 1) + 1, nrow * (w + 1) + 1, c), 255, np.uint8)
    for i, im in enumerate(images_u8):
        r, k = divmod(i, nrow)
        grid[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + k * (w + 1): 1 + k * (w + 1) + w] = im
    img = Image.fromarray(grid[..., 0] if c == 1 else grid)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _svg_curve(steps: list[float], values: list[float], title: str, w: int = 420, h: int = 160) -> str:
    if len(steps) < 2:
        return ""
    x0, x1, y0, y1 = min(steps), max(steps), min(values), max(values)
    sx = lambda s: 40 + (s - x0) / max(x1 - x0, 1e-12) * (w - 50)
    sy = lambda v: h - 20 - (v - y0) / max(y1 - y0, 1e-12) * (h - 40)
    pts = " ".join(f"{sx(s):.1f},{sy(v):.1f}" for s, v in zip(steps, values))
    return (f'<svg width="{w}" height="{h}" style="border:1px solid #ccc"><text x="40" y="14" font-size="12">'
            f'{html.escape(title)}: {values[-1]:.4g} at step {steps[-1]:.0f}</text>'
            f'<text x="2" y="{sy(y1) + 4:.0f}" font-size="10">{y1:.3g}</text>'
            f'<text x="2" y="{sy(y0):.0f}" font-size="10">{y0:.3g}</text>'
            f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{pts}"/></svg>')


def nearest_neighbours(fake_f: torch.Tensor, train_f: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance, index) of each fake feature's nearest training feature."""
    d, i = [], []
    for k in range(0, len(fake_f), chunk):
        m = torch.cdist(fake_f[k:k + chunk], train_f).min(1)
        d.append(m.values)
        i.append(m.indices)
    return torch.cat(d), torch.cat(i)


def render_report(metrics: dict, images_u8: np.ndarray, labels: np.ndarray | None,
                  classes: list[str], nn_pairs: tuple[np.ndarray, np.ndarray, np.ndarray, float] | None = None,
                  log_rows: list[dict] | None = None, title: str = "argen eval") -> str:
    """The report as one self-contained HTML page; ``nn_pairs = (samples_u8, their nearest train images_u8,
    distances, test median)``."""
    scale = max(1, 64 // images_u8.shape[1])
    style = ("<style>body{font-family:sans-serif;max-width:1100px;margin:auto}td,th{padding:2px 8px;"
             "text-align:right}img{image-rendering:pixelated}</style>")
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>", style,
             f"<h1>{html.escape(title)}</h1>"]
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not k.startswith("class_accuracy_")}
    parts.append("<h2>Metrics</h2><table>" + "".join(
        f"<tr><th>{html.escape(k)}</th><td>{v:.4g}</td></tr>" for k, v in sorted(scalars.items())) + "</table>")
    other = {k: v for k, v in metrics.items() if not isinstance(v, (int, float))}
    if other:
        parts.append(f"<pre>{html.escape(json.dumps(other, indent=1))}</pre>")
    if labels is not None:
        parts.append("<h2>Samples per class</h2><table><tr><th>class</th><th>accuracy</th><th>samples</th></tr>")
        for c in np.unique(labels):
            acc = metrics.get(f"class_accuracy_{int(c)}")
            name = classes[int(c)] if int(c) < len(classes) else str(c)
            sel = images_u8[labels == c][:16]
            parts.append(f"<tr><th>{int(c)} {html.escape(name)}</th><td>{'' if acc is None else f'{acc:.0%}'}</td>"
                         f"<td style='text-align:left'><img src='{_png(sel, 16, scale)}'></td></tr>")
        parts.append("</table>")
    else:
        parts.append(f"<h2>Samples</h2><img src='{_png(images_u8[:64], 16, scale)}'>")
    if nn_pairs is not None:
        samples, neighbours, dist, test_median = nn_pairs
        parts.append("<h2>Nearest training neighbours</h2><p>Top row: samples; bottom row: the closest training "
                     "image in the reference classifier's feature space. Distances of these samples: "
                     f"median {np.median(dist):.3g}, min {dist.min():.3g}; real test images to their nearest "
                     f"training image: median {test_median:.3g}. Samples far closer than that are likely copies."
                     f"</p><img src='{_png(np.concatenate([samples, neighbours]), len(samples), scale)}'>")
    if log_rows:
        parts.append("<h2>Training curves</h2>")
        for key in ("loss", "ce", "head_loss", "rec", "lr"):
            rows = [r for r in log_rows if key in r]
            parts.append(_svg_curve([r["step"] for r in rows], [r[key] for r in rows], key))
    return "\n".join(parts) + "\n"
