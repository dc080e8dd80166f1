"""FSDP2 (``--strategy fsdp``): parameters, gradients and optimizer state sharded over ranks.

Built from PyTorch's own pieces, and nothing else:

* ``shard_model``: ``torch.distributed.fsdp.fully_shard`` on every *unit* and then on the model. The
  units are found generically: every element of every ``nn.ModuleList`` that holds parameters (a
  transformer's blocks, a diffusion head's residual blocks, a tokenizer's resnet blocks), innermost
  first. Each unit's parameters are all-gathered just before it runs and freed after, so a rank holds
  1/N of the weights, gradients and AdamW moments plus one unit's whole weights at a time. The
  model's ``loss`` (and a tokenizer's ``begin_training``) run FSDP's hooks as ``forward`` does
  (``register_fsdp_forward_method``): the trainer calls ``loss``, not ``forward``.
* A codebook's codes stay whole on every rank (FSDP's ``ignored_params``): k-means and dead-code
  restarts rewrite them outside the gradient, the same on every rank (``argen.tokenizers.base.Codebook``).
  So does a text model's text encoder, whole (it runs before ``loss``). Their gradients are averaged
  over ranks here, as DDP would.
* Mixed precision (``MixedPrecisionPolicy``) from the train config's ``bf16``: units compute in bf16
  and gradients are reduced in float32; the fp32 master weights and AdamW moments stay sharded.
* Activation checkpointing (``checkpoint_units``, either strategy): each unit's forward runs under
  ``torch.utils.checkpoint`` (non-reentrant) and is recomputed in backward; parameter names do not
  change, so checkpoints and the EMA are unaffected.
* Sharded train state with ``torch.distributed.checkpoint`` (DCP): ``save_train_state`` /
  ``load_train_state`` through ``get_state_dict`` / ``set_state_dict``, every rank writing its own
  shards as safetensors files (DCP's ``HuggingFaceStorageWriter``: no pickle) into
  ``OUT/train_state_dcp/``, beside a ``state.json`` with the step and the optimizer's hyper-parameters.
  A save goes to a temporary folder that is renamed into place once complete, so a crash mid-save
  leaves the previous state loadable. It loads on any number of ranks (DCP reshards).
* ``export``: a sharded run consolidated into the normal checkpoint folder (``config.json``,
  ``model.safetensors``, ``tokenizer/``, card), in one process without a process group.

Without torchrun, ``--strategy fsdp`` runs in a process group of one process (nothing is sharded, the
code path and the files are the same). Under torchrun on several machines, OUT must be a folder that
every machine sees (each rank writes its own shard files).
"""

from __future__ import annotations

import functools
import json
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as tdist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import HuggingFaceStorageReader, HuggingFaceStorageWriter
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import DTensor
from torch.utils.checkpoint import checkpoint

import argen.checkpoint as ckpt
from argen.errors import ArgenError, CheckpointError
from argen.tokenizers.base import Codebook
from argen.training import dist

STATE_DIR = "train_state_dcp"  # OUT/train_state_dcp/: the sharded train state of an FSDP run
STATE_JSON = "state.json"      # inside it, written last: what is not a tensor (step, param groups, ...)
_FORWARD_METHODS = ("loss", "begin_training")  # what the trainer calls instead of forward



# ---- sharding ------------------------------------------------------------------------------------

def units(model: nn.Module) -> list[nn.Module]:
    """The FSDP units of ``model``: every element of every ``nn.ModuleList`` that holds parameters and
    has a ``forward`` of its own, innermost first (``fully_shard`` must see a unit's own units before
    the unit itself). FSDP gathers a unit's weights when its ``forward`` runs: an element without one
    (a container whose parent calls its parts, like a tokenizer's resolution level) is not a unit,
    its ModuleLists' elements may be. A text model's text encoder has none (see ``replicated``)."""
    found = []
    text = _text_encoder(model)

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if child is text:
                continue
            visit(child)
            if (isinstance(module, nn.ModuleList) and type(child).forward is not nn.Module.forward
                    and any(True for _ in child.parameters())):
                found.append(child)

    visit(model)
    return found


