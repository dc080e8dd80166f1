"""Options and helpers shared by the commands: device and threads, checkpoints, sampler flags."""

from __future__ import annotations

import argparse
import logging
import os
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


