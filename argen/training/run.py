"""Train a named preset end to end: data, model, tokenizer link, trainer, held-out evaluation.

The library function behind ``argen train`` and ``argen demo``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from argen import checkpoint as ckpt
from argen.data import load_dataset
from argen.errors import ArgenError
from argen.evaluation.classifier import evaluate_accuracy
from argen.evaluation.reconstruction import evaluate_tokenizer
from argen.pipeline import copy_tokenizer
from argen.registry import get_preset, model_for_config
from argen.training import dist
from argen.training.trainer import GeneratorObjective, TrainConfig, train


def train_preset(kind: str, preset_name: str, out: str | Path, *, data: str | None = None,
                 data_path: str | None = None, tokenizer_dir: str | Path | None = None,
                 train_overrides: dict | None = None, model_overrides: dict | None = None,
                 device: str | torch.device = "cpu", resume: bool = False, quiet: bool = False,
                 command: str | None = None) -> dict:
    """Train preset ``preset_name`` of ``kind`` into ``out``; returns (and saves) its metrics.

    A generator reads its token shapes from ``tokenizer_dir`` (copied into ``out/tokenizer``)
    and its number of classes from the data; a tokenizer takes channels and size from the data,
    a classifier also its number of classes, and records its test-split accuracy in ``meta.eval``.
    """
    preset = get_preset(preset_name, kind)
    device = dist.init(torch.device(device))
    data = data or preset.data
    train_set = load_dataset(data, "train", data_path)
    config = preset.make_config().replace(**(model_overrides or {}))
    objective, tokenizer = None, None
    if kind == "generator":
        if tokenizer_dir is None:
            raise ArgenError("--tokenizer: a generator needs a tokenizer checkpoint folder")
        tokenizer = ckpt.load_model(tokenizer_dir, device)
        if not hasattr(tokenizer, "grid") or not hasattr(tokenizer, "kind"):
            raise ArgenError(f"--tokenizer: {tokenizer_dir} holds a {type(tokenizer).__name__}, not a tokenizer")
        continuous_config = hasattr(config, "token_dim") and not hasattr(config, "vocab_size")
        if continuous_config != (tokenizer.kind == "continuous"):
            want = "a continuous (KL) tokenizer, e.g. kl-digits" if continuous_config else \
                "a discrete (VQ) tokenizer, e.g. vq-digits"
            raise ArgenError(f"--tokenizer: {preset_name} needs {want}; {tokenizer_dir} holds a "
                             f"{type(tokenizer).__name__}")
        if hasattr(config, "scales") and not hasattr(tokenizer, "scales"):
            raise ArgenError(f"--tokenizer: {preset_name} needs a multi-scale tokenizer (e.g. msvq-digits), "
                             f"{tokenizer_dir} holds a {type(tokenizer).__name__}")
        if not hasattr(config, "scales") and hasattr(tokenizer, "scales"):
            raise ArgenError(f"--tokenizer: {preset_name} needs a single-scale tokenizer (e.g. vq-digits), "
                             f"{tokenizer_dir} holds a {type(tokenizer).__name__}")
        # The generator's token shapes come from its tokenizer, its classes from the data.
        links = {"vocab_size": getattr(tokenizer, "codebook_size", None), "grid": tuple(tokenizer.grid),
                 "token_dim": getattr(tokenizer, "token_dim", None), "scales": getattr(tokenizer, "scales", None),
                 "num_classes": train_set.num_classes}
        config = config.replace(**{k: v for k, v in links.items() if hasattr(config, k) and v is not None})
    else:
        config = config.replace(image_channels=train_set.channels, image_size=train_set.image_size[0])
        if kind == "classifier":
            config = config.replace(num_classes=train_set.num_classes)
    cfg = TrainConfig().replace(**preset.train).replace(**(train_overrides or {}))
    if "save_every" not in (train_overrides or {}):
        cfg = cfg.replace(save_every=min(cfg.save_every, cfg.steps))
    torch.manual_seed(cfg.seed)  # same seed, same initial weights (on every rank)
    model = model_for_config(config)(config)
    if kind == "generator":
        objective = GeneratorObjective(model, tokenizer)
        if dist.is_main():
            copy_tokenizer(tokenizer_dir, out)
    meta = {"command": command, "data": data, "data_path": data_path, "classes": list(train_set.classes)}
    if preset.sampler:
        meta["sampler"] = preset.sampler
    t0 = time.time()
    metrics = train(model, train_set, cfg, out, objective=objective, device=device, resume=resume,
                    preset=preset_name, meta=meta, quiet=quiet)
    result = {"train_seconds": round(time.time() - t0, 1), **{f"train_{k}": v for k, v in metrics.items()}}
    if kind == "tokenizer" and dist.is_main():
        test_set = load_dataset(data, "test", data_path)
        best = ckpt.load_model(out, device)
        if hasattr(best, "fit_scale_factor"):  # continuous tokenizers: unit-variance tokens for generators
            scale = best.fit_scale_factor(train_set, device=device)
            best.config = best.config.replace(scale_factor=scale)
            cfg_json = ckpt.read_config(out)
            cfg_json["config"]["scale_factor"] = scale
            ckpt.write_json(Path(out) / ckpt.CONFIG, cfg_json)
            result["scale_factor"] = scale
        result.update({f"test_{k}": v for k, v in evaluate_tokenizer(best, test_set, device=device).items()})
    if kind == "classifier" and dist.is_main():
        best = ckpt.load_model(out, device)
        result["test_accuracy"] = evaluate_accuracy(best, load_dataset(data, "test", data_path), device=device)
    if dist.is_main():
        cfg_json = ckpt.read_config(out)
        cfg_json["meta"]["eval"] = result
        ckpt.write_json(Path(out) / ckpt.CONFIG, cfg_json)
        ckpt.write_json(Path(out) / "metrics.json", result)
    dist.barrier()
    return result
