"""Model cards: the ``README.md`` of a finished checkpoint folder, generated from its ``config.json``.

The Hugging Face Hub shows a repository's README.md as its page and reads the YAML front matter for
search (library, license, tags), so a folder pushed with ``argen push`` documents itself. The card says
what the model is, what it was trained on and how (``meta.command``), what it scored (``meta.eval``),
its sampler defaults (``meta.sampler``) and how to load it.

Cards are written where a checkpoint is finished (the end of ``argen train``, ``pretrained.export``,
``argen convert``, ``Pipeline.save_pretrained``), not on every periodic save: the card of a
half-trained folder would describe a run that is not over. A generator's ``tokenizer/`` gets a card
of its own. argen rewrites only its own cards (those that still hold ``MARKER``): a README.md written
or edited by hand, with that line removed, is kept.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import argen.checkpoint as ckpt

log = logging.getLogger(__name__)

LICENSE = "apache-2.0"  # argen's own license; the Hub's identifier for it
MARKER = "<!-- argen model card, generated from config.json: argen rewrites this file unless this line is removed -->"


def model_card(ckpt_dir: str | Path, load_as: str | None = None) -> str:
    """The model card of checkpoint folder ``ckpt_dir`` (Markdown with YAML front matter).

    ``load_as``: how users load it, ``"hf://ORG/NAME"`` or the name of a model shipped with argen;
    None: the folder itself (the card then also says how it will load once pushed to the Hub)."""
    d = Path(ckpt_dir)
    cfg = ckpt.read_config(d)
    meta = cfg.get("meta") or {}
    cls, preset = cfg["class"], cfg.get("preset")
    kind, family, description = _describe(cls, preset)
    data = meta.get("data") or meta.get("dataset")
    params = _parameters(d / ckpt.WEIGHTS)

    tags = ["argen", {"generator": "image-generation", "tokenizer": "image-tokenizer"}.get(kind, "image-classification")]
    tags += ["autoregressive", family] if family else [cls.lower()]
    tags += [data] if data else []
    converted = meta.get("converted_from")
    # converted weights are the official release's, under its license, not argen's
    lines = ["---", "library_name: argen", f"license: {'other' if converted else LICENSE}", "tags:"]
    lines += [f"- {json.dumps(t)}" for t in dict.fromkeys(tags)]  # JSON strings are valid YAML scalars
    lines += ["---", MARKER, ""]

    title = preset or cls
    what = f"An argen **{cls}** {kind}" + (f" of the `{family}` family" if family else "")
    what += f", built from preset `{preset}`" if preset else ""
    what += f", {params:,} parameters" if params is not None else ""
    lines += [f"# {title}", "", what + ".", ""]
    if description:  # the preset's, before any --set of the training command
        lines += [f"> Preset `{preset}`: {description}", ""]
    text = (cfg.get("config") or {}).get("text") if kind == "generator" else None
    if text:  # its condition ids index prompts; the data's classes (shapes: prompt categories) are not its labels
        kind_of = text.get("kind")
        encoder = "a built-in text encoder trained with it" if kind_of == "builtin" else f"the {kind_of} text encoder"
        lines += [f"Text-to-image: conditioned on prompts, read by {encoder}.", ""]
    elif kind == "generator" and meta.get("classes"):
        classes = [str(c) for c in meta["classes"]]
        shown = ", ".join(classes[:20]) + (f", ... ({len(classes)} in all)" if len(classes) > 20 else "")
        lines += [f"Class-conditional: label `i` is class `i` of {shown}.", ""]
    if params is None:  # no readable weights: the config is the only description of the network
        lines += ["Config:", "", "```json", json.dumps(cfg["config"], indent=2, sort_keys=True), "```", ""]
    if (d / ckpt.TOKENIZER_DIR / ckpt.CONFIG).is_file():
        tok = ckpt.read_config(d / ckpt.TOKENIZER_DIR)
        what = f"**{tok['class']}** (preset `{tok.get('preset')}`, see [its card]({ckpt.TOKENIZER_DIR}/{ckpt.CARD}))"
        lines += [f"Its tokenizer, in `{ckpt.TOKENIZER_DIR}/`: {what}.", ""]
    inside = d.name == ckpt.TOKENIZER_DIR and (d.parent / ckpt.CONFIG).is_file()
    if inside:
        lines += [f"The tokenizer of the generator in the folder above (see [its card](../{ckpt.CARD})).", ""]

    lines += _training(meta, data, captioned=bool(text))
    lines += _table("Metrics", "`meta.eval` in config.json: `test_*` and sample metrics on held-out data, `train_*` "
                    "at the last training step.", meta.get("eval"))
    if kind == "generator":
        settings = {**({"sampler": meta["sampler_name"]} if meta.get("sampler_name") else {}), **(meta.get("sampler") or {})}
        lines += _table("Sampler defaults", "What `argen sample` and `Pipeline` use unless told otherwise "
                        "(flags like `--cfg 2.0` override them).", settings, exact=True)
    lines += _usage(kind, load_as, inside, text=bool(text))
    if converted:
        terms = f"The weights are the official `{converted}` release's, converted: that release's license applies."
    else:
        terms = "Apache-2.0, like argen." + (f" The data, `{data}`, has terms of its own." if data else "")
    lines += ["## License", "", terms, "",
              f"Written by argen {cfg.get('argen_version') or '?'} (checkpoint format {cfg.get('format', 1)}).", ""]
    return "\n".join(lines)


def write_card(ckpt_dir: str | Path, load_as: str | None = None) -> None:
    """Write ``README.md`` into ``ckpt_dir`` and, for a generator, into its ``tokenizer/`` (atomically:
    a crash leaves the old card or the new one). A README.md that is not argen's own is left alone."""
    d = Path(ckpt_dir)
    _write(d, model_card(d, load_as))
    if (d / ckpt.TOKENIZER_DIR / ckpt.CONFIG).is_file():
        _write(d / ckpt.TOKENIZER_DIR, model_card(d / ckpt.TOKENIZER_DIR))


