"""Acceptance tests of speculative decoding: exact (SJD) and the two relaxed ones (LANTERN, GSD).

Each test sees, per window slot, the model's distribution p, the draft's distribution q and the
draft token d, and gives the probability of accepting d and, for the first rejected slot, the
weights the replacement token is drawn from. ``Exact`` is speculative sampling's own rule, under
which every accepted or replaced token is an exact draw from p. The relaxed rules accept more
often and pay in distribution: both reduce to ``Exact`` at their zero setting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from argen.errors import ArgenError


def _at(x_BWV: torch.Tensor, d_BW: torch.Tensor) -> torch.Tensor:
    return x_BWV.gather(-1, d_BW[..., None])[..., 0]


def _ratio(p_mass: torch.Tensor, q_mass: torch.Tensor) -> torch.Tensor:
    """min(1, p / q): the acceptance probability of a draft (or group) with these masses."""
    return (p_mass / q_mass.clamp_min(1e-30)).clamp(max=1)


def _nonzero_or(weights: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """``weights`` where a row has mass, else ``fallback`` (p == q leaves no residual; never drawn then)."""
    return torch.where(weights.sum(-1, keepdim=True) > 0, weights, fallback)


class Acceptance:
    def accept_prob(self, p_BWV: torch.Tensor, q_BWV: torch.Tensor, d_BW: torch.Tensor) -> torch.Tensor:
        """(B, W): the probability of accepting each draft (its slot's predecessors accepted)."""
        raise NotImplementedError

    def residual(self, p_BV: torch.Tensor, q_BV: torch.Tensor, d_B: torch.Tensor) -> torch.Tensor:
        """(B, V) non-negative weights of the token that replaces a rejected draft."""
        return _nonzero_or((p_BV - q_BV).clamp_min(0), p_BV)


class Exact(Acceptance):
    """min(1, p(d) / q(d)); replacement from norm(max(0, p - q)): lossless."""

    def accept_prob(self, p_BWV, q_BWV, d_BW):
        return _ratio(_at(p_BWV, d_BW), _at(q_BWV, d_BW))


@dataclass(frozen=True)
class Relaxed(Acceptance):
    """LANTERN (Jang et al., ICLR 2025): the draft also counts the p-mass of its nearest codebook
    neighbours, taking them nearest first while their total stays <= ``delta`` (which bounds the
    total-variation distortion per token); a rejection also removes those neighbours from the
    replacement draw. ``delta = 0`` is ``Exact``. ``neighbours_VK``: each code's k nearest other codes."""

    neighbours_VK: torch.Tensor
    delta: float

    @classmethod
    def from_tokenizer(cls, tokenizer, k: int, delta: float) -> Relaxed:
        if tokenizer is None:
            raise ArgenError("lantern measures token distances in the tokenizer's codebook: pass the tokenizer")
        return cls(nearest_codes(tokenizer.code_vectors().detach().float(), k), delta)

    def _borrowed(self, p, d):
        nb = self.neighbours_VK[d]                              # (..., k), nearest first
        p_nb = p.gather(-1, nb)
        used = p_nb.cumsum(-1) <= self.delta                    # a prefix: the cumulative sum only grows
        return (p_nb * used).sum(-1), nb, used

    def accept_prob(self, p_BWV, q_BWV, d_BW):
        mass, _, _ = self._borrowed(p_BWV, d_BW)
        return _ratio(_at(p_BWV, d_BW) + mass, _at(q_BWV, d_BW))

    def residual(self, p_BV, q_BV, d_B):
        _, nb, used = self._borrowed(p_BV, d_B)
        r = (p_BV - q_BV).clamp_min(0)
        r = r.scatter(-1, nb, torch.where(used, 0.0, r.gather(-1, nb)))
        return _nonzero_or(r, p_BV)


def nearest_codes(codes_VC: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """(V, min(k, V - 1)) ids of each code's nearest other codes by L2 distance, nearest first
    (in chunks of rows: a 16384-code book never needs its whole V x V distance matrix)."""
    V = codes_VC.shape[0]
    k = min(k, V - 1)
    out = []
    for i in range(0, V, chunk):
        d2 = torch.cdist(codes_VC[i:i + chunk], codes_VC)
        d2[torch.arange(d2.shape[0]), torch.arange(i, i + d2.shape[0])] = float("inf")  # not itself
        out.append(d2.topk(k, dim=-1, largest=False).indices)
    return torch.cat(out)


@dataclass(frozen=True)
class Grouped(Acceptance):
    """GSD (So et al., ICCV 2025): the draft stands for a group of look-alike tokens: those within
    ``ranks`` places of it in p's order whose probability differs from the draft's by less than
    ``gap`` and whose input embeddings lie within squared distance ``dist``; accepted with
    min(1, p(group) / q(group)), replaced as in ``Exact``. ``ranks = 0`` (a group of one) is ``Exact``."""

    embeddings_VC: torch.Tensor
    ranks: int
    gap: float
    dist: float

    def accept_prob(self, p_BWV, q_BWV, d_BW):
        p_d, q_d = _at(p_BWV, d_BW), _at(q_BWV, d_BW)
        if self.ranks == 0:
            return _ratio(p_d, q_d)
        V = p_BWV.shape[-1]
        order = p_BWV.argsort(-1, descending=True)                       # (B, W, V) token ids by p
        rank = (p_BWV > p_d[..., None]).sum(-1)                          # the draft's place in that order
        offsets = torch.arange(-self.ranks, self.ranks + 1, device=d_BW.device)
        at = rank[..., None] + offsets                                   # (B, W, 2R + 1)
        y = order.gather(-1, at.clamp(0, V - 1))
        e = self.embeddings_VC.float()
        near = (e[y] - e[d_BW][..., None, :]).pow(2).sum(-1) < self.dist
        p_y = p_BWV.gather(-1, y)
        member = (at >= 0) & (at < V) & (y != d_BW[..., None]) & near & ((p_y - p_d[..., None]).abs() < self.gap)
        p_group = p_d + (p_y * member).sum(-1)
        q_group = q_d + (q_BWV.gather(-1, y) * member).sum(-1)
        return _ratio(p_group, q_group)
