"""NAR (neighbouring autoregression): the order and its predictors, h + w - 1 passes, the KV-cached
sampler against teacher forcing, the exact likelihood, and the sampled distribution on a toy model."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import chi2_pvalue, tiny_nar

from argen.generators.nar import neighbour_order
from argen.models import build
from argen.sampling.guidance import guide
from argen.sampling.nar import NARSamplerConfig, sample
from argen.sampling.processors import apply, build_processors


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_order_runs_by_diagonals_and_each_token_comes_from_a_neighbour_on_the_diagonal_before():
    h, w = 3, 4
    order, source, head = neighbour_order(h, w)
    rc = [(int(i) // w, int(i) % w) for i in order]
    assert sorted(order.tolist()) == list(range(h * w)) and rc[0] == (0, 0)
    diag = [r + c for r, c in rc]
    assert diag == sorted(diag)
    for k in range(1, h * w):
        (r, c), (sr, sc) = rc[k], rc[int(source[k])]
        assert (sr, sc) == ((r, c - 1) if head[k] == 0 else (r - 1, c))  # row head: left; column head: above
        assert sr + sc == r + c - 1
    assert head.sum() > 0 and (head == 0).sum() > 1  # both heads serve


@pytest.mark.parametrize("grid", [(7, 7), (4, 4), (2, 5), (1, 3)])
def test_passes_are_h_plus_w_minus_1(grid):
    model = tiny_nar(grid=grid)
    calls = []
    handle = model.layers[0].register_forward_hook(lambda *a: calls.append(1))
    out = sample(model, None, torch.tensor([0, 2]), NARSamplerConfig(cfg=1.0), gen(0))
    handle.remove()
    assert out.shape == (2, *grid) and len(calls) == grid[0] + grid[1] - 1
    assert NARSamplerConfig().passes(model) == len(calls)


@pytest.mark.parametrize("cfg", [0.0, 1.5])
def test_greedy_sampling_equals_greedy_teacher_forcing(cfg):
    """The cached diagonal passes see what the full teacher-forced forward sees (mask, rotary positions, heads)."""
    model = tiny_nar(seed=3, grid=(3, 4))
    labels = torch.tensor([0, 1, 2])
    out = sample(model, None, labels, NARSamplerConfig(top_k=1, cfg=cfg), gen(0)).flatten(1)
    want = torch.zeros_like(out)
    for s, e in model.diagonals:  # teacher forcing on what is drawn so far; later tokens cannot matter
        logits = model(want, labels)
        if cfg:
            logits = guide(torch.cat([logits, model(want, torch.full_like(labels, 3))]), cfg)
        cells = model.order[s:e]
        want[:, cells] = logits[:, cells].argmax(-1)
    assert torch.equal(out, want)


def test_later_diagonals_do_not_change_earlier_logits():
    model = tiny_nar(seed=4, grid=(3, 3))
    a = torch.randint(0, 16, (1, 9))
    b = a.clone()
    b[0, 8] = (a[0, 8] + 1) % 16   # token (2, 2), the last diagonal
    b[0, 5] = (a[0, 5] + 1) % 16   # token (1, 2), diagonal 3
    la, lb = model(a, torch.tensor([1])), model(b, torch.tensor([1]))
    early = [int(i) for i in model.order if (int(i) // 3 + int(i) % 3) <= 3]  # diagonals 0..3 see diagonals < 3
    torch.testing.assert_close(la[0, early], lb[0, early])
    assert not torch.allclose(la[0, 8], lb[0, 8])  # token (2, 2) sees (1, 2)


def test_the_loss_is_an_exact_likelihood():
    """exp(-NLL) over every token map of a toy model sums to 1: a product of normalised conditionals."""
    model = tiny_nar(seed=1, grid=(2, 2), vocab_size=3, num_classes=2)
    seqs = torch.cartesian_prod(*[torch.arange(3)] * 4)
    with torch.no_grad():
        per_map = [model.loss({"idx_BN": s[None]}, torch.tensor([1]))[1]["ce"] * 4 for s in seqs]
    assert sum(math.exp(-x) for x in per_map) == pytest.approx(1.0, abs=1e-4)


# ------------------------------------------------------------------------------------ exact distribution

TOY_V, TOY_GRID, SAMPLES = 3, (2, 2), 20_000


@pytest.fixture(scope="module")
def toy():
    return tiny_nar(seed=1, logit_scale=0.5, vocab_size=TOY_V, grid=TOY_GRID, num_classes=2, width=16, heads=2)


@torch.no_grad()
def exact_log_probs(model, label: int, cfg: NARSamplerConfig, known=None) -> torch.Tensor:
    """log P(map) of the sampler's target for all V^N maps (raster layout), from teacher-forced logits;
    guidance at each diagonal's start, then the processors; known tokens forced."""
    N = TOY_GRID[0] * TOY_GRID[1]
    seqs = torch.cartesian_prod(*[torch.arange(TOY_V)] * N)
    S = seqs.shape[0]
    cond, uncond = model(seqs, torch.full((S,), label)), model(seqs, torch.full((S,), 2))
    procs = build_processors(cfg.temperature, cfg.top_k, cfg.top_p)
    total = torch.zeros(S, dtype=torch.float64)
    for s, e in model.diagonals:
        w = cfg.weight(s / N, ramp=s / N)
        for i in model.order[s:e].tolist():
            logits = guide(torch.cat([cond[:, i], uncond[:, i]]).double(), w) if w > 0 else cond[:, i].double()
            logp_i = apply(logits, procs).log_softmax(-1).gather(1, seqs[:, i:i + 1]).squeeze(1)
            if known is not None and known[1][i]:
                logp_i = torch.where(seqs[:, i] == known[0][i], 0.0, float("-inf"))
            total += logp_i
    return total


@pytest.mark.parametrize("kw, known", [
    ({}, None),
    ({"cfg": 1.5, "temperature": 0.9, "cfg_schedule": "linear"}, None),
    ({"top_k": 2}, None),
    ({}, ([0, 0, 1, 0], [False, False, True, False])),  # token (1, 0) known: the others drawn around it
])
def test_sampler_matches_the_exact_joint_distribution(toy, kw, known):
    pytest.importorskip("scipy.stats")
    cfg = NARSamplerConfig(**kw)
    p = exact_log_probs(toy, 1, cfg, known).exp()
    torch.testing.assert_close(p.sum(), torch.tensor(1.0, dtype=torch.float64))
    k = None
    if known is not None:
        k = (torch.tensor(known[0]).expand(SAMPLES, -1), torch.tensor(known[1]).expand(SAMPLES, -1))
    out = sample(toy, None, torch.ones(SAMPLES, dtype=torch.long), cfg, gen(7), known=k).flatten(1)
    code = (out * torch.tensor([TOY_V ** (3 - j) for j in range(4)])).sum(1)
    counts = torch.bincount(code, minlength=TOY_V ** 4).double()
    assert 0.5 * (counts / SAMPLES - p).abs().sum() < 0.04
    assert chi2_pvalue(counts, p) > 0.01
    # the test has power: the target is far from uniform over its support
    support = p > 0
    assert 0.5 * (p[support] - 1 / int(support.sum())).abs().sum() > 0.1


def test_presets_build_the_raster_networks():
    nar, raster = build("nar-fmnist"), build("raster-fmnist")
    assert nar.config.to_dict() == raster.config.to_dict()
    extra = {k for k in nar.state_dict()} - {k for k in raster.state_dict()}
    assert extra == {"output_down.weight"}
