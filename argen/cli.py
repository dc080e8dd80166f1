"""The ``argen`` command: demo | train | encode | export | sample | edit | eval | bench | convert | info | push | serve | completion.

Bad input (unknown preset, missing checkpoint, label out of range, corrupt
file, ...) ends with exit code 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

from argen import flags
from argen.errors import ArgenError

log = logging.getLogger("argen")


# ---- shared options -----------------------------------------------------------------------------------

def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda[:N] or mps (default: best available)")
    p.add_argument("--threads", type=flags.threads, default=None,
                   help=f"torch CPU threads, 1..{flags.MAX_THREADS} (default: $OMP_NUM_THREADS when set, else all "
                        "cores, split evenly between torchrun processes)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or logs")
    p.add_argument("--tf32", action="store_true",
                   help="let float32 matmuls and convolutions use TF32 on GPUs that have it (Ampere and later): "
                        "faster, about 3 decimal digits per product; no effect on CPUs")


def _setup(args) -> torch.device:  # noqa: F821
    import torch

    from argen.device import resolve_device

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    threads = args.threads or flags.omp_threads() or max(1, (os.cpu_count() or 1) // local_world)
    torch.set_num_threads(threads)
    if getattr(args, "tf32", False):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return resolve_device(args.device)


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
    if codes is not None and (args.data or args.data_path or args.image_size):
        raise ArgenError(f"--codes {codes}: the codes name their data and image size; leave out --data, --data-path "
                         "and --image-size")
    from argen.training.run import train_preset

    try:
        result = train_preset(args.kind, args.preset, args.out, data=args.data, data_path=args.data_path,
                             tokenizer_dir=getattr(args, "tokenizer", None), train_overrides=overrides,
                             model_overrides=dict(args.set), device=device, resume=args.resume,
                             overwrite=args.overwrite, quiet=args.quiet,
                             command=shlex.join(["argen", *args.argv]), tensorboard=args.tensorboard,
                             image_size=args.image_size, codes=codes)
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
                         split=args.split, batch_size=args.batch_size, shard_size=args.shard_size, device=device,
                         overwrite=args.overwrite, quiet=args.quiet)
    if not args.quiet:
        print(json.dumps({k: index[k] for k in ("data", "split", "count", "image_size", "kind", "code_shape",
                                                "dtype")} | {"shards": len(index["shards"]), "out": args.out}))
    return 0


# ---- sample --------------------------------------------------------------------------------------------

# Sampler config fields with their own flags (the knobs of new samplers come from the registry). Each
# sampler takes a subset; a flag the chosen sampler does not have is refused by name, not ignored.
SAMPLER_FLAGS = ("cfg", "temperature", "top_k", "top_p", "steps", "ar_steps", "head_steps")


def generator_source(p: argparse.ArgumentParser, samples: bool = False) -> None:
    """--checkpoint DIR or --model NAME (a model shipped with argen), exactly one; or --samples FILE (eval)."""
    g = p.add_mutually_exclusive_group(required=not samples)
    g.add_argument("--checkpoint", help="generator checkpoint folder, or hf://ORG/NAME[@REVISION] on the Hugging Face Hub")
    g.add_argument("--model", help="a pretrained model shipped with argen (see `argen info --models`)")
    if samples:
        g.add_argument("--samples", help="a .npz of uint8 images (N, H, W, C) and optional labels")


def generator_dir(args) -> Path:
    from argen.hub import local_dir
    from argen.pretrained import model_path

    return model_path(args.model) if args.model else local_dir(args.checkpoint)  # hf://ORG/NAME: its cached copy


def sampler_args(p: argparse.ArgumentParser, knobs: bool) -> None:
    """The sampler knobs shared by `sample`, `edit`, `bench` and `eval`; unset ones keep the checkpoint's defaults.

    ``knobs``: also offer the knobs of every registered sampler (``argen.sampling.knobs``). That imports
    torch, so the parser adds them only when one of these commands runs (``--help`` elsewhere stays fast)."""
    p.add_argument("--sampler", default=None, metavar="NAME",
                   help="one of the family's samplers (default: the checkpoint's); `argen info CHECKPOINT` lists "
                        "them with their knobs")
    p.add_argument("--cfg", type=flags.finite("--cfg", 0), default=None,
                   help="classifier-free guidance weight w (cond + w (cond - uncond)), 0 = off")
    p.add_argument("--temperature", type=flags.finite("--temperature"), default=None, help="sampling temperature")
    p.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens, 0 = off (discrete)")
    p.add_argument("--top-p", type=flags.finite("--top-p"), default=None,
                   help="nucleus sampling mass, 1 = off (discrete)")
    p.add_argument("--steps", type=flags.positive("--steps"), default=None, help="MaskGIT: parallel decoding steps")
    p.add_argument("--ar-steps", type=flags.positive("--ar-steps"), default=None, help="MAR: autoregressive steps")
    p.add_argument("--head-steps", type=flags.positive("--head-steps"), default=None,
                   help="MAR: diffusion / flow head steps per autoregressive step")
    if not knobs:
        return
    from argen.sampling import knob_catalog

    g = p.add_argument_group("sampler knobs", "each applies to the samplers named in brackets")
    for name, (kind, help_, owners) in knob_catalog().items():
        flag = "--" + name.replace("_", "-")
        g.add_argument(flag, dest=name, type=_knob_type(flag, kind), default=None, metavar=kind.__name__.upper(),
                       help=f"{help_} [{', '.join(owners)}]")


def _knob_type(flag: str, kind: type):
    if kind is bool:
        return flags.boolean(flag)
    if kind is int:
        return flags.int_flag(flag, lo=-(2**62))  # the sampler config checks the range, in one line
    if kind is float:
        return flags.finite(flag)
    return kind


def json_flag(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--json", action="store_true",
                   help=f"print {what} as one JSON document on stdout; progress and status go to stderr")


def precision_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: sample and decode under bf16 autocast, about 2x faster on GPUs and on CPUs with "
                        "AVX512-BF16 / AMX; outputs differ slightly from fp32 (default fp32)")


def sampler_overrides(args, pipe) -> dict:
    """The sampler knobs given on the command line, checked against the pipeline's sampler."""
    from argen.sampling import knob_catalog

    fields = pipe.settings.to_dict()
    flag_of = {k: "--" + k.replace("_", "-") for k in [*SAMPLER_FLAGS, *knob_catalog()]}
    out = {k: getattr(args, k) for k in flag_of if getattr(args, k, None) is not None}
    for k in out:
        if k not in fields:
            raise ArgenError(f"{flag_of[k]} does not apply to sampler {pipe.sampler.name} ({pipe.generator.family} "
                             f"models); it takes: {', '.join(f for k2, f in flag_of.items() if k2 in fields)}")
    return out