def replicated(model: nn.Module) -> set[nn.Parameter]:
    """Parameters kept whole on every rank, those used outside the model's ``loss`` and ``forward``: a
    codebook's own (rewritten outside the gradient by k-means and restarts; not those of units inside
    it, a multi-scale quantizer's convolutions), and all of a text model's text encoder (it encodes a
    batch's captions before ``loss``, in ``Generator.conditioned``)."""
    inside_units = {p for u in units(model) for p in u.parameters()}
    whole = {p for m in model.modules() if isinstance(m, Codebook) for p in m.parameters()} - inside_units
    text = _text_encoder(model)
    return whole | (set(text.parameters()) if text is not None else set())


def _text_encoder(model: nn.Module) -> nn.Module | None:
    text = getattr(model, "text", None)
    return text if isinstance(text, nn.Module) else None


def ensure_process_group(device: torch.device) -> None:
    """A process group of one process when not launched by torchrun (FSDP needs a device mesh): the same
    code and the same files as N ranks. ``argen.training.dist.shutdown`` ends it."""
    if dist.is_dist():
        return
    tdist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=tdist.HashStore(),
                             rank=0, world_size=1)


def shard_model(model: nn.Module, device: torch.device, *, bf16: bool = False) -> nn.Module:
    """``fully_shard`` ``model`` (in place, on ``device``) over all ranks; returns it.

    Call before building the optimizer (its parameters become sharded ``DTensor`` s; build its param
    groups with ``split_param_groups``) and the EMA."""
    ensure_process_group(device)
    # FSDP2 warns about every unit that returns a view (an in-place op on it would skip the all-gather).
    # argen's blocks are used out of place; the FSDP-vs-DDP equality tests would show a skipped gather.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    mesh = init_device_mesh(device.type, (dist.world_size(),))
    # bf16 compute and all-gathers; gradients reduced (and weights kept) in float32
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    for unit in units(model):
        fully_shard(unit, mesh=mesh, mp_policy=mp)
    whole = replicated(model)
    fully_shard(model, mesh=mesh, mp_policy=mp, ignored_params=whole or None)
    for name in _FORWARD_METHODS:
        if hasattr(model, name):
            register_fsdp_forward_method(model, name)
    if dist.world_size() > 1:
        for p in whole:  # DDP's average for the replicated parameters (accumulated micro-batches: linear)
            if p.requires_grad:
                p.register_post_accumulate_grad_hook(_average_grad)
    return model


def split_param_groups(groups: list[dict]) -> list[dict]:
    """Optimizer param groups with a sharded model's whole (replicated) parameters moved into groups of
    their own, appended with the same settings: torch's foreach kernels (AdamW's default on GPUs) refuse
    lists that mix ``DTensor`` s and plain tensors. Groups without such a mix are returned as they are."""
    out, extra = [], []
    for g in groups:
        whole = [p for p in g["params"] if not isinstance(p, DTensor)]
        if whole and len(whole) < len(g["params"]):
            out.append({**g, "params": [p for p in g["params"] if isinstance(p, DTensor)]})
            extra.append({**g, "params": whole})
        else:
            out.append(g)
    return out + extra


def _average_grad(p: torch.Tensor) -> None:
    tdist.all_reduce(p.grad)
    p.grad.div_(dist.world_size())


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def checkpoint_units(model: nn.Module) -> nn.Module:
    """Activation checkpointing: each unit keeps only its inputs in forward and recomputes the rest in
    backward (``torch.utils.checkpoint``, non-reentrant; its RNG state is replayed, so dropout and drop
    path draw the same). Works with either strategy; call before ``shard_model``."""
    for unit in units(model):
        unit.forward = functools.partial(checkpoint, unit.forward, use_reentrant=False)
    return model


