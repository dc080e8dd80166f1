"""One training loop for everything argen trains: anything with ``loss(batch) -> (loss, metrics)``.

Tokenizers train on ``(images, labels)`` batches directly; generators train
through ``GeneratorObjective``, which encodes the batch with a frozen tokenizer
first. The loop runs unchanged as one process or under ``torchrun`` (DDP, with
``batch_size`` the global batch split evenly over ranks, and over ``grad_accum``
micro-batches per rank). ``strategy="fsdp"`` shards weights, gradients and optimizer state over
the ranks instead of replicating them (``argen.training.fsdp``).

One meaning for every global batch: the data order and the mirror flips of augmented data
are pure functions of (seed, step) (``batch_indices``, ``argen.data.flips``), and every
random draw of a step (label dropout, masks, noise, dropout) is made for the global batch
(``argen.nn.shard``), each shard keeping its rows; a tokenizer's codebook statistics are
gathered from every shard. So N ranks x M micro-batches give the weights
one process gives, up to float summation order.

Exact resume: everything else that changes while training (weights, EMA, AdamW
moments, every rank's RNG state, step) is saved in ``train_state.safetensors`` (FSDP: each rank's
shards in ``train_state_dcp/``), so a run killed at any point and resumed from its last checkpoint
ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

import argen.checkpoint as ckpt
from argen.config import Config, check
from argen.data import flips
from argen.errors import ArgenError, CheckpointError
from argen.nn import shard
from argen.training import dist, fsdp
from argen.training.ema import EMA

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig(Config):
    steps: int = 1000
    batch_size: int = 64            # global batch: split over ranks under torchrun, then over micro-batches
    grad_accum: int = 1             # micro-batches per rank and step (gradient accumulation)
    lr: float = 1e-3                # peak learning rate after warm-up
    min_lr_ratio: float = 0.05      # cosine decays to lr * min_lr_ratio
    warmup: int = 100
    weight_decay: float = 0.0       # AdamW, on matrices only (not biases, norms, embeddings' 1-d params)
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0          # max global grad norm (0: off)
    ema: float = 0.0                # EMA decay (0: off); the checkpoint's model.safetensors holds the EMA
    bf16: bool = False              # bf16 autocast for the forward pass
    save_every: int = 500
    log_every: int = 25
    seed: int = 0
    strategy: str = "ddp"           # ddp: a whole replica per rank; fsdp: sharded (argen.training.fsdp)
    activation_checkpointing: bool = False  # recompute each block's activations in backward (less memory)

    def __post_init__(self):
        super().__post_init__()
        for name in ("lr", "min_lr_ratio", "weight_decay", "beta1", "beta2", "grad_clip", "ema"):
            value = getattr(self, name)  # inf passes "> 0" and poisons every weight at the first step
            check(isinstance(value, (int, float)) and math.isfinite(value),
                  f"{name} must be a finite number, got {value}")
        check(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(0 <= self.ema < 1, f"ema must be in [0, 1), got {self.ema}")
        check(self.save_every >= 1, f"save_every must be >= 1, got {self.save_every}")
        check(self.warmup >= 0, f"warmup must be >= 0, got {self.warmup}")
        check(self.strategy in ("ddp", "fsdp"), f"strategy must be ddp or fsdp, got {self.strategy!r}")

    def lr_at(self, step: int) -> float:
        """Linear warm-up then cosine decay to ``lr * min_lr_ratio``."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        t = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


class GeneratorObjective(nn.Module):
    """Trains a generator on tokens from a frozen tokenizer (which is neither trained nor saved).

    Batches are images, or stored codes with ``argen.data.codes.CodesTokenizer`` as the tokenizer:
    the generator's ``tokens_from_images`` turns either into its training tokens. With ``captions``
    (a text model), a batch's labels are its images' indices and the generator is conditioned on
    their captions."""

    def __init__(self, generator: nn.Module, tokenizer: nn.Module, captions: Sequence[str] | None = None):
        super().__init__()
        self.generator = generator
        self.tokenizer = tokenizer.eval().requires_grad_(False)
        self.captions = captions

    def train(self, mode: bool = True):
        super().train(mode)
        self.tokenizer.eval()  # the tokenizer stays in eval mode: no usage updates, no restarts
        return self

    def loss(self, batch):
        images, labels = batch
        tokens = self.generator.tokens_from_images(self.tokenizer, images)
        cond = labels if self.captions is None else [self.captions[i] for i in labels.tolist()]
        with self.generator.conditioned(cond) as ids_B:
            return self.generator.loss(tokens, ids_B)


