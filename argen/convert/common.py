"""Shared pieces of the converters: key maps, strict loading, and writing the converted folder."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

from argen.errors import ConvertError
from argen.torch_files import pick, read_official

IDENTITY = ((r".*", r"\g<0>"),)  # rename rule for models that already use the official names
# argen-only buffers of a converted codebook tokenizer: usage statistics from zero, the codebook
# marked as initialised (so fine-tuning never re-runs k-means over a trained codebook), step 0
CODEBOOK_BUFFERS = (("quantize.usage_SV", 0.0), ("quantize.initialized", 1), ("train_steps", 0))


def _names(keys: Iterable[str], limit: int = 4) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def require(sd: dict[str, torch.Tensor], path: Path | str, family: str, keys: Iterable[str]) -> None:
    """Fail early, in one line, when a file is of another family (the usual mistake)."""
    missing = [k for k in keys if k not in sd]
    if missing:
        raise ConvertError(f"{path}: not a {family} checkpoint (no {_names(missing, 2)}; "
                           f"it has {_names(sd)})")


class Tensors:
    """Official tensors handed out by name; ``finish`` fails on any that no rule took."""

    def __init__(self, sd: dict[str, torch.Tensor], source: Path | str, ignore: Iterable[str] = ()):
        self.sd, self.source = sd, source
        self.ignore = [re.compile(p) for p in ignore]  # buffers argen derives itself (e.g. freqs_cis)
        self.used: set[str] = set()

    def take(self, key: str) -> torch.Tensor:
        if key not in self.sd:
            raise ConvertError(f"{self.source}: missing tensor {key}")
        self.used.add(key)
        return self.sd[key]

    def rename(self, rules: Iterable[tuple[str, str]]) -> dict[str, torch.Tensor]:
        """Every not-yet-used key renamed by the first matching ``(regex, repl)``.

        Ignored keys are skipped; keys no rule matches are left for ``finish`` to report.
        """
        rules = [(re.compile(p), r) for p, r in rules]
        out = {}
        for key in list(self.sd):
            if key in self.used or self._ignored(key):
                continue
            for pat, repl in rules:
                if pat.fullmatch(key):
                    out[pat.sub(repl, key)] = self.take(key)
                    break
        return out

    def _ignored(self, key: str) -> bool:
        return any(p.fullmatch(key) for p in self.ignore)

    def finish(self) -> None:
        left = [k for k in self.sd if k not in self.used and not self._ignored(k)]
        if left:
            raise ConvertError(f"{self.source}: {len(left)} tensor(s) that no key map uses: {_names(left)}")


def load_strict(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: Path | str) -> torch.nn.Module:
    """Load ``sd`` into ``model``, naming every difference; tensors are cast to the model's dtype."""
    own = model.state_dict()
    missing, unexpected = own.keys() - sd.keys(), sd.keys() - own.keys()
    shapes = [f"{k} {tuple(sd[k].shape)} vs argen {tuple(own[k].shape)}"
              for k in own.keys() & sd.keys() if sd[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} argen tensor(s) not filled: {_names(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} converted tensor(s) with no argen place: {_names(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {'; '.join(sorted(shapes)[:3])}")
    if problems:
        raise ConvertError(f"{source}: " + "; ".join(problems))
    sd = {k: v.to(own[k].dtype) for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=any(t.is_meta for t in own.values()))
    return model


@dataclass(frozen=True)
class Official:
    """How one kind of official file maps onto an argen model.

    ``identify(state_dict, path) -> preset`` picks the argen preset from the tensors (the model
    size) and fails in one line for a file of another family.
    """

    identify: Callable[[dict[str, torch.Tensor], Path], str]
    candidates: tuple[str, ...]          # where the state dict sits in the file; the first found wins
    rules: tuple[tuple[str, str], ...] = IDENTITY  # (regex, replacement) from official to argen names
    ignore: tuple[str, ...] = ()         # official buffers argen derives itself or does not keep
    allow: tuple[type, ...] = ()         # the non-tensor classes the file may hold
    fuse_qkv: bool = False               # concatenate separate ``q``/``k``/``v`` 1x1 convs into ``qkv``
    fresh: tuple[tuple[str, float], ...] = ()  # argen-only tensors (those the model has) and their value


def fuse_qkv(sd: dict[str, torch.Tensor], source: Path | str) -> dict[str, torch.Tensor]:
    """``X.q.w``, ``X.k.w``, ``X.v.w`` -> ``X.qkv.w`` (concatenated on the output channels, q first)."""
    out = {}
    for key, t in sd.items():
        m = re.fullmatch(r"(.*)\.([qkv])\.(weight|bias)", key)
        if m is None:
            out[key] = t
        elif m.group(2) == "q":
            names = [f"{m.group(1)}.{p}.{m.group(3)}" for p in "kv"]
            missing = [n for n in names if n not in sd]
            if missing:
                raise ConvertError(f"{source}: missing tensor {_names(missing)} (beside {key})")
            out[f"{m.group(1)}.qkv.{m.group(3)}"] = torch.cat([t] + [sd[n] for n in names], 0)
    return out


def load_official(path: str | Path, spec: Official) -> tuple[torch.nn.Module, str, str]:
    """The argen model an official file describes: ``(model, preset, where the state dict was)``."""
    from argen.models import build

    path = Path(path)
    sd, where = pick(read_official(path, spec.allow), path, spec.candidates)
    preset = spec.identify(sd, path)
    model = build(preset, device="meta")  # no memory until load_strict assigns the file's tensors
    tensors = Tensors(sd, path, spec.ignore)
    mapped = tensors.rename(spec.rules)
    if spec.fuse_qkv:
        mapped = fuse_qkv(mapped, path)
    own = model.state_dict()
    for name, value in spec.fresh:
        if name in own:  # one spec may serve several presets (LlamaGen: class- and text-conditional GPTs)
            mapped[name] = torch.full(own[name].shape, value, dtype=own[name].dtype)
    load_strict(model, mapped, path)
    tensors.finish()
    return model, preset, where


def convert_files(out: str | Path, family: str, *, checkpoint: str | Path | None, vae: str | Path | None,
                  generator: Official, tokenizer: Official) -> dict:
    """Convert the official generator ``checkpoint`` and/or tokenizer ``vae`` into the folder ``out``.

    With both, ``out`` is a generator folder with its tokenizer in ``tokenizer/``, ready to sample
    with the preset's sampler (the official FID settings in argen's terms); with one, ``out`` holds
    that model alone. Both files are read and checked before anything is written.
    """
    from argen.card import write_card
    from argen.checkpoint import TOKENIZER_DIR, save_model
    from argen.models import get_preset

    if checkpoint is None and vae is None:
        raise ConvertError("give --checkpoint (the generator), --vae (the tokenizer) or both")
    out = Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise ConvertError(f"--out {out} already exists and is not empty; remove it or choose another --out")
    summary, parts = {}, []
    for role, path, spec in (("generator", checkpoint, generator), ("tokenizer", vae, tokenizer)):
        if path is None:
            summary[role] = "not converted (no file given)"
            continue
        model, preset, where = load_official(path, spec)
        n = sum(p.numel() for p in model.parameters())
        summary[role] = f"{preset}, {n:,} parameters, read from {Path(path).name}:{where}"
        parts.append((role, model, preset, path))
    # the folder is written as a unit: into a hidden folder beside --out, renamed into place when every
    # file is there, so a full disk or a kill leaves no generator without its tokenizer
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        for role, model, preset, path in parts:
            meta = {"converted_from": family, "source": str(path)}
            if role == "generator":
                meta["sampler"] = get_preset(preset).sampler
            save_model(tmp / TOKENIZER_DIR if role == "tokenizer" and checkpoint is not None else tmp,
                       model, preset=preset, meta=meta)
        write_card(tmp)  # inside the unit: a converted folder never lacks its card
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes a private folder; checkpoints are meant to be shared
        if out.exists():
            out.rmdir()  # empty (checked above); rename cannot replace a folder on every system
        os.rename(tmp, out)
    except (OSError, SafetensorError) as e:  # safetensors reports a full disk as its own error
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
        raise ConvertError(f"--out {out}: could not write the converted checkpoint ({why})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