def sampling_meta(pipe, overrides: dict, args) -> dict:
    """What a samples file records of how it was made (``lossy``: not the model's own distribution)."""
    from argen.sampling import is_lossy

    settings = pipe.settings.replace(**overrides)
    return {"checkpoint": str(generator_dir(args)), "sampler": pipe.sampler.name, "settings": settings.to_dict(),
            "lossy": is_lossy(settings), "seed": args.seed, "precision": args.precision}


def cmd_sample(args) -> int:
    from argen.training import dist

    device = dist.init(_setup(args))  # under torchrun: join the process group (this rank's GPU)
    try:
        return _sample(args, device)
    finally:
        dist.shutdown()


def _sample(args, device) -> int:
    from argen.images import save_samples
    from argen.pipeline import Pipeline, num_batches
    from argen.training import dist

    pipe = Pipeline.from_pretrained(generator_dir(args), device, args.precision, args.sampler)
    prompts = _prompts(args, pipe)
    labels = prompts or (args.labels if args.labels is not None else list(range(pipe.num_classes)))
    pipe.check_labels(labels)
    if len(labels) * args.per_label > flags.MAX_IMAGES:
        raise ArgenError(f"--per-label {args.per_label} x {len(labels)} labels = {len(labels) * args.per_label} "
                         f"images; at most {flags.MAX_IMAGES} per call")
    labels = [x for x in labels for _ in range(args.per_label)]
    overrides = sampler_overrides(args, pipe)
    t0 = time.time()
    # every batch has its own seed, so rank r of N samples batches r, r + N, ... and rank 0, gathering
    # them, holds exactly the images of one process
    n_batches = num_batches(len(labels), args.batch_size)
    mine = pipe.sample_batches(labels, args.seed, args.batch_size, range(dist.rank(), n_batches, dist.world_size()),
                               progress=not args.quiet and dist.is_main(), **overrides)
    images = _gather_batches(mine, n_batches)
    if not dist.is_main():
        return 0
    meta = {**sampling_meta(pipe, overrides, args), "batch_size": args.batch_size}  # the images depend on it
    if prompts:  # the labels of a text model's samples: the index of each image's prompt in `prompts`
        labels = [i for i in range(len(prompts)) for _ in range(args.per_label)]
    npz, png = save_samples(images, labels, args.out, nrow=args.per_label, meta=meta, fmt=args.format,
                            prompts=prompts)
    if not args.quiet:
        print(f"wrote {npz} and {png}: {len(labels)} images in {time.time() - t0:.1f} s")
    return 0