def record_of(model: nn.Module, *, preset: str | None = None, meta: dict | None = None) -> ckpt.CheckpointRecord:
    """``argen.checkpoint.record_of`` for a sharded model: ``fully_shard`` swaps the model's class for a
    subclass named ``FSDP<name>``; config.json names the model's own class."""
    cls = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
    return ckpt.CheckpointRecord(cls.__name__, model.config.to_dict(), preset, dict(meta or {}))


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a ``DTensor``; a plain tensor as it is."""
    return t.to_local() if isinstance(t, DTensor) else t


def clip_grad_norm_(params, max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` for sharded and replicated gradients together: the global
    2-norm (each shard's squares summed over ranks, a replicated gradient counted once), then the same
    scaling (``max_norm / (norm + 1e-6)``, at most 1). Returns the norm before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    sharded = [local(g).float().pow(2).sum() for g in grads if isinstance(g, DTensor)]
    whole = [g.float().pow(2).sum() for g in grads if not isinstance(g, DTensor)]
    total = torch.stack(sharded).sum() if sharded else torch.zeros((), device=grads[0].device)
    if dist.is_dist() and sharded:
        tdist.all_reduce(total)
    if whole:
        total = total + torch.stack(whole).sum()
    norm = total.sqrt()
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for g in grads:
        local(g).mul_(scale.to(g.dtype))
    return norm


def full_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """Whole CPU copies of a (sharded) state dict on rank 0, None elsewhere; every rank must call it.

    One tensor is all-gathered at a time, so no rank ever holds more than it and the shards."""
    out = {} if dist.is_main() else None
    for k, v in state.items():
        whole = v.full_tensor() if isinstance(v, DTensor) else v
        if out is not None:
            out[k] = whole.detach().cpu().clone()
    return out


# ---- sharded train state (DCP) -------------------------------------------------------------------

def state_dir(out: str | Path) -> Path | None:
    """The complete sharded train state in ``out``, or None. A crash between the two renames of a save
    leaves the previous state under its ``.old`` name: that one is then the last complete state."""
    for d in (Path(out) / STATE_DIR, Path(out) / f".{STATE_DIR}.old"):
        if (d / STATE_JSON).is_file():
            return d
    return None


def save_train_state(out: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, *,
                     ema: dict[str, torch.Tensor] | None, rng: list[dict], step: int, extra: dict) -> None:
    """Save the sharded train state into ``out/train_state_dcp`` (every rank takes part).

    Every rank writes its shards into ``out/.train_state_dcp.tmp``; then rank 0 writes ``state.json``
    (``step``, the optimizer's param groups, ``extra``) and renames the folder into place. Until then
    the previous state is untouched."""
    out = Path(out)
    tmp, final, old = out / f".{STATE_DIR}.tmp", out / STATE_DIR, out / f".{STATE_DIR}.old"
    if dist.is_main() and tmp.exists():
        shutil.rmtree(tmp)  # a save that a crash interrupted
    dist.barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    tensors = {"model": model_sd, "optim": optim_sd["state"], "rng": _rng_tensors(rng)}
    if ema is not None:
        tensors["ema"] = ema
    dcp.save(tensors, storage_writer=HuggingFaceStorageWriter(str(tmp), save_distributed=True))
    dist.barrier()  # every rank's shard files are complete
    if dist.is_main():
        ckpt.write_json(tmp / STATE_JSON, {
            "step": step, "world_size": dist.world_size(), "ema": ema is not None,
            "rng": [sorted(r) for r in rng], "param_groups": optim_sd["param_groups"], **extra})
        if final.exists():
            if old.exists():
                shutil.rmtree(old)
            final.rename(old)
        tmp.rename(final)
        if old.exists():
            shutil.rmtree(old)
    dist.barrier()


def save_checkpoint(out: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, *,
                    ema: dict[str, torch.Tensor] | None, rng: list[dict], step: int, final: bool,
                    preset: str | None, meta: dict, extra: dict) -> None:
    """The trainer's save of an FSDP run (every rank takes part): the sharded train state, then
    ``config.json``; at the ``final`` step also ``model.safetensors`` (the EMA if kept), gathered one
    tensor at a time on rank 0, so that the finished run folder is a normal checkpoint. Other saves
    remove an older ``model.safetensors`` (``argen export`` consolidates any sharded state)."""
    out = Path(out)
    save_train_state(out, model, optimizer, ema=ema, rng=rng, step=step, extra=extra)
    weights = full_tensors(ema if ema is not None else model.state_dict()) if final else None
    if dist.is_main():
        record = record_of(model, preset=preset, meta=meta)
        if weights is not None:
            ckpt.save_tensors(out / ckpt.WEIGHTS, weights)
        else:  # weights of an earlier step beside this step's config.json would mislead
            (out / ckpt.WEIGHTS).unlink(missing_ok=True)
        ckpt.write_record(out, record)
    dist.barrier()


def load_train_state(out: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, *,
                     ema: dict[str, torch.Tensor] | None) -> dict:
    """Fill ``model``, ``optimizer`` and ``ema`` (in place) from ``out``'s sharded train state; returns the
    rest of it (``step``, ``rng``: every saved rank's RNG state, and the ``extra`` of the save)."""
    d = state_dir(out)
    if d is None:
        raise CheckpointError(f"--resume: no sharded training state in {out} (missing {STATE_DIR}/{STATE_JSON}); "
                              "a run trained with --strategy ddp resumes with --strategy ddp")
    info = _read_json(d / STATE_JSON)
    if bool(info.get("ema")) != (ema is not None):
        raise CheckpointError(f"--resume: the training state in {out} was saved "
                              f"{'with' if info.get('ema') else 'without'} an EMA; resume with the same --ema")
    try:
        model_sd, optim_sd = get_state_dict(model, optimizer)  # the optimizer's state exists from here on
        own = {"cpu": torch.get_rng_state, "cuda": lambda: torch.cuda.get_rng_state()}  # sizes to read into
        rng = {str(r): {kind: own[kind]().clone() for kind in kinds} for r, kinds in enumerate(info["rng"])}
        tensors = {"model": model_sd, "optim": optim_sd["state"], "rng": rng}
        if ema is not None:
            tensors["ema"] = ema
        dcp.load(tensors, storage_reader=HuggingFaceStorageReader(str(d)))
        set_state_dict(model, optimizer, model_state_dict=tensors["model"],
                       optim_state_dict={"state": tensors["optim"], "param_groups": info["param_groups"]})
    except (RuntimeError, ValueError, KeyError, TypeError, AssertionError, CheckpointException) as e:
        lines = [x.strip() for x in str(e).splitlines() if x.strip()] or [type(e).__name__]
        raise CheckpointError(f"--resume: the sharded training state in {out} does not fit this model and "
                              f"training config: {lines[0][:300]}") from None
    return {**info, "rng": [rng[str(r)] for r in range(len(rng))]}


def _rng_tensors(rng: list[dict]) -> dict:
    """Every rank's RNG states as tensors under string keys (DCP flattens nested dicts by key)."""
    return {str(r): {k: v.clone() for k, v in states.items()} for r, states in enumerate(rng)}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"corrupt training state {path}: {e}") from None


# ---- export: a sharded run -> a normal checkpoint folder ------------------------------------------

def export(run: str | Path, out: str | Path) -> dict:
    """Consolidate the sharded train state of run folder ``run`` into checkpoint folder ``out``:
    ``config.json`` + ``model.safetensors`` (the EMA weights if the run kept an EMA, as a DDP run
    writes) + ``tokenizer/`` + the card. One process, no process group: DCP reads every rank's shards.
    ``out`` is written under a temporary name and renamed into place. Returns the record's meta."""
    from argen.card import write_card
    from argen.models import build_from_record

    run, out = Path(run), Path(out)
    d = state_dir(run)
    if d is None:
        hint = " (a --strategy ddp run folder is a checkpoint already)" if (run / ckpt.WEIGHTS).is_file() else ""
        raise ArgenError(f"--checkpoint {run}: no sharded training state ({STATE_DIR}/{STATE_JSON}){hint}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ArgenError(f"--out {out}: exists and is not an empty folder; choose a new folder")
    if out.resolve() == run.resolve() or out.resolve().is_relative_to(run.resolve()):
        raise ArgenError(f"--out {out}: inside the run folder {run}; choose a folder outside it")
    info = _read_json(d / STATE_JSON)
    record = ckpt.read_record(run)
    model = build_from_record(record, "cpu")
    key = "ema" if info.get("ema") else "model"
    state = {key: model.state_dict()}
    try:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.filterwarnings("ignore", message=r"torch.distributed is disabled")
            dcp.load(state, storage_reader=HuggingFaceStorageReader(str(d)), no_dist=True)
    except (RuntimeError, ValueError, KeyError, AssertionError, CheckpointException) as e:
        raise CheckpointError(f"--checkpoint {run}: the sharded state does not fit its config.json: "
                              f"{str(e).strip().splitlines()[0][:300]}") from None
    for k, v in state[key].items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"--checkpoint {run}: tensor {k} holds NaN or infinite values")
    meta = dict(record.meta, step=int(info["step"]))  # the state's step (config.json is written after it)
    if "train_seconds" in info:
        meta["train_seconds"] = info["train_seconds"]
    tmp = out.parent / f".{out.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    ckpt.save_model(tmp, model, preset=record.preset, state_dict=state[key], meta=meta)
    if (run / ckpt.TOKENIZER_DIR / ckpt.CONFIG).is_file():
        ckpt.copy_tokenizer(run / ckpt.TOKENIZER_DIR, tmp)
    write_card(tmp)
    if out.exists():
        out.rmdir()  # empty, checked above
    tmp.rename(out)
    return meta
