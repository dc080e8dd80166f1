"""Train a named preset end to end: data, model, tokenizer link, trainer, held-out evaluation.

The library function behind ``argen train`` and ``argen demo``.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch

import argen.checkpoint as ckpt
from argen.card import write_card
from argen.data import DATASETS, load_dataset
from argen.data.codes import CodesTokenizer, check_tokenizer, open_codes
from argen.errors import ArgenError, CheckpointError, DataError
from argen.evaluation.classifier import evaluate_accuracy
from argen.evaluation.reconstruction import evaluate_tokenizer
from argen.generators.conditions import MAX_PROMPTS
from argen.models import load_checkpoint
from argen.registry import get_preset, model_for_config
from argen.text import vocab_from_captions
from argen.tokenizers.base import Tokenizer
from argen.tokens import check_kind
from argen.training import dist
from argen.training.outdir import check_run_folder, clear_run, lock_folder
from argen.training.trainer import GeneratorObjective, TrainConfig, tensorboard_writer, train


def train_preset(kind: str, preset_name: str, out: str | Path, *, data: str | None = None,
                 data_path: str | None = None, tokenizer_dir: str | Path | None = None,
                 train_overrides: dict | None = None, model_overrides: dict | None = None,
                 device: str | torch.device = "cpu", resume: bool = False, overwrite: bool = False,
                 quiet: bool = False, command: str | None = None, tensorboard: bool = False,
                 image_size: int | None = None, scenes: int | None = None,
                 codes: str | Path | None = None, init: str | Path | None = None) -> dict:
    """Train preset ``preset_name`` of ``kind`` into ``out``; returns (and saves) its metrics.

    ``image_size``: the side images are loaded at (default: the data set's own; for ``folder`` data,
    32 px, or a generator's tokenizer's size). ``scenes``: shapes only, the train split's size (see
    ``load_dataset``). ``codes``: a generator trains from this codes folder
    (``argen encode``) instead of images; its tokenizer is the codes' copy, or ``tokenizer_dir`` if
    that is the same tokenizer. ``init``: a checkpoint folder whose weights the model starts from (its config
    must equal the one built here); the optimizer, schedule and step start afresh.

    A generator reads its token shapes from ``tokenizer_dir`` (copied into ``out/tokenizer``)
    and its number of classes from the data; a tokenizer takes channels and size from the data,
    a classifier also its number of classes, and records its test-split accuracy in ``meta.eval``.

    Everything that can be refused is checked before the first step: both data splits, the
    tokenizer against the data, a resumed run against this one, the output folder (``resume``
    continues the run in it, ``overwrite`` replaces it; otherwise it must hold no run).
    """
    if tensorboard:
        tensorboard_writer()  # a missing package is refused before anything is written
    preset = get_preset(preset_name, kind)
    device = dist.init(torch.device(device))
    data = data or preset.data
    codes_set = None
    if codes is not None:  # pre-tokenized data: the codes name their data and carry their tokenizer
        if kind != "generator":
            raise ArgenError(f"--codes: only generators train from codes, not a {kind}")
        codes_set = open_codes(codes)
        if tokenizer_dir is not None:
            check_tokenizer(codes_set, tokenizer_dir)
        tokenizer_dir, data = codes_set.tokenizer_dir, codes_set.name
    elif str(data).strip().lower().replace("_", "-") not in DATASETS:  # the official presets' ImageNet: the user's own copy, as a class folder
        raise DataError(f"preset {preset_name} trains on {data}, which argen does not ship: give --data folder "
                        "--data-path DIR (one sub-folder of images per class) and --image-size, or --codes CODES")
    tokenizer_home = Path(tokenizer_dir).resolve() if kind == "generator" and tokenizer_dir is not None else None
    if tokenizer_home is not None and Path(out).resolve().is_relative_to(tokenizer_home):
        raise ArgenError(f"--out {out} is (inside) the --tokenizer folder {tokenizer_dir}: it would overwrite "
                         "the tokenizer; choose another --out")
    clear = check_run_folder(out, resume=resume, overwrite=overwrite) if dist.is_main() else []
    if codes_set is not None:
        train_set, test_set = codes_set, None
    else:
        if image_size is None and kind == "generator" and data == "folder":
            image_size = _tokenizer_image_size(tokenizer_dir)  # photos load at the size their tokenizer takes
        train_set = load_dataset(data, "train", data_path, image_size, scenes)
        # The held-out split is evaluated after training (tokenizers, classifiers; not generators): a missing
        # or broken one must fail now, not then.
        test_set = load_dataset(data, "test", data_path, image_size) if kind != "generator" else None
    config = preset.make_config().replace(**(model_overrides or {}))
    objective, tokenizer = None, None
    if kind == "generator":
        if tokenizer_dir is None:
            raise ArgenError("--tokenizer: a generator needs a tokenizer checkpoint folder")
        tokenizer, record = load_checkpoint(tokenizer_dir, device)
        if not isinstance(tokenizer, Tokenizer):
            raise ArgenError(f"--tokenizer: {tokenizer_dir} holds a {record.cls}, not a tokenizer")
        # The generator's token shapes come from its tokenizer's declared spec, its classes from the data.
        spec = tokenizer.token_spec
        check_kind(spec, model_for_config(config).consumes, f"--tokenizer {tokenizer_dir}: {record.cls}",
                   f"preset {preset_name}")
        _check_data_fits(tokenizer.config, train_set, data, tokenizer_dir)
        config = config.replace(**spec.link_fields(), num_classes=train_set.num_classes)
        if getattr(config, "text", None) is not None:
            # A preset's vocabulary names the words of its own data's captions (shapes); the user's data, unless
            # --set text=... names a vocabulary, brings its own.
            own_words = _dataset_key(data) != _dataset_key(preset.data) and "text" not in (model_overrides or {})
            config, train_set = _link_text(config, train_set, data, own_words=own_words)
    else:
        config = config.replace(image_channels=train_set.channels, image_size=train_set.image_size[0])
        if kind == "classifier":
            config = config.replace(num_classes=train_set.num_classes)
    cfg = TrainConfig().replace(**preset.train).replace(**(train_overrides or {}))
    if "save_every" not in (train_overrides or {}):
        cfg = cfg.replace(save_every=min(cfg.save_every, cfg.steps))
    torch.manual_seed(cfg.seed)  # same seed, same initial weights (on every rank)
    model = model_for_config(config)(config)
    if init is not None:
        _load_init(model, init)
    if resume:
        _check_same_run(out, model)
    meta = {"command": command, "data": data, "data_path": data_path, "classes": list(train_set.classes),
            "image_size": train_set.image_size[0]}
    if init is not None:
        meta["init"] = str(init)
    if codes_set is not None:
        meta["codes"] = str(codes)
    if preset.sampler:
        meta["sampler"] = preset.sampler
    with lock_folder(out) if dist.is_main() else contextlib.nullcontext():
        clear_run(clear)  # --overwrite: only now that no other training can be writing here
        if kind == "generator":
            captions = train_set.captions if getattr(config, "text", None) is not None else None
            objective = GeneratorObjective(model, tokenizer if codes_set is None else CodesTokenizer(tokenizer),
                                           captions)
            if dist.is_main():
                ckpt.copy_tokenizer(tokenizer_dir, out)
        t0 = time.time()
        metrics = train(model, train_set, cfg, out, objective=objective, device=device, resume=resume,
                        preset=preset_name, meta=meta, quiet=quiet, tensorboard=tensorboard)
        return _evaluate(kind, out, data, train_set, test_set, metrics, t0, device)


def _evaluate(kind, out, data, train_set, test_set, metrics, t0, device) -> dict:
    """The held-out evaluation after training, written once into config.json and metrics.json."""
    result = {"train_seconds": round(time.time() - t0, 1), **{f"train_{k}": v for k, v in metrics.items()}}
    if dist.is_main():
        record = ckpt.read_record(out)
        best = load_checkpoint(out, device)[0] if kind != "generator" else None
        if kind == "tokenizer":
            if hasattr(best, "fit_scale_factor"):  # continuous tokenizers: unit-variance tokens for generators
                scale = best.fit_scale_factor(train_set, device=device)
                best.config = best.config.replace(scale_factor=scale)
                record = ckpt.record_of(best, preset=record.preset, meta=record.meta)
                result["scale_factor"] = scale
            result.update({f"test_{k}": v for k, v in evaluate_tokenizer(best, test_set, device=device).items()})
        if kind == "classifier":
            result["test_accuracy"] = evaluate_accuracy(best, test_set, device=device)
        ckpt.write_record(out, record.replace_meta(eval=result))  # config.json: one write after training
        ckpt.write_json(Path(out) / "metrics.json", result)
        write_card(out)  # the run is over: the card can state its command, steps and metrics
    dist.barrier()
    return result


def _load_init(model: torch.nn.Module, init: str | Path) -> None:
    """``model`` takes the weights of checkpoint ``init``, whose class and config must be ``model``'s."""
    try:
        record = ckpt.read_record(init)
    except ArgenError as e:
        raise ArgenError(f"--init: {e}") from None
    if record.cls != type(model).__name__:
        what = f"a {record.cls}, not a {type(model).__name__}"
    else:
        old, new = _configs(record, model, f"--init: the config in {init}")
        differ = [k for k in new if old.get(k) != new[k]]
        what = f"config differs in {', '.join(differ)}" if differ else None
    if what:
        raise ArgenError(f"--init {init}: {what} (the preset, --set and the data give this run's model)")
    ckpt.load_weights(model, init, "cpu")


