"""The ``argen`` command: demo | train | encode | export | sample | edit | eval | bench | convert | info | push | serve | completion.

Bad input (unknown preset, missing checkpoint, label out of range, corrupt
file, ...) ends with exit code 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from argen import flags
from argen.cli.common import (  # noqa: F401  (SAMPLER_FLAGS, _setup: for tests and docs)
    SAMPLER_FLAGS,
    _common,
    _setup,
    generator_source,
    json_flag,
    precision_arg,
    sampler_args,
)
from argen.cli.models import cmd_completion, cmd_convert, cmd_demo, cmd_info, cmd_push, cmd_serve
from argen.cli.sampling import cmd_bench, cmd_edit, cmd_eval, cmd_sample
from argen.cli.train import SCENES_HELP, TRAIN_FIELDS, _train_args, cmd_encode, cmd_export, cmd_train  # noqa: F401
from argen.errors import ArgenError

log = logging.getLogger("argen")



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
    en.add_argument("--scenes", type=flags.positive("--scenes"), default=None, metavar="N",
                    help=SCENES_HELP)
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
    co.set_defaults(func=cmd_completion, build_parser=build_parser)  # the parser completes itself

    sv = sub.add_parser("serve", help="a local web page (and JSON API) to sample and inpaint in a browser",
                        description="Serve a page at http://HOST:PORT/ to pick a model, class (or prompt), seed and sampler "
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
