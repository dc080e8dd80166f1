"""Pretrained tiny models that ship inside the package: ``argen sample --model fmnist-var ...``.

Each lives in ``argen/assets/models/<name>/`` as an ordinary generator checkpoint folder
(``config.json``, ``model.safetensors``, ``tokenizer/``, a ``README.md`` model card), stored in float16 to keep the
package small and loaded back into float32. Its ``config.json`` records how it was trained
(``meta.command``, ``meta.step``, ``meta.train_seconds``) and what it scored
(``meta.eval``). ``export`` packs a trained checkpoint; nothing is ever downloaded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

import argen.checkpoint as ckpt
from argen.card import write_card
from argen.errors import ArgenError

MODELS_DIR = Path(__file__).parent / "assets" / "models"


def list_models() -> list[str]:
    """Names of the shipped models."""
    if not MODELS_DIR.is_dir():
        return []
    return sorted(p.name for p in MODELS_DIR.iterdir() if (p / ckpt.CONFIG).is_file())


def model_path(name: str) -> Path:
    """The folder of shipped model ``name``; a one-line error lists the names otherwise."""
    # a name, never a path: "../x" or "/abs/dir" would reach folders outside the shipped models
    if name not in list_models():
        raise ArgenError(f"--model: unknown model {name!r}; shipped: {', '.join(list_models()) or 'none'}")
    return MODELS_DIR / name


def _export_folder(src: Path, dst: Path, meta_update: dict | None = None) -> None:
    """Copy one checkpoint folder's config and weights (float tensors as float16), nothing else."""
    dst.mkdir(parents=True, exist_ok=True)
    tensors = ckpt.load_tensors(src / ckpt.WEIGHTS)
    half = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    ckpt.save_tensors(dst / ckpt.WEIGHTS, half)
    cfg = ckpt.read_config(src)
    if meta_update:
        cfg["meta"] = {**cfg.get("meta", {}), **meta_update}
    ckpt.write_json(dst / ckpt.CONFIG, cfg)


def export(checkpoint_dir: str | Path, name: str, meta_update: dict | None = None,
           models_dir: str | Path = MODELS_DIR) -> Path:
    """Pack the generator checkpoint ``checkpoint_dir`` (with its tokenizer) as shipped model ``name``."""
    src, dst = Path(checkpoint_dir), Path(models_dir) / name
    if not (src / ckpt.TOKENIZER_DIR).is_dir():
        raise ArgenError(f"{src} has no {ckpt.TOKENIZER_DIR}/: only generator checkpoints can be shipped")
    if dst.exists():
        shutil.rmtree(dst)
    _export_folder(src, dst, meta_update)
    _export_folder(src / ckpt.TOKENIZER_DIR, dst / ckpt.TOKENIZER_DIR)
    write_card(dst, load_as=name)
    return dst


def max_abs_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """Largest weight difference between two models of the same layout (float16 rounding when shipped)."""
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa if sa[k].is_floating_point())
