"""Tests for argen.sampling.processors: top-k, top-p, temperature, CFG and the categorical draw."""

from __future__ import annotations

import math

import pytest
import torch

from argen.sampling.guidance import guide
from argen.sampling.processors import (
    Temperature,
    TopK,
    TopP,
    apply,
    build_processors,
    sample_categorical,
)


def kept(logits: torch.Tensor) -> list[bool]:
    return torch.isfinite(logits).tolist()


# ------------------------------------------------------------------------------------ top-k


def test_topk_keeps_exactly_the_k_largest_and_leaves_them_unchanged():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 11, generator=g)
    for k in (1, 3, 11):
        out = TopK(k)(logits)
        assert (torch.isfinite(out).sum(-1) == k).all()
        top = torch.topk(logits, k, dim=-1).indices
        mask = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, top, True)
        assert torch.equal(torch.isfinite(out), mask)
        assert torch.equal(out[mask], logits[mask])  # kept logits are untouched
        assert (out[~mask] == float("-inf")).all()


def test_topk_keeps_ties_at_the_kth_value():
    logits = torch.tensor([[3.0, 2.0, 2.0, 1.0, 2.0]])
    assert kept(TopK(2)(logits)) == [[True, True, True, False, True]]
    logits = torch.tensor([[1.0, 3.0, 3.0, 2.0]])
    assert kept(TopK(1)(logits)) == [[False, True, True, False]]
    assert kept(TopK(2)(logits)) == [[False, True, True, False]]
    assert kept(TopK(3)(logits)) == [[False, True, True, True]]


def test_topk_larger_than_vocab_keeps_everything():
    logits = torch.tensor([[0.5, -1.0, 2.0]])
    assert torch.equal(TopK(10)(logits), logits)


# ------------------------------------------------------------------------------------ top-p


def probs_logits(probs, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64).log().to(dtype)


@pytest.mark.parametrize("p, expected", [
    (0.3, [True, False, False, False]),
    (0.5, [True, False, False, False]),   # the top token alone reaches 0.5
    (0.51, [True, True, False, False]),
    (0.79, [True, True, False, False]),
    (0.8, [True, True, False, False]),    # 0.5 + 0.3 reaches 0.8: the minimal nucleus is two tokens
    (0.81, [True, True, True, False]),
    (0.96, [True, True, True, True]),
    (1.0, [True, True, True, True]),
])
def test_topp_keeps_the_minimal_nucleus(p, expected):
    # Shuffled order so the scatter back from sorted order is exercised too.
    probs = [0.15, 0.5, 0.05, 0.3]
    order = [1, 3, 0, 2]  # positions of 0.5, 0.3, 0.15, 0.05
    out = TopP(p)(probs_logits(probs))
    got = kept(out)
    assert [got[i] for i in order] == expected
    finite = torch.isfinite(out)
    assert torch.equal(out[finite], probs_logits(probs)[finite])


def test_topp_always_keeps_the_top_token():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(64, 50, generator=g) * 3
    for p in (1e-9, 1e-3, 0.01):
        out = TopP(p)(logits)
        assert (torch.isfinite(out).sum(-1) >= 1).all()
        top = logits.argmax(-1)
        assert torch.isfinite(out.gather(-1, top[:, None])).all()
    # With a tiny p and a clear winner, only the winner stays.
    out = TopP(1e-6)(torch.tensor([[0.0, 5.0, 1.0]]))
    assert kept(out) == [[False, True, False]]


def test_topp_kept_mass_reaches_p_and_is_minimal_on_random_rows():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(200, 20, generator=g, dtype=torch.float64) * 2
    p = 0.7
    out = TopP(p)(logits)
    probs = logits.softmax(-1)
    keep = torch.isfinite(out)
    mass = (probs * keep).sum(-1)
    assert (mass >= p - 1e-12).all()
    # Minimal: dropping the least likely kept token falls below p.
    smallest_kept = torch.where(keep, probs, torch.inf).min(-1).values
    assert (mass - smallest_kept < p).all()
    # And the kept set is a prefix of the sorted order: every kept prob >= every dropped prob.
    largest_dropped = torch.where(keep, -torch.inf, probs).max(-1).values
    assert (smallest_kept >= largest_dropped).all()


# ------------------------------------------------------------------------------------ temperature / order


def test_temperature_divides_logits_and_sharpens():
    logits = torch.tensor([[1.0, 2.0, 4.0]])
    assert torch.allclose(Temperature(2.0)(logits), logits / 2)
    cold = Temperature(0.5)(logits).softmax(-1)
    hot = Temperature(2.0)(logits).softmax(-1)
    assert cold[0, 2] > logits.softmax(-1)[0, 2] > hot[0, 2]