def _tokenizer_image_size(tokenizer_dir) -> int | None:
    """The image size in a tokenizer checkpoint's config.json; None if unreadable (loading it then says why)."""
    try:
        return int(ckpt.read_record(tokenizer_dir).config["image_size"]) if tokenizer_dir is not None else None
    except (ArgenError, KeyError, TypeError, ValueError):
        return None


def _dataset_key(name) -> str:
    """A data set name as ``load_dataset`` reads it (``Fashion_MNIST`` is ``fashion-mnist``)."""
    return str(name).strip().lower().replace("_", "-")


def _link_text(config, train_set, data: str, own_words: bool = False):
    """A text model: conditioned on the data's captions (a built-in encoder learns their words), its
    condition ids index prompts (``MAX_PROMPTS``), and the trainer hands it image indices as labels.

    ``own_words``: the built-in encoder's vocabulary is the captions' words even where the config names one
    (a preset's fixed vocabulary is its own data's words, which a user's captioned folder need not use)."""
    captions = getattr(train_set, "captions", None)
    if captions is None:
        raise DataError(f"--data {data}: this preset is conditioned on text but the data set has no captions "
                        "(use --data shapes, or a captioned folder: a .txt beside each image or a captions.jsonl)")
    text = dict(config.text)
    if text.get("kind") == "builtin":
        try:
            words = vocab_from_captions(captions)
        except ArgenError as e:  # captions of punctuation only
            raise DataError(f"--data {data}: {e}") from None
        fixed = None if own_words else text.get("vocab")
        unknown = sorted(set(words) - set(fixed or words))
        if unknown:
            raise DataError(f"--data {data}: its captions use words the text config's fixed vocab does not hold "
                            f"({', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''}); give a text config "
                            "without vocab (the captions' words become it)")
        text["vocab"] = list(fixed or words)
    return config.replace(text=text, num_classes=MAX_PROMPTS), IndexLabels(train_set)