def is_own_card(path: str | Path) -> bool:
    """Whether ``path`` is missing or an argen-generated card that argen may rewrite."""
    p = Path(path)
    try:
        return not p.exists() or MARKER in p.read_text(errors="replace")
    except OSError:
        return False


def _write(d: Path, text: str) -> None:
    if not is_own_card(d / ckpt.CARD):
        log.info("%s: keeping the README.md written by hand (no argen marker)", d)
        return
    ckpt.write_text(d / ckpt.CARD, text)


def _describe(cls: str, preset: str | None) -> tuple[str, str | None, str]:
    """(kind, family, preset description) of a model class: "generator", "tokenizer" or "model"."""
    import argen.models  # noqa: F401  (registers every model class and preset)
    from argen.registry import MODELS, PRESETS
    from argen.tokenizers.base import Tokenizer

    model = MODELS.get(cls) if cls in MODELS else None
    family = getattr(model, "family", None)
    kind = "generator" if family else "tokenizer" if isinstance(model, type) and issubclass(model, Tokenizer) else "model"
    description = PRESETS.get(preset).description if preset and preset in PRESETS else ""
    return kind, family, description


def _parameters(weights: Path) -> int | None:
    """Number of values in the weights file, from its header alone (no tensor is read); None if unreadable."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 (not iterable)
    except (SafetensorError, OSError, ValueError):
        return None


def _training(meta: dict, data: str | None, captioned: bool = False) -> list[str]:
    lines = ["## Training", ""]
    if data:
        what = " (captioned images)" if captioned else f" ({len(meta['classes'])} classes)" if meta.get("classes") else ""
        lines += [f"Data: `{data}`{what}.", ""]
    if meta.get("converted_from"):
        source = Path(str(meta.get("source") or "?")).name  # the file's name: a local path says nothing to readers
        lines += [f"Converted from the official `{meta['converted_from']}` checkpoint `{source}` with `argen convert`.",
                  ""]
    if meta.get("command"):
        lines += ["Trained with:", "", "```bash", str(meta["command"]), "```", ""]
    if meta.get("init"):  # the folder's name, as for a converted checkpoint's source
        source = Path(str(meta["init"])).name
        lines += [f"Started from the weights of `{source}` (`--init`), with a new optimizer and schedule.", ""]
    done = []
    if meta.get("step") is not None:
        done.append(f"{meta['step']:,} steps")
    train = meta.get("train_config") or {}
    if train.get("batch_size"):
        done.append(f"batch size {train['batch_size']}, learning rate {train.get('lr')}")
    if meta.get("train_seconds") is not None:
        done.append(f"{_duration(meta['train_seconds'])} of training")
    if done:
        lines += ["; ".join(done).capitalize() + ".", ""]
    return lines if len(lines) > 2 else []


def _table(heading: str, intro: str, values: dict | None, exact: bool = False) -> list[str]:
    """A two-column table; floats to 4 significant digits unless ``exact`` (settings are typed back as flags)."""
    if not values:
        return []
    lines = [f"## {heading}", "", intro, "", "| | |", "|---|---|"]
    for k, v in sorted(values.items()):
        shown = v if isinstance(v, str) else f"{v:.4g}" if isinstance(v, float) and not exact else json.dumps(v)
        lines.append(f"| `{k}` | {str(shown).replace('|', chr(92) + '|')} |")  # a bare | would end the cell
    return lines + [""]


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _usage(kind: str, load_as: str | None, inside: bool, text: bool = False) -> list[str]:
    hub = load_as if load_as and load_as.startswith("hf://") else None
    shipped = load_as if load_as and not hub else None
    where = hub or shipped or f"path/to/{kind}"  # not the folder's own name: a converter writes a temporary one
    lines = ["## How to use", ""]
    if kind == "generator":
        flag = f"--model {shipped}" if shipped else f"--checkpoint {where}"
        if text:  # a text model takes prompts, not class ids
            conditions = '--prompt "a red circle" --prompt "two blue squares" --per-prompt 4'
            call = 'images = pipe(prompts=["a red circle", "two blue squares"], seed=0)  # (2, C, H, W) in [-1, 1]'
        else:
            conditions, call = "--labels 0,1,2", "images = pipe(labels=[0, 1, 2], seed=0)  # (3, C, H, W) in [-1, 1]"
        lines += ["```bash", *(["pip install 'argen[hub]'"] if hub else []),
                  f"argen sample {flag} {conditions} --out samples.png", f"argen info {where}", "```", "",
                  "```python", "from argen import Pipeline", "",
                  f'pipe = Pipeline.from_pretrained("{where}")', call, "```", ""]
    else:
        lines += ["```python", "import argen", "", f'model = argen.load("{where}")', "```", ""]
        if kind == "tokenizer":
            hint = f"argen train generator --preset PRESET --tokenizer {where} --out OUT"
            lines += [f"Train a generator on its tokens: `{hint}`.", ""]
    if not load_as and not inside:
        hint = f"argen push --checkpoint {where} --repo ORG/NAME"
        lines += [f"`{where}` is this folder. Shared with `{hint}`, it loads from the Hub as `hf://ORG/NAME`.", ""]
    return lines