def test_build_processors_order_and_defaults():
    assert build_processors() == []
    procs = build_processors(temperature=0.7, top_k=5, top_p=0.9)
    assert [type(p) for p in procs] == [Temperature, TopK, TopP]
    assert (procs[0].t, procs[1].k, procs[2].p) == (0.7, 5, 0.9)
    assert [type(p) for p in build_processors(top_p=0.5)] == [TopP]
    assert [type(p) for p in build_processors(top_k=3)] == [TopK]


def test_temperature_is_applied_before_top_p():
    # probs (0.6, 0.3, 0.1): p = 0.65 keeps two tokens at t = 1; at t = 0.25 the top token alone has
    # ~0.94 of the mass, so top-p after temperature keeps one. Applying top-p first would keep two.
    logits = probs_logits([0.6, 0.3, 0.1])
    out = apply(logits, build_processors(temperature=0.25, top_p=0.65))
    assert kept(out) == [True, False, False]
    assert kept(apply(logits, build_processors(top_p=0.65))) == [True, True, False]


# ------------------------------------------------------------------------------------ CFG


def test_guide_weight_zero_returns_cond_exactly():
    g = torch.Generator().manual_seed(3)
    cond, uncond = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    out = guide(torch.cat([cond, uncond]), 0.0)
    assert torch.equal(out, cond)


@pytest.mark.parametrize("w", [0.5, 1.5, 4.0])
def test_guide_formula(w):
    g = torch.Generator().manual_seed(4)
    cond, uncond = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    out = guide(torch.cat([cond, uncond]), w)
    assert out.shape == cond.shape
    assert torch.allclose(out, cond + w * (cond - uncond), atol=1e-6)
    assert torch.allclose(out, (1 + w) * cond - w * uncond, atol=1e-5)


def test_guide_accepts_a_per_row_weight_tensor():
    g = torch.Generator().manual_seed(5)
    cond, uncond = torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)
    w = torch.tensor([[0.0], [2.0]])
    out = guide(torch.cat([cond, uncond]), w)
    assert torch.equal(out[0], cond[0])
    assert torch.allclose(out[1], cond[1] + 2 * (cond[1] - uncond[1]), atol=1e-6)


# ------------------------------------------------------------------------------------ categorical draw


def test_sample_categorical_is_reproducible_with_a_seeded_generator():
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(32, 10, generator=g)
    a = sample_categorical(logits, torch.Generator().manual_seed(123))
    b = sample_categorical(logits, torch.Generator().manual_seed(123))
    c = sample_categorical(logits, torch.Generator().manual_seed(124))
    assert a.shape == (32,) and a.dtype == torch.long
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sample_categorical_never_draws_a_masked_token():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(2000, 8, generator=g)
    logits[:, ::2] = float("-inf")            # only odd tokens allowed
    logits[:5] = float("-inf")
    logits[:5, 3] = 0.0                        # rows with a single allowed token
    draws = sample_categorical(logits, torch.Generator().manual_seed(0))
    assert (draws % 2 == 1).all()
    assert (draws[:5] == 3).all()
    # top-k / top-p masks too, on many draws of one row
    row = TopP(0.6)(TopK(3)(torch.tensor([[2.0, 1.5, 1.0, 0.9, 0.1]]))).expand(5000, 5)
    draws = sample_categorical(row, torch.Generator().manual_seed(1))
    allowed = torch.isfinite(row[0]).nonzero().flatten()
    assert torch.isin(draws, allowed).all()
    assert set(draws.tolist()) == set(allowed.tolist())  # and every allowed token does occur


def test_sample_categorical_matches_the_distribution():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    n = 20000
    logits = probs.log().float().expand(n, 4)
    draws = sample_categorical(logits, torch.Generator().manual_seed(8))
    counts = torch.bincount(draws, minlength=4).double()
    assert int(counts.sum()) == n
    try:
        from scipy.stats import chisquare
    except ImportError:  # pragma: no cover - scipy is optional
        assert torch.allclose(counts / n, probs, atol=0.02)
    else:
        pvalue = chisquare(counts.numpy(), (probs * n).numpy()).pvalue
        assert pvalue > 1e-3, (counts.tolist(), pvalue)
    # A wrong sampler (e.g. uniform, or argmax) would be far off; make sure the test could see that.
    assert (counts / n - probs).abs().max() < 0.02


def test_sample_categorical_batched_rows_are_independent_of_each_other():
    # Rows with very different distributions: each row follows its own probabilities.
    n = 4000
    logits = torch.tensor([[0.0, -math.inf, -math.inf], [-math.inf, 0.0, 0.0]]).repeat(n, 1)
    draws = sample_categorical(logits, torch.Generator().manual_seed(9)).view(n, 2)
    assert (draws[:, 0] == 0).all()
    frac_1 = (draws[:, 1] == 1).double().mean()
    assert 0.45 < frac_1 < 0.55
