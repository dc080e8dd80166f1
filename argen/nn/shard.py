"""Random draws with one meaning for the global batch, however it is split.

Training splits each global batch of B samples into S equal shards: one per rank under DDP/FSDP,
times ``--grad-accum`` micro-batches per rank. For N ranks to give exactly what one process gives,
a random draw must not depend on how the batch is split. So every draw here is made for the whole
global batch (B rows along ``batch_dim``) on every shard, from the same RNG state, and each shard
keeps its own rows. One process (S = 1) draws exactly the tensor it uses, so nothing changes there.

The trainer sets the shard with ``shard_of(index, count)`` around each forward pass and restores the
RNG state before each micro-batch of a step, so that all shards of a step see the same stream; ranks
stay in step because they consume it identically. Outside training (sampling, evaluation) there is
one shard and these are torch's own functions.

Draws whose size depends on the data (not on the batch size) must be made per sample (batch-leading
shape) to keep this property; a loss whose normaliser depends on the draws (a mean over a random
number of masked tokens) normalises by the global count with ``mean``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Shard:
    index: int = 0   # this shard's place in the global batch: rank * grad_accum + micro-batch
    count: int = 1   # shards per global batch: world size * grad_accum


_current = Shard()


def current() -> Shard:
    return _current


@contextlib.contextmanager
def shard_of(index: int, count: int):
    """Within this block, draws are made for ``count`` shards' rows and shard ``index`` keeps its own."""
    global _current
    previous, _current = _current, Shard(index, count)
    try:
        yield _current
    finally:
        _current = previous


def local(x_global: torch.Tensor, batch_dim: int = 0) -> torch.Tensor:
    """This shard's rows of a tensor made for the global batch."""
    s = _current
    if s.count == 1:
        return x_global
    n = x_global.shape[batch_dim] // s.count
    return x_global.narrow(batch_dim, s.index * n, n)


def _global_shape(shape, batch_dim: int) -> tuple[int, ...]:
    shape = list(shape)
    shape[batch_dim] *= _current.count
    return tuple(shape)


def rand(*shape: int, batch_dim: int = 0, whole: bool = False, **kw) -> torch.Tensor:
    """``torch.rand(shape)`` for this shard's rows (``shape[batch_dim]`` is the local batch); ``whole``
    returns the draw for the global batch instead (to compute a global count, then ``local``)."""
    x = torch.rand(_global_shape(shape, batch_dim), **kw)
    return x if whole else local(x, batch_dim)


def randn(*shape: int, batch_dim: int = 0, **kw) -> torch.Tensor:
    return local(torch.randn(_global_shape(shape, batch_dim), **kw), batch_dim)


def randn_like(x: torch.Tensor, batch_dim: int = 0) -> torch.Tensor:
    return randn(*x.shape, batch_dim=batch_dim, device=x.device, dtype=x.dtype)


def randint(high: int, shape: tuple[int, ...], batch_dim: int = 0, **kw) -> torch.Tensor:
    return local(torch.randint(high, _global_shape(shape, batch_dim), **kw), batch_dim)


def mean(sum_local: torch.Tensor, count_global: torch.Tensor | float) -> torch.Tensor:
    """A mean over the global batch from this shard's sum and the global count. Shards' losses are
    averaged (DDP averages gradients over ranks, accumulation divides by the micro-batches), hence the
    factor ``count``: the average of the shards' values is then sum over shards / count_global."""
    return sum_local * _current.count / count_global


def dropout(x: torch.Tensor, p: float, training: bool, batch_dim: int = 0) -> torch.Tensor:
    """Inverted dropout whose mask is drawn for the global batch."""
    if not training or p == 0.0:
        return x
    keep = rand(*x.shape, batch_dim=batch_dim, device=x.device) >= p
    return x * keep.to(x.dtype) / (1 - p)


class Dropout(nn.Module):
    """``nn.Dropout`` with the global-batch mask of ``dropout`` (the batch is dimension 0)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def attention(q_BHLD: torch.Tensor, k_BHSD: torch.Tensor, v_BHSD: torch.Tensor, attn_mask=None,
              dropout_p: float = 0.0, is_causal: bool = False) -> torch.Tensor:
    """SDPA, with attention dropout drawn for the global batch when ``dropout_p`` > 0 (SDPA's own
    dropout draws inside the kernel, per rank). Callers pass ``dropout_p`` = 0 outside training."""
    if dropout_p == 0.0:
        return F.scaled_dot_product_attention(q_BHLD, k_BHSD, v_BHSD, attn_mask=attn_mask, is_causal=is_causal)
    L, S = q_BHLD.shape[-2], k_BHSD.shape[-2]
    scores = q_BHLD @ k_BHSD.transpose(-2, -1) * q_BHLD.shape[-1] ** -0.5
    if is_causal:
        attn_mask = torch.ones(L, S, dtype=torch.bool, device=q_BHLD.device).tril()
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    return dropout(scores.softmax(-1), dropout_p, True) @ v_BHSD


def gather(x_local: torch.Tensor) -> torch.Tensor:
    """Rows of every rank, in rank order (= global batch order, ranks holding consecutive shards).

    For statistics outside the gradient (a tokenizer's k-means and code restarts): every rank gets
    the same tensor, so every rank can compute the same result without a broadcast."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x_local
    parts = [torch.empty_like(x_local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x_local.contiguous())
    return torch.cat(parts)


def all_sum(x: torch.Tensor) -> torch.Tensor:
    """``x`` summed over ranks (in place; returned for chaining)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(x)
    return x