def _prompts(args, pipe) -> list[str] | None:
    """The prompts of ``--prompt`` and ``--prompts-file`` (one per line), checked against the model's kind."""
    prompts = list(args.prompt or [])
    if args.prompts_file is not None:
        try:
            prompts += [x.strip() for x in Path(args.prompts_file).read_text(encoding="utf-8").splitlines() if x.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise ArgenError(f"--prompts-file {args.prompts_file}: cannot read it ({e})") from None
        if not prompts:
            raise ArgenError(f"--prompts-file {args.prompts_file}: no prompts in it (one per line)")
    if prompts and not pipe.text_conditioned:
        raise ArgenError("--prompt: this model is class-conditional; give --labels instead")
    if pipe.text_conditioned:
        if args.labels is not None:
            raise ArgenError("--labels: this model is conditioned on text; give --prompt or --prompts-file")
        if not prompts:
            raise ArgenError("--prompt: this model is conditioned on text; give --prompt TEXT or --prompts-file F")
    return prompts or None


def _gather_batches(mine: list, n_batches: int):
    """All the images on rank 0, in batch order (rank r holds batches r, r + N, ...); None on other ranks.

    One ``gather_object`` per round of N batches, so rank 0 takes in one batch per rank at a time (a
    rank with no batch left sends None). Works on gloo and nccl, and needs no file system shared by
    the nodes."""
    import torch
    import torch.distributed as tdist

    from argen.training import dist

    if not dist.is_dist():
        return torch.cat(mine)
    world, rank = dist.world_size(), dist.rank()
    out = []
    for k in range(-(-n_batches // world)):
        got = [None] * world if rank == 0 else None
        tdist.gather_object(mine[k] if k < len(mine) else None, got, dst=0)
        out += [x for x in got or [] if x is not None]
    return torch.cat(out) if rank == 0 else None


# ---- edit ----------------------------------------------------------------------------------------------

def cmd_edit(args) -> int:
    from argen.images import load_image, load_mask, save_samples
    from argen.pipeline import Pipeline

    device = _setup(args)
    pipe = Pipeline.from_pretrained(generator_dir(args), device, args.precision, args.sampler)
    c = pipe.tokenizer.config
    size = (c.image_size, c.image_size)
    image = load_image(args.image, c.image_channels, size)
    if args.mask is None and args.keep_scales is None:
        raise ArgenError("edit: give --mask FILE (white = regenerate) or, for VAR models, --keep-scales K")
    mask = load_mask(args.mask, size) if args.mask else image[:, :1] * 0  # --keep-scales alone: no region mask
    condition = _edit_condition(args, pipe)
    pipe.check_labels([condition], "--prompt" if pipe.text_conditioned else "--label")
    labels = [condition] * args.n
    overrides = sampler_overrides(args, pipe)
    images = pipe.edit(image, mask, labels, seed=args.seed, keep_scales=args.keep_scales, **overrides)
    text = {"prompts": [condition]} if pipe.text_conditioned else {}
    npz, png = save_samples(images, [0] * args.n if text else labels, args.out, nrow=args.n,
                            meta=sampling_meta(pipe, overrides, args), **text)
    if not args.quiet:
        print(f"wrote {npz} and {png}: {args.n} edits of {args.image}")
    return 0


def _edit_condition(args, pipe) -> int | str:
    """What `edit` generates the region as: --label for a class model, --prompt for a text model."""
    if pipe.text_conditioned:
        if args.label is not None:
            raise ArgenError("--label: this model is conditioned on text; give --prompt TEXT")
        if args.prompt is None:
            raise ArgenError("--prompt: this model is conditioned on text; give --prompt TEXT")
        return args.prompt
    if args.prompt is not None:
        raise ArgenError("--prompt: this model is conditioned on class ids; give --label ID")
    if args.label is None:
        raise ArgenError("--label: give the class id to generate the region as")
    return args.label


# ---- bench ---------------------------------------------------------------------------------------------

def cmd_bench(args) -> int:
    from argen.checkpoint import write_json
    from argen.evaluation.bench import bench, format_table
    from argen.pipeline import Pipeline

    device = _setup(args)
    pipe = Pipeline.from_pretrained(generator_dir(args), device, args.precision, args.sampler)
    rows = bench(pipe, batch_sizes=args.batch_sizes, repeats=args.repeats, seed=args.seed,
                 **sampler_overrides(args, pipe))
    if args.out:
        write_json(args.out, rows)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0


# ---- eval ----------------------------------------------------------------------------------------------

def cmd_eval(args) -> int:
    from argen.evaluation.evaluate import run_eval

    device = _setup(args)
    if args.samples is None and args.checkpoint is None and args.model is None:
        raise ArgenError("eval: give --checkpoint DIR, --model NAME or --samples FILE.npz")
    overrides, checkpoint, pipe = {}, None, None
    if args.samples is None:
        from argen.pipeline import Pipeline

        checkpoint = generator_dir(args)
        pipe = Pipeline.from_pretrained(checkpoint, device, args.precision, args.sampler)
        overrides = sampler_overrides(args, pipe)
    t0 = time.time()
    metrics = run_eval(args.out, checkpoint=checkpoint, samples=args.samples, data=args.data, n=args.n,
                       seed=args.seed, device=device, progress=not args.quiet,
                       inception_weights=args.inception_weights, reference=args.reference, pipe=pipe, **overrides)
    if args.json:
        print(json.dumps(metrics, indent=2))
    elif not args.quiet:
        headline = {k: v for k, v in metrics.items() if isinstance(v, float) and not k.endswith("_std")
                    and not k.startswith("class_accuracy_")}
        print(json.dumps(headline, indent=2))
    if not args.quiet:  # a status line, not data: stderr keeps stdout one JSON document
        print(f"wrote {args.out}/metrics.json and {args.out}/report.html in {time.time() - t0:.1f} s", file=sys.stderr)
    return 0


# ---- convert -------------------------------------------------------------------------------------------

def cmd_convert(args) -> int:
    from argen.convert import converter

    _setup(args)
    t0 = time.time()
    summary = converter(args.family)(args.checkpoint, args.vae, args.out, ema=not args.no_ema)
    for k, v in summary.items():
        print(f"{k}: {v}")
    print(f"wrote {args.out} in {time.time() - t0:.1f} s")
    if (Path(args.out) / "tokenizer").is_dir():
        import argen.checkpoint as ckpt

        if ckpt.read_record(args.out).config.get("text"):  # a text model: T5 features from the user's file
            print(f"sample with: argen sample --checkpoint {args.out} --prompt CAPTION --out samples.png, after "
                  "setting the text path in its config.json to a features file of your captions")
        else:
            print(f"sample with: argen sample --checkpoint {args.out} --labels 207,360,387 --out samples.png")
    return 0


# ---- export --------------------------------------------------------------------------------------------

def cmd_export(args) -> int:
    from argen.training.fsdp import export

    meta = export(args.checkpoint, args.out)  # reads and writes files only, on the CPU
    if not args.quiet:
        print(json.dumps({"out": args.out, "step": meta.get("step")}))
    return 0


# ---- info ----------------------------------------------------------------------------------------------

def cmd_info(args) -> int:
    import argen.checkpoint as ckpt
    from argen.device import resolve_device
    from argen.models import get_preset, list_presets, load_checkpoint

    if args.device is not None:
        resolve_device(args.device)  # still reject a device that does not exist here

    if args.models:
        from argen.pretrained import list_models, model_path

        rows = []
        for name in list_models():
            cfg = ckpt.read_config(model_path(name))
            meta = cfg.get("meta") or {}
            rows.append({"name": name, "preset": cfg.get("preset"), "data": meta.get("data"),
                         "steps": meta.get("step"), "train_seconds": meta.get("train_seconds"),
                         "class_accuracy": (meta.get("eval") or {}).get("class_accuracy")})
        if args.json:
            print(json.dumps(rows, indent=2))
        for r in rows if not args.json else []:
            acc = f"{r['class_accuracy']:.1%}" if r["class_accuracy"] is not None else "?"
            print(f"{r['name']:<16} {r['preset'] or '?':<16} {r['data'] or '?':<14} {r['steps']} steps, "
                  f"{r['train_seconds']} s, class accuracy {acc}")
        return 0
    if args.presets or args.checkpoint is None:
        rows = [{"name": n, "kind": get_preset(n).kind, "data": get_preset(n).data,
                 "description": get_preset(n).description} for n in list_presets()]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                print(f"{r['name']:<16} {r['kind']:<10} {r['data']:<14} {r['description']}")
        return 0
    # on meta: the config (every field stated, a buildable size) and the weights' names, shapes and
    # dtypes are checked against each other, and nothing is allocated
    from argen.hub import local_dir

    folder = local_dir(args.checkpoint)  # hf://ORG/NAME: its copy in the Hugging Face cache
    model, record = load_checkpoint(folder, "meta")
    cfg = record.to_json()
    params = sum(p.numel() for p in model.parameters())
    meta = cfg.get("meta", {})
    info = {"path": str(args.checkpoint), "class": cfg["class"], "preset": cfg.get("preset"),
            "argen_version": cfg.get("argen_version"), "parameters": params, "tensors": len(model.state_dict()),
            "step": meta.get("step"), "config": cfg["config"], "eval": meta.get("eval"),
            "tokenizer": (folder / ckpt.TOKENIZER_DIR).is_dir() or None,
            "samplers": _samplers_info(model)}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"{info['class']} (preset {info['preset']}), {params:,} parameters, trained {info['step']} steps")
        print(json.dumps(cfg["config"], indent=2, sort_keys=True))
        if info["eval"]:
            print("eval:", json.dumps(info["eval"], sort_keys=True))
        print("samplers (argen sample --sampler NAME, knobs as flags):")
        for smp in info["samplers"]:
            flags_ = " ".join(f"--{k.replace('_', '-')} {v!r}" for k, v in smp["knobs"].items())
            print(f"  {smp['name']}{' (default)' if smp['default'] else ''}: {smp['doc']}")
            if flags_:
                print(f"      {flags_}")
    return 0


def _samplers_info(model) -> list[dict]:
    """The samplers of a generator's family: name, first doc line, knobs with their defaults."""
    from argen.generators.base import Generator
    from argen.sampling import knobs, samplers_of

    if not isinstance(model, Generator):
        return []
    out = []
    for i, smp in enumerate(samplers_of(model.family)):
        doc = (smp.sample.__doc__ or "").strip().splitlines()[0] if smp.sample.__doc__ else ""
        out.append({"name": smp.name, "default": i == 0, "doc": doc,
                    "knobs": {k: f.default for k, f in knobs(smp.config_class).items()}})
    return out


# ---- push ----------------------------------------------------------------------------------------------

def cmd_push(args) -> int:
    from argen.hub import files_to_push, push

    url = push(args.checkpoint, args.repo, private=args.private, revision=args.revision)
    print(f"pushed {', '.join(files_to_push(args.checkpoint))} to {url}")
    print(f"load with: argen sample --checkpoint hf://{args.repo}{'@' + args.revision if args.revision else ''}")
    return 0


# ---- demo ----------------------------------------------------------------------------------------------

def cmd_demo(args) -> int:
    from argen.demo import run_demo

    device = _setup(args)
    metrics = run_demo(args.out, device=device, seed=args.seed, tokenizer_steps=args.tokenizer_steps,
                       generator_steps=args.generator_steps, quiet=args.quiet)
    if not args.quiet:
        print(json.dumps(metrics, indent=2))
    return 0


# ---- completion ----------------------------------------------------------------------------------------

def cmd_completion(args) -> int:
    from argen.completion import script

    print(script(args.shell, build_parser(knobs=True)), end="")
    return 0


# ---- serve ---------------------------------------------------------------------------------------------

def cmd_serve(args) -> int:
    from argen.serve import serve

    device = _setup(args)
    return serve(args.model, args.checkpoint, args.host, args.port, device, args.precision)


# ---- parser --------------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2), like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


SAMPLING_COMMANDS = ("sample", "edit", "eval", "bench")


def build_parser(knobs: bool = False) -> argparse.ArgumentParser:
    """``knobs``: give the sampling commands every registered sampler's knobs (imports torch)."""
    from argen.version import __version__

    p = _Parser(prog="argen", description="Autoregressive image generation: train, sample, inspect.")
    p.add_argument("--version", action="version", version=f"argen {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    d = sub.add_parser("demo", help="train a tokenizer and VAR on digits, then sample (a few minutes on a CPU)",
                       description="Train msvq-digits and var-digits, then write DIR/samples.png, DIR/samples.npz "
                                   "and DIR/metrics.json; checkpoints go to DIR/tokenizer and DIR/generator.")
    d.add_argument("--out", type=flags.out_dir, default="argen-demo", help="output folder (default: ./argen-demo)")
    d.add_argument("--seed", type=flags.seed, default=0)
    d.add_argument("--tokenizer-steps", type=flags.positive("--tokenizer-steps"), default=None,
                   help="default: the msvq-digits preset's")
    d.add_argument("--generator-steps", type=flags.positive("--generator-steps"), default=None,
                   help="default: the var-digits preset's")
    _common(d)
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="train a tokenizer, a generator or a reference classifier",
                       description="Train a tokenizer, generator or reference classifier.")
    tsub = t.add_subparsers(dest="kind", required=True, metavar="KIND", parser_class=_Parser)
    extra = {"classifier": " The classifier judges samples (class accuracy) and gives the feature space of "
                           "Frechet distances; its test-split accuracy is saved in OUT/config.json (meta.eval)."}
    for kind in ("tokenizer", "generator", "classifier"):
        tp = tsub.add_parser(kind, help=f"train a {kind} preset",
                             description=f"Train a {kind}; every hyper-parameter defaults to the preset's. "
                                         "Runs unchanged under torchrun --nproc_per_node N -m argen train ..."
                                         + extra.get(kind, ""))
        _train_args(tp, kind)
        tp.set_defaults(func=cmd_train)

    en = sub.add_parser("encode", help="pre-tokenize a data set once, to train generators from its codes",
                        description="Encode a data set with a tokenizer into a codes folder: safetensors shards of "
                                    "the codes of every image and of its mirror image, an index (codes.json) and a "
                                    "copy of the tokenizer. `argen train generator --codes OUT` then trains from "
                                    "them, with the weights training from the images gives. Written under a "
                                    "temporary name and renamed into place when complete.")
    en.add_argument("--tokenizer", required=True, help="tokenizer checkpoint folder")
    from argen.data import DATASETS

    en.add_argument("--data", required=True, choices=DATASETS, help="dataset")
    en.add_argument("--data-path", default=None, help="dataset location (fashion-mnist IDX folder, image folder)")
    en.add_argument("--image-size", type=flags.positive("--image-size", 4096), default=None, metavar="N",
                    help="load images at N x N (folder data: centre crop as ADM/LlamaGen/MAR; default: the "
                         "tokenizer's size for folder data, else the data set's own)")
    en.add_argument("--split", choices=["train", "test", "all"], default="train",
                    help="which split (default train: the images `argen train` trains on)")
    en.add_argument("--out", required=True, metavar="CODES", help="codes folder to write")
    en.add_argument("--batch-size", type=flags.positive("--batch-size"), default=64,
                    help="images per encoder pass (default 64)")
    en.add_argument("--shard-size", type=flags.positive("--shard-size"), default=4096,
                    help="images per shard file (default 4096)")
    en.add_argument("--overwrite", action="store_true", help="replace the codes folder already in OUT")
    _common(en)
    en.set_defaults(func=cmd_encode)

    s = sub.add_parser("sample", help="sample class-conditional images from a generator checkpoint",
                       description="Writes OUT.npz (images uint8 N x H x W x C, labels int64 N) and OUT.png (a grid, "
                                   "one row per label). Same seed and --batch-size, same images: each batch has "
                                   "its own seed. Runs unchanged under torchrun --nproc_per_node N -m argen "
                                   "sample ...: rank r samples batches r, r + N, ... and rank 0 writes the "
                                   "files one process writes.")
    generator_source(s)
    s.add_argument("--labels", type=flags.labels, default=None, help="comma-separated class ids (default: all classes)")
    s.add_argument("--prompt", action="append", default=None, metavar="TEXT",
                   help="a caption for a text-to-image model (repeatable; the npz then holds `prompts`)")
    s.add_argument("--prompts-file", default=None, metavar="F", help="captions for a text model, one per line")
    s.add_argument("--per-label", "--per-prompt", type=flags.positive("--per-label", flags.MAX_IMAGES), default=8,
                   help="images per label or prompt (default 8)")
    s.add_argument("--seed", type=flags.seed, default=0)
    sampler_args(s, knobs)
    precision_arg(s)
    s.add_argument("--batch-size", type=flags.positive("--batch-size"), default=256,
                   help="images per sampler call (default 256); batch b is seeded from (--seed, b), so the images "
                        "depend on it")
    s.add_argument("--format", choices=["argen", "adm"], default="argen",
                   help="the .npz layout: argen (images, labels, meta) or adm (arr_0 RGB uint8 and arr_1 labels, "
                        "what the standard FID evaluation suites read)")
    s.add_argument("--out", type=flags.out_file, required=True,
                   help="output path; .npz and .png are written beside each other")
    _common(s)
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("edit", help="inpaint / outpaint / regenerate a region of an image under a class or caption",
                       description="Regenerate the white region of --mask in --image under class --label (or "
                                   "caption --prompt, for a text model); tokens "
                                   "whose grid cell lies wholly outside the mask are kept exactly. VAR models can "
                                   "instead keep the image's first K scales (--keep-scales K) and redraw the finer "
                                   "ones. Writes OUT.npz and OUT.png like `argen sample`.")
    generator_source(e)
    e.add_argument("--image", required=True, help="image file (resized to the model's image size)")
    e.add_argument("--mask", default=None, help="mask image: white = regenerate, black = keep")
    e.add_argument("--label", type=int, default=None, help="class id to generate the region as (class models)")
    e.add_argument("--prompt", default=None, help="caption to generate the region as (text models)")
    e.add_argument("--n", type=flags.positive("--n", flags.MAX_IMAGES), default=4, help="number of edits (default 4)")
    e.add_argument("--keep-scales", type=int, default=None, help="VAR only: keep this many coarse scales")
    e.add_argument("--seed", type=flags.seed, default=0)
    sampler_args(e, knobs)
    precision_arg(e)
    e.add_argument("--out", type=flags.out_file, required=True,
                   help="output path; .npz and .png are written beside each other")
    _common(e)
    e.set_defaults(func=cmd_edit)

    v = sub.add_parser("eval", help="metrics and an HTML report for a generator or a samples file",
                       description="Sample N images (classes balanced) from a generator, or read FILE.npz as written "
                                   "by `argen sample`, and compare them with the real test split in the feature "
                                   "space of the dataset's reference classifier (FD-<data>, KID, precision / recall "
                                   "/ density / coverage, IS-<data>), plus class accuracy and, for raster and VAR, "
                                   "exact bits per token. Writes OUT/metrics.json and a self-contained "
                                   "OUT/report.html (sample grids, per-class accuracy, nearest training neighbours, "
                                   "training curves). Any other model (a converted official checkpoint, one trained "
                                   "on a folder) is compared with your own images: --reference REF "
                                   "--inception-weights W gives FID, IS, KID and precision / recall in Inception "
                                   "space, as the ADM evaluation suite computes them. A text model trained on "
                                   "shapes is scored by ShapesEval per category on the first N (at most 1000) test "
                                   "prompts and on as many held-out compositions.")
    generator_source(v, samples=True)
    v.add_argument("--data", choices=["digits", "fashion-mnist", "shapes"], default=None,
                   help="the dataset a --samples file imitates (a checkpoint knows its own); optional with "
                        "--reference; shapes: ShapesEval of a text model's samples against their prompts")
    v.add_argument("--reference", default=None, metavar="REF",
                   help="reference images to compare the samples with, in the Inception-v3 features of "
                        "--inception-weights: a folder of images (sub-folders too; centre-cropped and resized to "
                        "the samples' size) or an .npz with arr_0 uint8 N x H x W x C (an ADM reference batch)")
    eval_n = flags.int_flag("--n", flags.MIN_EVAL_SAMPLES, flags.MAX_IMAGES,
                            f" (the metrics need at least {flags.MIN_EVAL_SAMPLES} images)")
    v.add_argument("--n", type=eval_n, default=1000, help="images to sample (default 1000)")
    v.add_argument("--inception-weights", default=None, metavar="PATH",
                   help="also compute the standard FID with this Inception-v3 weights file (pytorch-fid's "
                        "pt_inception-2015-12-05-6726825d.pth, torchvision layout; never downloaded): against "
                        "--reference, else against the data set's test split")
    v.add_argument("--seed", type=flags.seed, default=0)
    sampler_args(v, knobs)
    precision_arg(v)
    v.add_argument("--out", type=flags.out_dir, required=True, help="output folder")
    json_flag(v, "every metric (what OUT/metrics.json holds)")
    _common(v)
    v.set_defaults(func=cmd_eval)

    b = sub.add_parser("bench", help="sampling speed, forward passes and peak memory of a generator",
                       description="Times whole sampling calls (tokenizer decode included; median of --repeats after "
                                   "one warm-up) at each batch size and prints a markdown table: images/s, s/image, "
                                   "generator forward calls per sampling call (= passes per image; a CFG-doubled "
                                   "batch is one call), MAR head calls, and peak memory (CUDA: allocated; CPU: "
                                   "resident-set growth).")
    generator_source(b)
    b.add_argument("--batch-sizes", type=flags.batch_sizes, default=(1, 64),
                   help=f"comma-separated batch sizes, each 1..{flags.MAX_IMAGES} (default 1,64)")
    b.add_argument("--repeats", type=flags.positive("--repeats"), default=3,
                   help="timed runs per batch size (default 3)")
    b.add_argument("--seed", type=flags.seed, default=0)
    b.add_argument("--out", type=flags.writable_file("--out"), default=None,
                   help="also write the rows to this JSON file")
    json_flag(b, "the rows")
    sampler_args(b, knobs)
    precision_arg(b)
    _common(b)
    b.set_defaults(func=cmd_bench)

    c = sub.add_parser("convert", help="turn official VAR, MAR or LlamaGen checkpoints into an argen checkpoint",
                       description="Read an official generator checkpoint and its tokenizer from local files and "
                                   "write an ordinary argen checkpoint folder (tokenizer in OUT/tokenizer, the "
                                   "official sampler settings in config.json) that `argen sample --checkpoint OUT` "
                                   "uses. With one of the two files, OUT holds that model alone. Files are read with "
                                   "torch.load(weights_only=True) and every tensor must find its place: nothing is "
                                   "guessed, nothing downloaded.")
    c.add_argument("--from", dest="family", required=True, metavar="FAMILY",
                   help="the official code base the files come from: var, mar or llamagen")
    c.add_argument("--checkpoint", default=None,
                   help="generator file: var_d16.pth, MAR checkpoint-last.pth, c2i_B_256.pt, ...")
    c.add_argument("--vae", default=None,
                   help="tokenizer file: vae_ch160v4096z32.pth (VAR), kl16.ckpt (MAR), vq_ds16_c2i.pt (LlamaGen)")
    c.add_argument("--no-ema", action="store_true", help="take the raw weights even where the file holds EMA weights")
    c.add_argument("--out", type=flags.out_dir, required=True, help="output checkpoint folder")
    _common(c)
    c.set_defaults(func=cmd_convert)

    ex = sub.add_parser("export", help="consolidate a sharded (--strategy fsdp) training run into a checkpoint folder",
                        description="Read the sharded training state of an FSDP run (RUN/train_state_dcp, written by "
                                    "every rank) in one process and write the checkpoint folder a DDP run writes: "
                                    "config.json, model.safetensors (the EMA weights if the run keeps an EMA), "
                                    "tokenizer/ and the card. Works on a run in progress or killed (its last saved "
                                    "step). Written under a temporary name and renamed into place.")
    ex.add_argument("--checkpoint", required=True, metavar="RUN", help="the run folder (argen train --out)")
    ex.add_argument("--out", type=flags.out_dir, required=True, help="checkpoint folder to write (new or empty)")
    ex.add_argument("--quiet", action="store_true", help="print nothing")
    ex.set_defaults(func=cmd_export)

    i = sub.add_parser("info", help="describe a checkpoint, or list presets",
                       description="Config, parameter count and training step of a checkpoint; --presets lists presets.")
    i.add_argument("checkpoint", nargs="?", default=None, help="checkpoint folder or hf://ORG/NAME[@REVISION]")
    i.add_argument("--presets", action="store_true", help="list the registered presets")
    i.add_argument("--models", action="store_true", help="list the pretrained models shipped with argen")
    json_flag(i, "the description")
    i.add_argument("--device", default=None, help="accepted for symmetry; info reads files only and needs no device")
    i.set_defaults(func=cmd_info)

    pu = sub.add_parser("push", help="upload a checkpoint folder to the Hugging Face Hub (pip install 'argen[hub]')",
                        description="Upload config.json, model.safetensors, the tokenizer/ and the model cards "
                                    "(README.md, written first if missing) of a checkpoint folder to a model "
                                    "repository, created if it does not exist; never train_state.safetensors or "
                                    "logs. Log in first with `hf auth login` or set HF_TOKEN. Load it back with "
                                    "--checkpoint hf://ORG/NAME.")
    pu.add_argument("--checkpoint", required=True, help="checkpoint folder to upload")
    pu.add_argument("--repo", required=True, help="ORG/NAME: the model repository on the Hub")
    pu.add_argument("--private", action="store_true", help="create the repository private (an existing one keeps "
                                                           "its visibility)")
    pu.add_argument("--revision", default=None, help="branch to push to (created from main if missing; default main)")
    pu.set_defaults(func=cmd_push)

    co = sub.add_parser("completion", help="print a shell completion script (bash or zsh)",
                        description="Print a completion script for commands, flags, presets and shipped models. "
                                    "bash: add `eval \"$(argen completion bash)\"` to ~/.bashrc. zsh: "
                                    "`argen completion zsh > \"${fpath[1]}/_argen\"`, or eval it in ~/.zshrc.")
    co.add_argument("shell", choices=["bash", "zsh"], help="bash or zsh")
    co.set_defaults(func=cmd_completion)

    sv = sub.add_parser("serve", help="a local web page (and JSON API) to sample and inpaint in a browser",
                        description="Serve a page at http://HOST:PORT/ to pick a model, class, seed and sampler "
                                    "knobs, generate, paint a mask and regenerate it, and download PNG / npz; "
                                    "the same as JSON under /api (docs/serve.md). Offers every shipped model, "
                                    "after the one --model or --checkpoint names; each loads on first use.")
    g = sv.add_mutually_exclusive_group()
    g.add_argument("--checkpoint", help="also offer this generator checkpoint folder (listed first)")
    g.add_argument("--model", help="a shipped model to list first (see `argen info --models`)")
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this machine only; there is no login)")
    sv.add_argument("--port", type=flags.int_flag("--port", 0, 65535), default=8000,
                    help="port (default 8000; 0 picks a free one)")
    precision_arg(sv)
    _common(sv)
    sv.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(knobs=bool(argv) and argv[0] in SAMPLING_COMMANDS)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit where it cannot be caught
        return code
    except BrokenPipeError:
        # `argen info --presets | head`: the reader has what it wanted. Point stdout at /dev/null so the
        # interpreter's own flush at exit does not fail again, and end quietly like other Unix tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ArgenError as e:
        print(f"argen: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an output path that is a file, a full disk, no permission: the user's to fix
        print(f"argen: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("argen: interrupted (the last checkpoint is kept; continue with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