class _LossForward(nn.Module):
    """DDP synchronises gradients of what runs inside ``forward``: route ``loss`` through it."""

    def __init__(self, objective: nn.Module):
        super().__init__()
        self.objective = objective

    def forward(self, batch):
        return self.objective.loss(batch)


@functools.lru_cache(maxsize=2)  # this epoch and the next, which a batch may reach into
def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the ``n`` examples in ``epoch``: drawn once per epoch, not once per step (a permutation of
    200,000 took 2 ms, more than a small model's step on a GPU)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def batch_indices(step: int, batch_size: int, n: int, seed: int) -> torch.Tensor:
    """Global batch ``step``: positions [step*B, (step+1)*B) of an endless stream of seeded permutations."""
    out, pos = [], step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(pos, n)
        take = _epoch_order(n, seed, epoch)[offset: offset + batch_size - len(out)]
        out.extend(take.tolist())
        pos += len(take)
    return torch.tensor(out)


def _param_groups(model: nn.Module, weight_decay: float):
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _rank_rng_states() -> list[dict]:
    """Every rank's RNG state, in rank order (on every rank; rank 0 saves them)."""
    if not dist.is_dist():
        return [_rng_state()]
    states = [None] * dist.world_size()
    torch.distributed.all_gather_object(states, _rng_state())
    return states


def _restore_rng(saved) -> None:
    """This rank's saved state. Draws are made for the global batch, so every rank's state is the same
    and a run resumed on another number of ranks takes rank 0's (older train states hold one dict)."""
    states = saved if isinstance(saved, list) else [saved]
    _set_rng_state(states[dist.rank()] if len(states) == dist.world_size() else states[0])


def train(model: nn.Module, dataset, cfg: TrainConfig, out_dir: str | Path, *, objective: nn.Module | None = None,
          device: torch.device | str = "cpu", resume: bool = False, preset: str | None = None,
          meta: dict | None = None, quiet: bool = False, tensorboard: bool = False) -> dict[str, float]:
    """Train ``model`` (through ``objective`` if given) and checkpoint it to ``out_dir``. Returns the last metrics.

    ``tensorboard``: also write every logged row as TensorBoard scalars to ``out_dir/tensorboard``
    (rank 0; needs the ``tensorboard`` package, the extra ``argen[tensorboard]``)."""
    device = torch.device(device)
    out = Path(out_dir)
    world, rank = dist.world_size(), dist.rank()
    shards = world * cfg.grad_accum
    if cfg.batch_size % shards:
        raise ArgenError(f"--batch-size {cfg.batch_size} must be divisible by the number of processes ({world}) "
                         f"times --grad-accum ({cfg.grad_accum})")
    local_bs, micro_bs = cfg.batch_size // world, cfg.batch_size // shards
    objective = objective if objective is not None else model
    model.to(device)
    objective.to(device)
    if cfg.activation_checkpointing:
        fsdp.checkpoint_units(model)
    if cfg.strategy == "fsdp":  # before the optimizer and the EMA are built: they keep the shards only
        fsdp.shard_model(model, device, bf16=cfg.bf16)
    sharded = fsdp.is_sharded(model)

    torch.manual_seed(cfg.seed)
    groups = _param_groups(model, cfg.weight_decay)
    opt = torch.optim.AdamW(fsdp.split_param_groups(groups) if sharded else groups, lr=cfg.lr,
                            betas=(cfg.beta1, cfg.beta2))
    ema = EMA(model, cfg.ema) if cfg.ema > 0 else None
    step, seconds_before = 0, 0.0  # seconds_before: wall time of earlier runs of this training (resume)
    if resume:
        # FSDP: every rank reads its shards of the weights, AdamW moments and EMA into place
        state = (fsdp.load_train_state(out, model, opt, ema=ema.state if ema is not None else None) if sharded
                 else ckpt.load_train_state(out))
        try:  # a train state of another model, or a file edited by hand: one line, before any step
            if not sharded:
                model.load_state_dict(state["model"])
                opt_state = state["optimizer"]
                opt_state["state"] = {int(k): v for k, v in opt_state["state"].items()}  # JSON made the keys strings
                opt.load_state_dict(opt_state)
                if ema is not None:
                    ema.state = {k: state["ema"][k].to(device) for k in ema.state}
            step = int(state["step"])
            seconds_before = float(state.get("train_seconds", 0.0))
            _restore_rng(state["rng"])
        except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as e:
            lines = [x.strip() for x in str(e).splitlines() if x.strip()] or [type(e).__name__]
            detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines[0]
            raise CheckpointError(f"--resume: the training state in {out} does not fit this model and "
                                  f"training config: {detail}") from None
        if dist.is_main():
            ckpt.truncate_log(out / ckpt.LOG, step)
        if dist.is_main() and not quiet:
            log.info("resumed from %s at step %d", out, step)

    runner: nn.Module = _LossForward(objective)
    if world > 1 and not sharded:
        runner = nn.parallel.DistributedDataParallel(runner, device_ids=[device.index] if device.type == "cuda" else None)
    objective.train()

    meta = dict(meta or {}, train_config=cfg.to_dict(), dataset=getattr(dataset, "name", None))

    def save(step_done: int, metrics: dict) -> None:
        _stop_if_not_finite(model, step_done, out)  # a collective: every rank checks its weights (or shards)
        rng = _rank_rng_states()  # a collective: every rank takes part
        seconds = round(seconds_before + time.perf_counter() - t0, 1)  # the budget, summed over resumes
        if sharded:  # every rank writes its shards; model.safetensors is consolidated at the last step
            fsdp.save_checkpoint(out, model, opt, ema=ema.state if ema is not None else None, rng=rng,
                                 step=step_done, final=step_done == cfg.steps, preset=preset,
                                 meta=dict(meta, step=step_done, train_seconds=seconds, metrics=metrics),
                                 extra={"train_config": cfg.to_dict(), "train_seconds": seconds})
            return
        weights = ema.state if ema is not None else model.state_dict()
        if not dist.is_main():
            return
        ckpt.save_model(out, model, preset=preset, state_dict=weights,
                        meta=dict(meta, step=step_done, train_seconds=seconds, metrics=metrics))
        ckpt.save_train_state(out, {
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "ema": ema.state if ema is not None else {}, "step": step_done, "rng": rng,
            "train_config": cfg.to_dict(), "train_seconds": seconds,
        })

    board = _board(out) if tensorboard and dist.is_main() else None
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    bar = tqdm(total=cfg.steps, initial=step, disable=quiet or not dist.is_main(), desc=f"train {preset or ''}",
               dynamic_ncols=True)
    metrics: dict[str, float] = {}
    t0, seen = time.perf_counter(), 0

    def local_batch(step: int):
        mine = slice(rank * local_bs, (rank + 1) * local_bs)
        idx = batch_indices(step, cfg.batch_size, len(dataset), cfg.seed)[mine]
        if getattr(dataset, "augment", False):  # random mirrors: a pure function of (seed, stream position)
            images, labels = dataset.batch(idx, flip_B=flips(cfg.seed, step, cfg.batch_size)[mine])
        else:
            images, labels = dataset.batch(idx)
        return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    if step == 0 and hasattr(model, "begin_training"):  # a tokenizer's k-means, on the first global batch
        with shard.shard_of(rank, world):
            model.begin_training(local_batch(0))
    with _stop_at_step_boundary() as stop:
        while step < cfg.steps:
            images, labels = local_batch(step)
            for g in opt.param_groups:
                g["lr"] = cfg.lr_at(step)
            opt.zero_grad(set_to_none=True)
            rng = _rng_state()  # every micro-batch of the step draws from the same stream (``shard``)
            losses, micro_metrics = [], []
            for m in range(cfg.grad_accum):
                _set_rng_state(rng)
                part = slice(m * micro_bs, (m + 1) * micro_bs)
                # DDP averages gradients over ranks at the last micro-batch's backward only.
                sync = contextlib.nullcontext() if m == cfg.grad_accum - 1 or world == 1 or sharded else runner.no_sync()
                with sync, shard.shard_of(rank * cfg.grad_accum + m, shards):
                    with amp:
                        loss, metrics = runner((images[part], labels[part]))
                    (loss / cfg.grad_accum).backward()
                losses.append(loss.detach())
                micro_metrics.append(metrics)
            loss = torch.stack(losses).mean()
            metrics = {k: sum(d[k] for d in micro_metrics) / len(micro_metrics) for k in micro_metrics[0]}
            if cfg.grad_clip > 0:
                clip = fsdp.clip_grad_norm_ if sharded else torch.nn.utils.clip_grad_norm_
                metrics["grad_norm"] = float(clip(model.parameters(), cfg.grad_clip))
            opt.step()
            if hasattr(model, "end_step"):  # a tokenizer's codebook statistics of the global batch
                metrics.update(model.end_step())
            if not dist.all_true(bool(torch.isfinite(loss).all())):  # every rank stops together
                _diverged(step + 1, f"the loss is {float(loss)}", out)
            if ema is not None:
                ema.update(model, step)
            step += 1
            seen += cfg.batch_size
            if step % cfg.log_every == 0 or step == cfg.steps:
                loss = dist.mean(loss)  # the global batch's loss, not rank 0's shard's
            metrics = {"loss": float(loss), **metrics, "lr": opt.param_groups[0]["lr"]}
            if step % cfg.log_every == 0 or step == cfg.steps:
                ips = seen / (time.perf_counter() - t0)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", img_s=f"{ips:.0f}")
                if dist.is_main():
                    ckpt.append_log(out / ckpt.LOG, {"step": step, **metrics, "img_per_s": ips})
                if board is not None:
                    for k, v in {**metrics, "img_per_s": ips}.items():
                        board.add_scalar(f"train/{k}", v, step)
                    board.flush()  # a crash keeps what was logged, as log.jsonl does
            bar.update(1)
            if step % cfg.save_every == 0 or step == cfg.steps or stop.requested:
                save(step, metrics)
            if stop.requested:
                bar.close()
                raise KeyboardInterrupt
    bar.close()
    if board is not None:
        board.close()
    dist.barrier()
    return metrics


def tensorboard_writer():
    """torch's TensorBoard ``SummaryWriter`` class, or a one-line error naming the extra to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ArgenError("--tensorboard needs the tensorboard package: pip install 'argen[tensorboard]'") from None
    return SummaryWriter


def _board(out: Path):
    return tensorboard_writer()(str(out / "tensorboard"))


class _StopFlag:
    requested = False


@contextlib.contextmanager
def _stop_at_step_boundary():
    """Ctrl-C finishes the current step, saves, then raises KeyboardInterrupt (a second Ctrl-C stops at once).
    SIGTERM does the same: it is what `kill`, batch schedulers (SLURM before its SIGKILL) and a session that
    ends send, and a background run (`nohup ... &`) ignores SIGINT.

    Saving mid-step would store half-updated weights or an RNG state already advanced by the
    unfinished step, and the resumed run would no longer match an uninterrupted one."""
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True
        log.warning("interrupt: finishing this step and saving a checkpoint (once more to stop at once)")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _diverged(step: int, what: str, out: Path) -> None:
    raise ArgenError(f"training diverged at step {step}: {what}; nothing was saved from it, the last good "
                     f"checkpoint in {out} (if any) is kept (try a lower --lr or check --set values)")


def _stop_if_not_finite(model: nn.Module, step: int, out: Path) -> None:
    """Before a save: weights that are not finite would replace the last good checkpoint with one that only
    ever gives NaN. A non-finite loss stops training at its step already; this catches weights that an
    update made non-finite on the step before a save. Parameters only: buffers may hold -inf on purpose
    (attention masks)."""
    params = list(model.parameters())  # FSDP: this rank's shards, and'ed over ranks
    if params and not dist.all_true(bool(torch.stack([fsdp.local(p.detach()).isfinite().all() for p in params]).all())):
        _diverged(step, "the weights are no longer finite", out)
