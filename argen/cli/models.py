"""``argen convert``, ``info``, ``push``, ``demo``, ``completion`` and ``serve``."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from argen.cli.common import _setup

log = logging.getLogger("argen")



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
            scores = meta.get("eval") or {}
            rows.append({"name": name, "preset": cfg.get("preset"), "data": meta.get("data"),
                         "steps": meta.get("step"), "train_seconds": meta.get("train_seconds"),
                         **{k: scores[k] for k in ("class_accuracy", "shapes_eval", "shapes_eval_heldout")
                            if k in scores}})
        if args.json:
            print(json.dumps(rows, indent=2))
        for r in rows if not args.json else []:
            if "shapes_eval" in r:  # a text model, judged by ShapesEval
                score = f"ShapesEval {r['shapes_eval']:.3f} (held-out {r.get('shapes_eval_heldout', float('nan')):.3f})"
            else:
                score = f"class accuracy {r['class_accuracy']:.1%}" if "class_accuracy" in r else "class accuracy ?"
            print(f"{r['name']:<16} {r['preset'] or '?':<20} {r['data'] or '?':<14} {r['steps']} steps, "
                  f"{r['train_seconds']} s, {score}")
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

    print(script(args.shell, args.build_parser(knobs=True)), end="")
    return 0


# ---- serve ---------------------------------------------------------------------------------------------

def cmd_serve(args) -> int:
    from argen.serve import serve

    device = _setup(args)
    return serve(args.model, args.checkpoint, args.host, args.port, device, args.precision)


