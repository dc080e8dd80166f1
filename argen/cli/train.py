"""``argen train``, ``argen encode`` and ``argen export``."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
from pathlib import Path

from argen import flags
from argen.cli.common import _common, _setup
from argen.errors import ArgenError

SCENES_HELP = ("shapes data only: the train split holds the first N scenes of its stream (default: its 20,000; "
               "more draw new scenes by the same rules, captions still never name a held-out composition)")

log = logging.getLogger("argen")



# ---- train ---------------------------------------------------------------------------------------------

def _train_args(p: argparse.ArgumentParser, kind: str) -> None:
    from argen.data import DATASETS
    from argen.models import list_presets

    if kind == "classifier":  # one preset per data set, so --data alone may name it
        p.add_argument("--preset", default=None, choices=list_presets(kind), metavar="PRESET",
                       help=f"one of: {', '.join(list_presets(kind))} (default: classifier-<data>, e.g. "
                            "--data fashion-mnist picks classifier-fmnist)")
    else:
        p.add_argument("--preset", required=True, choices=list_presets(kind), metavar="PRESET",
                       help=f"one of: {', '.join(list_presets(kind))}")
    if kind == "generator":
        p.add_argument("--tokenizer", default=None,
                       help="tokenizer checkpoint folder (copied into OUT/tokenizer); with --codes, default: the "
                            "codes' own copy (another tokenizer is refused)")
        p.add_argument("--codes", default=None, metavar="CODES",
                       help="train from a codes folder made by `argen encode` instead of images: the same weights "
                            "as training from those images, without running the tokenizer's encoder")
    p.add_argument("--data", default=None, choices=DATASETS, help="dataset (default: the preset's)")
    p.add_argument("--data-path", default=None, help="dataset location (fashion-mnist IDX folder, image folder)")
    p.add_argument("--image-size", type=flags.positive("--image-size", 4096), default=None, metavar="N",
                   help="load images at N x N (folder data: centre crop as ADM/LlamaGen/MAR, and random mirror "
                        "flips while training; default 32, or a generator's tokenizer's size)")
    p.add_argument("--scenes", type=flags.positive("--scenes"), default=None, metavar="N", help=SCENES_HELP)
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--steps", type=flags.positive("--steps"), default=None, help="optimizer steps (default: preset)")
    p.add_argument("--batch-size", type=flags.positive("--batch-size"), default=None,
                   help="global batch size, split over torchrun processes (default: preset)")
    p.add_argument("--grad-accum", type=flags.positive("--grad-accum"), default=None, metavar="M",
                   help="micro-batches per process and step (gradient accumulation); the global batch and every "
                        "random draw keep their meaning, so the weights do not depend on M (default 1)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: preset)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: preset)")
    p.add_argument("--ema", type=float, default=None, help="EMA decay, 0 = off (default: preset)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument("--strategy", choices=["ddp", "fsdp"], default=None,
                   help="ddp: a whole replica per process (DDP under torchrun; default); fsdp: weights, gradients "
                        "and optimizer state sharded over the processes (FSDP2), the train state saved sharded in "
                        "OUT/train_state_dcp (`argen export` makes a checkpoint folder of it)")
    p.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute each block's activations in backward instead of keeping them (less memory, "
                        "one more forward pass per block)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log to OUT/tensorboard for TensorBoard (pip install 'argen[tensorboard]'); "
                        "OUT/log.jsonl is written either way")
    p.add_argument("--save-every", type=flags.positive("--save-every"), default=None, help="checkpoint period in steps")
    p.add_argument("--seed", type=flags.seed, default=None, help="weights, data order and every random draw "
                   "(default 0)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/train_state.safetensors")
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="start from the weights of CHECKPOINT (a folder, or a shipped model's name) instead of "
                        "random ones, with a new optimizer and schedule (fine-tuning); its config must be the "
                        "one this command builds")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the training run already in OUT (its checkpoint, train state and log)")
    p.add_argument("--set", type=flags.key_value("--set"), action="append", default=[], metavar="KEY=VALUE",
                   help="override a model config field, e.g. --set depth=6 (repeatable)")
    p.add_argument("--train-set", type=flags.key_value("--train-set"), action="append", default=[],
                   metavar="KEY=VALUE", help="override a training config field: " + ", ".join(TRAIN_FIELDS)
                   + " (repeatable; e.g. --train-set weight_decay=0.05 --train-set beta2=0.99)")
    _common(p)


def _classifier_preset(data: str | None) -> str:
    """``--data fashion-mnist`` -> ``classifier-fmnist``: the classifier preset of a data set."""
    from argen.models import list_presets

    if data is None:
        raise ArgenError("train classifier: give --preset or --data (e.g. --data fashion-mnist)")
    name = "classifier-" + {"fashion-mnist": "fmnist"}.get(data, data)
    if name not in list_presets("classifier"):
        raise ArgenError(f"--data {data}: no classifier preset for it; give --preset, one of: "
                         f"{', '.join(list_presets('classifier'))}")
    return name


# TrainConfig's fields (argen.training.trainer), named here so that `--help` does not import torch; a test
# keeps the two in step. Those with a flag of their own are set by that flag.
TRAIN_FIELDS = ("steps", "batch_size", "grad_accum", "lr", "min_lr_ratio", "warmup", "weight_decay", "beta1", "beta2", "grad_clip",
                "ema", "bf16", "save_every", "log_every", "seed", "strategy", "activation_checkpointing")


def cmd_train(args) -> int:
    from argen.training import dist

    device = _setup(args)
    flagged = dict(steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr, warmup=args.warmup, ema=args.ema,
                   save_every=args.save_every, seed=args.seed, bf16=args.bf16 or None, strategy=args.strategy,
                   activation_checkpointing=args.activation_checkpointing or None)
    overrides = {}
    for k, v in args.train_set:
        if k not in TRAIN_FIELDS:
            raise ArgenError(f"--train-set {k}: not a training field; one of: {', '.join(TRAIN_FIELDS)}")
        if flagged.get(k) is not None:
            raise ArgenError(f"--train-set {k}=...: --{k.replace('_', '-')} is given too; give one of them")
        overrides[k] = v
    overrides.update({k: v for k, v in flagged.items() if v is not None})
    init = args.init
    if init is not None:
        if args.resume:
            raise ArgenError("--init starts a new run from a checkpoint's weights; --resume continues the run in "
                             "--out: give one of them")
        if not Path(init).is_dir():  # a shipped model's name
            from argen.pretrained import list_models, model_path

            if init not in list_models():
                raise ArgenError(f"--init {init}: not a checkpoint folder, nor a shipped model ("
                                 f"{', '.join(list_models())})")
            init = model_path(init)
    if args.resume and overrides.get("strategy") != "fsdp" and not (Path(args.out) / "train_state.safetensors").is_file():
        sharded = (Path(args.out) / "train_state_dcp").is_dir()  # argen.training.fsdp.STATE_DIR
        raise ArgenError(f"--resume: {args.out} holds a sharded training state: resume with --strategy fsdp" if sharded
                         else f"--resume: no training state in {args.out} (missing train_state.safetensors)")
    if args.preset is None:  # only classifiers leave --preset optional
        args.preset = _classifier_preset(args.data)
    codes = getattr(args, "codes", None)
    if args.kind == "generator" and codes is None and args.tokenizer is None:
        raise ArgenError("train generator: give --tokenizer DIR (a tokenizer checkpoint folder) or --codes CODES "
                         "(a codes folder made by `argen encode`)")
    if codes is not None and (args.data or args.data_path or args.image_size or args.scenes):
        raise ArgenError(f"--codes {codes}: the codes name their data and image size; leave out --data, --data-path, "
                         "--image-size and --scenes")
    from argen.training.run import train_preset

    try:
        result = train_preset(args.kind, args.preset, args.out, data=args.data, data_path=args.data_path,
                             tokenizer_dir=getattr(args, "tokenizer", None), train_overrides=overrides,
                             model_overrides=dict(args.set), device=device, resume=args.resume,
                             overwrite=args.overwrite, quiet=args.quiet,
                             command=shlex.join(["argen", *args.argv]), tensorboard=args.tensorboard,
                             image_size=args.image_size, scenes=args.scenes, codes=codes, init=init)
    finally:
        dist.shutdown()
    if dist.is_main() and not args.quiet:
        print(json.dumps(result, indent=2))
    return 0


# ---- encode --------------------------------------------------------------------------------------------

def cmd_encode(args) -> int:
    from argen.data.codes import encode_codes

    device = _setup(args)
    index = encode_codes(args.tokenizer, args.data, args.out, data_path=args.data_path, image_size=args.image_size,
                         split=args.split, scenes=args.scenes, batch_size=args.batch_size,
                         shard_size=args.shard_size, device=device, overwrite=args.overwrite, quiet=args.quiet)
    if not args.quiet:
        print(json.dumps({k: index[k] for k in ("data", "split", "count", "image_size", "kind", "code_shape",
                                                "dtype")} | {"shards": len(index["shards"]), "out": args.out}))
    return 0


# ---- export --------------------------------------------------------------------------------------------

def cmd_export(args) -> int:
    from argen.training.fsdp import export

    meta = export(args.checkpoint, args.out)  # reads and writes files only, on the CPU
    if not args.quiet:
        print(json.dumps({"out": args.out, "step": meta.get("step")}))
    return 0