class IndexLabels:
    """A data set whose batches carry their images' indices as labels (a text model's captions are looked
    up by them); everything else is the data set's."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name):
        return getattr(self.dataset, name)

    def batch(self, idx, **kw):
        images, _ = self.dataset.batch(idx, **kw)
        return images, torch.as_tensor(idx, dtype=torch.long)


def _check_data_fits(tok_config, train_set, data: str, tokenizer_dir) -> None:
    """A generator trains on tokens of its data's images: they must be the images the tokenizer was made for."""
    c, (h, w) = train_set.channels, train_set.image_size
    tc, ts = tok_config.image_channels, tok_config.image_size
    if (c, h, w) != (tc, ts, ts):
        raise DataError(f"--data {data}: its images are {c} channel(s) of {h}x{w}, but the tokenizer "
                        f"{tokenizer_dir} takes {tc} channel(s) of {ts}x{ts}; train a tokenizer on this data")


def _configs(record: ckpt.CheckpointRecord, model, where: str) -> tuple[dict, dict]:
    """A checkpoint's config, read as this argen reads it (renamed fields, tuples), and ``model``'s without the
    fields training itself fills in afterwards, like a continuous tokenizer's ``scale_factor``."""
    try:
        old = type(model.config).from_dict(record.config).to_dict()
    except ArgenError as e:
        raise CheckpointError(f"{where} does not load: {e}") from None
    new = {k: v for k, v in sorted(model.config.to_dict().items()) if k != "scale_factor"}
    return old, new


def _check_same_run(out, model) -> None:
    """``--resume`` continues the run in ``out``: same model class and config (fields that training itself
    fills in afterwards, like a continuous tokenizer's ``scale_factor``, aside)."""
    record = ckpt.read_record(out)
    if record.cls != type(model).__name__:
        raise CheckpointError(f"--resume: {out} holds a {record.cls}, not a {type(model).__name__}; "
                              "resume with the preset it was trained with, or choose another --out")
    old, new = _configs(record, model, f"--resume: the config in {out}")
    differ = [k for k in new if old.get(k) != new[k]]
    if differ:
        k = differ[0]
        raise CheckpointError(f"--resume: {out} was trained with {k}={old.get(k)!r}, this run has {k}={new[k]!r}; "
                              "resume with the same preset and --set values, or choose another --out")
