"""``argen sample``, ``edit``, ``bench`` and ``eval``."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from argen import flags
from argen.cli.common import _setup, generator_dir, sampler_overrides, sampling_meta
from argen.errors import ArgenError

log = logging.getLogger("argen")



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


