"""Exact-distribution tests for the next-scale (VAR) and MaskGIT samplers on enumerable toy models.

As the raster test (tests/test_raster.py, "exact distributions"): a toy model small enough that every
outcome can be enumerated, the probability of every outcome computed independently of the sampler
from teacher-forced logits (guidance, temperature, top-k and top-p applied to each exact conditional,
here by a float64 reference written in this file), many samples drawn in one batched call, and a
chi-square test. Each case also shows that the test has power: the target is far from uniform, and
the same counts make the chi-square reject the targets that plausible bugs would sample from
(processors ignored or applied in another order, the other guidance schedule, another commit order).
"""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_maskgit, tiny_msvq, tiny_var

from argen.sampling.maskgit import MaskGITSamplerConfig
from argen.sampling.maskgit import sample as maskgit_sample
from argen.sampling.next_scale import VARSamplerConfig
from argen.sampling.next_scale import sample as var_sample

stats = pytest.importorskip("scipy.stats")

PROCESSOR_ORDER = ("temperature", "top_k", "top_p")  # the samplers' order (VAR, LlamaGen, transformers)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tv(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * float((p - q).abs().sum())


# ------------------------------------------------------------------------------------ reference


def guidance_weight(config, done: float, ramp: float) -> float:
    """w of a step that starts with fraction ``done`` generated: cfg, or cfg * ramp under "linear";
    0 outside ``cfg_interval``."""
    start, end = config.cfg_interval
    if not start <= done < end:
        return 0.0
    return config.cfg * (ramp if config.cfg_schedule == "linear" else 1.0)


def guided(cond: torch.Tensor, uncond: torch.Tensor, w: float) -> torch.Tensor:
    return cond + w * (cond - uncond)


def processed_log_probs(logits: torch.Tensor, config, order=PROCESSOR_ORDER) -> torch.Tensor:
    """log softmax after temperature, top-k (ties at the k-th value kept) and top-p (the smallest set of
    most likely tokens whose mass reaches p; the top token always stays), in float64."""
    logits = logits.double()
    for step in order:
        if step == "temperature":
            logits = logits / config.temperature
        elif step == "top_k" and config.top_k > 0:
            kth = logits.topk(min(config.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        elif step == "top_p" and config.top_p < 1:
            probs, order_ = logits.softmax(-1).sort(dim=-1, descending=True)
            drop = (probs.cumsum(-1) - probs) >= config.top_p  # the mass before a token already reaches p
            drop[..., 0] = False
            logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order_, drop), float("-inf"))
    return logits.log_softmax(-1)


def check_matches(counts: torch.Tensor, p: torch.Tensor) -> None:
    """The counts of every outcome fit the exact distribution ``p`` (chi-square, p > 0.01)."""
    torch.testing.assert_close(p.sum(), torch.tensor(1.0, dtype=torch.float64))
    support = p > 0
    assert counts[~support].sum() == 0  # never an outcome the processors rule out
    expected = p[support] / p[support].sum() * counts.sum()
    assert expected.min() > 5  # chi-square needs populated bins
    assert stats.chisquare(counts[support].numpy(), expected.numpy()).pvalue > 0.01
    # The test has power: the target is far from uniform over its support.
    assert tv(p[support], torch.full_like(p[support], 1 / int(support.sum()))) > 0.1


def rejects(counts: torch.Tensor, q: torch.Tensor) -> bool:
    """The chi-square tells the counts from a wrong target ``q``."""
    if counts[q == 0].sum() > 0:
        return True  # outcomes that q rules out were drawn
    support = q > 0
    expected = q[support] / q[support].sum() * counts.sum()
    return stats.chisquare(counts[support].numpy(), expected.numpy()).pvalue < 1e-6


def product_of_marginals(p: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The product of the one-token marginals of a joint ``p`` over ``shape``: independent tokens."""
    joint, out = p.view(shape), torch.ones((), dtype=p.dtype)
    for d in range(len(shape)):
        out = out[..., None] * joint.sum([j for j in range(len(shape)) if j != d])
    return out.flatten()


# ------------------------------------------------------------------------------------ VAR (next scale)

# Scales (1, 2) and 3 codes: a scale-1 token and a 2x2 scale-2 map, 3^5 = 243 outcomes.
VAR_V, VAR_SCALES, VAR_CLASSES, VAR_LABEL = 3, (1, 2), 2, 1
VAR_NULL = VAR_CLASSES  # the unconditional class id
VAR_K, VAR_L = len(VAR_SCALES), sum(pn * pn for pn in VAR_SCALES)
VAR_SAMPLES = 20_000


@pytest.fixture(scope="module")
def var_toy():
    tok = tiny_msvq(seed=0, scales=VAR_SCALES, image_size=4, codebook_size=VAR_V)  # grid 2x2: the last scale
    model = tiny_var(seed=0, vocab_size=VAR_V, scales=VAR_SCALES, num_classes=VAR_CLASSES, width=16, depth=1)
    with torch.no_grad():
        model.head.weight.mul_(0.7)  # moderate logits: every one of the 243 bins populated
    assert tok.token_dim == model.config.token_dim and tuple(tok.grid) == (VAR_SCALES[-1],) * 2
    return model, tok


def var_outcomes() -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Every outcome as a flat (243, 5) sequence (the scale-1 token, then the scale-2 map row-major;
    the first token most significant) and as the per-scale index maps the sampler returns."""
    seqs = torch.cartesian_prod(*[torch.arange(VAR_V)] * VAR_L)
    return seqs, [m.reshape(-1, pn, pn) for m, pn in zip(seqs.split([pn * pn for pn in VAR_SCALES], 1), VAR_SCALES)]


def var_code(maps: list[torch.Tensor]) -> torch.Tensor:
    flat = torch.cat([m.flatten(1) for m in maps], 1)
    return (flat * torch.tensor([VAR_V ** (VAR_L - 1 - j) for j in range(VAR_L)])).sum(1)


@torch.no_grad()
def var_exact(model, tok, config: VARSamplerConfig, known=None, order=PROCESSOR_ORDER) -> torch.Tensor:
    """P(outcome) of the sampler's target for all 243 outcomes: the product over scales, and over the
    tokens of a scale (drawn independently given the earlier scales), of the processed softmax of
    teacher-forced logits (as VAR.loss: tokenizer.teacher_forcing_input, then model(labels, x)).
    Scale k of K starts with the fraction of tokens of the earlier scales done and has the linear ramp k / (K - 1).
    ``known`` = (flat tokens, flat mask) forces tokens; ``order`` reorders the processors (a wrong target)."""
    seqs, maps = var_outcomes()
    S = seqs.shape[0]
    x = tok.teacher_forcing_input(maps)
    cond = model(torch.full((S,), VAR_LABEL), x).double()
    uncond = model(torch.full((S,), VAR_NULL), x).double()
    logp_SL = torch.empty(S, VAR_L, dtype=torch.float64)
    for si, (b, e) in enumerate(model.config.begin_ends):
        w = guidance_weight(config, b / VAR_L, ramp=si / (VAR_K - 1))
        logp = processed_log_probs(guided(cond[:, b:e], uncond[:, b:e], w), config, order)
        logp_SL[:, b:e] = logp.gather(-1, seqs[:, b:e, None]).squeeze(-1)
    if known is not None:
        tokens, mask = torch.tensor(known[0]), torch.tensor(known[1])
        logp_SL = torch.where(mask, torch.where(seqs == tokens, 0.0, float("-inf")).double(), logp_SL)
    return logp_SL.sum(1).exp()


VAR_CASES = {  # sampler config, known (flat tokens, flat mask), wrong targets the chi-square must reject
    "plain": ({}, None, ["marginals"]),
    "cfg-linear": ({"cfg": 0.5}, None, ["plain", "constant"]),
    "cfg-constant": ({"cfg": 0.5, "cfg_schedule": "constant"}, None, ["plain", "linear"]),
    "cfg-interval": ({"cfg": 0.5, "cfg_schedule": "constant", "cfg_interval": (0.0, 0.2)}, None,
                     ["plain", "no-interval"]),
    "temperature-top-k": ({"temperature": 0.5, "top_k": 2}, None, ["plain", "no-temperature", "no-top-k"]),
    "temperature-top-p": ({"temperature": 1.3, "top_p": 0.75}, None,
                          ["plain", "no-temperature", "no-top-p", "top-p-first"]),
    # the scale-1 token and one scale-2 token given (refine from scale 2 + inpainting), with guidance
    "known": ({"cfg": 0.5}, ([2, 0, 1, 0, 0], [True, False, True, False, False]), ["plain", "unforced-input"]),
}


def var_wrong_target(name: str, model, tok, config: VARSamplerConfig, known, p: torch.Tensor) -> torch.Tensor:
    if name == "marginals":  # every token drawn independently: no conditioning on the earlier scale
        return product_of_marginals(p, (VAR_V,) * VAR_L)
    if name == "plain":
        return var_exact(model, tok, VARSamplerConfig(), known)
    if name in ("linear", "constant"):
        return var_exact(model, tok, config.replace(cfg_schedule=name), known)
    if name == "no-interval":
        return var_exact(model, tok, config.replace(cfg_interval=(0.0, 1.0)), known)
    if name == "no-temperature":
        return var_exact(model, tok, config.replace(temperature=1.0), known)
    if name == "no-top-k":
        return var_exact(model, tok, config.replace(top_k=0), known)
    if name == "no-top-p":
        return var_exact(model, tok, config.replace(top_p=1.0), known)
    if name == "top-p-first":  # the nucleus taken before the temperature
        return var_exact(model, tok, config, known, order=("top_p", "temperature"))
    if name == "unforced-input":  # known tokens in the output only: scale 2 conditioned on the drawn scale-1 token
        joint = var_exact(model, tok, config, (known[0], [False] + list(known[1][1:]))).view(VAR_V, -1)
        return torch.zeros_like(joint).index_copy_(0, torch.tensor([known[0][0]]), joint.sum(0, keepdim=True)).flatten()
    raise AssertionError(name)


@pytest.mark.parametrize("case", list(VAR_CASES))
def test_next_scale_sampler_matches_the_exact_distribution(var_toy, case):
    model, tok = var_toy
    kw, known, wrongs = VAR_CASES[case]
    config = VARSamplerConfig(**kw)
    p = var_exact(model, tok, config, known)
    k = None
    if known is not None:
        sizes = [pn * pn for pn in VAR_SCALES]
        k = tuple([t.view(1, pn, pn).expand(VAR_SAMPLES, pn, pn) for t, pn in zip(x.split(sizes), VAR_SCALES)]
                  for x in (torch.tensor(known[0]), torch.tensor(known[1])))
    out = var_sample(model, tok, torch.full((VAR_SAMPLES,), VAR_LABEL), config, gen(7), known=k)
    assert [tuple(o.shape) for o in out] == [(VAR_SAMPLES, pn, pn) for pn in VAR_SCALES]
    counts = torch.bincount(var_code(out), minlength=VAR_V ** VAR_L).double()
    check_matches(counts, p)
    for name in wrongs:
        q = var_wrong_target(name, model, tok, config, known, p)
        assert tv(p, q) > 0.02, name  # the wrong target is another distribution ...
        assert rejects(counts, q), name  # ... and the chi-square tells it from the samples


def test_next_scale_targets_are_well_posed(var_toy):
    """Guards the distribution test: top-k and top-p bite, no conditional sits on the top-p boundary
    (the sampler works in float32, the target in float64), and the linear schedule leaves the first
    scale unguided (w = cfg * 0 / (K - 1)) while the constant one guides it."""
    model, tok = var_toy
    config = VARSamplerConfig(**VAR_CASES["temperature-top-p"][0])
    support = var_exact(model, tok, config) > 0
    assert 2 ** VAR_L < int(support.sum()) < 3 ** VAR_L  # some conditionals keep 2 tokens, some 3
    for delta in (-2e-3, 2e-3):
        torch.testing.assert_close(var_exact(model, tok, config.replace(top_p=config.top_p + delta)),
                                   var_exact(model, tok, config))
    assert int((var_exact(model, tok, VARSamplerConfig(top_k=2)) > 0).sum()) == 2 ** VAR_L
    first = lambda p: p.view(VAR_V, -1).sum(1)  # the scale-1 marginal
    plain = first(var_exact(model, tok, VARSamplerConfig()))
    torch.testing.assert_close(first(var_exact(model, tok, VARSamplerConfig(cfg=0.5))), plain)
    assert tv(first(var_exact(model, tok, VARSamplerConfig(cfg=0.5, cfg_schedule="constant"))), plain) > 0.02


# ------------------------------------------------------------------------------------ MaskGIT

# A 1x2 grid, 3 codes, T = 2 steps (the cosine schedule re-masks 1 then 0 of the 2 tokens): step 1
# draws both tokens and keeps the more confident one, step 2 draws the other given the kept one.
# 3^2 = 9 outcomes; which position is committed first is random and is marginalised out.
MG_V, MG_CLASSES, MG_LABEL, MG_T = 3, 2, 0, 2
MG_NULL, MG_MASK = MG_CLASSES, MG_V
MG_SAMPLES = 20_000


@pytest.fixture(scope="module")
def mg_toy():
    model = tiny_maskgit(seed=10, vocab_size=MG_V, grid=(1, 2), num_classes=MG_CLASSES)
    with torch.no_grad():
        model.head.weight.mul_(0.5)  # moderate logits: every bin populated
    return model


@torch.no_grad()
def mg_step(model, config: MaskGITSamplerConfig, t: int, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Guided log-probs (what the confidence reads) and processed log-probs (what the draw uses) of
    step t for the token maps ``rows`` (R, 2): (R, 2, V) each."""
    cond = model(rows, torch.full((len(rows),), MG_LABEL)).double()
    uncond = model(rows, torch.full((len(rows),), MG_NULL)).double()
    logits = guided(cond, uncond, guidance_weight(config, t / MG_T, ramp=(t + 1) / MG_T))
    return logits.log_softmax(-1), processed_log_probs(logits, config)


def mg_exact(model, config: MaskGITSamplerConfig, order: str = "confidence",
             processed_confidence: bool = False) -> torch.Tensor:
    """P(x0, x1) of the MaskGIT sampler (grid 1x2, T = 2), flattened as x0 * V + x1.

    Step 1 (both positions masked): each position draws d_i ~ q_i (processed logits); confidence
    c_i = log p_i(d_i) (guided, unprocessed logits) + s G_i, s = choice_temperature * (1 - 1/T), G_i iid
    Gumbel; the more confident position is kept: position 0 with probability K(d0, d1) =
    sigmoid((c_0 - c_1) / s) (a difference of two Gumbels is logistic), or [c_0 > c_1] when s = 0.
    Step 2 (no noise left): the other position draws from the model fed the kept token, r:
      P(x0, x1) = q_0(x0) sum_d q_1(d) K(x0, d) r_1(x1 | x0) + q_1(x1) sum_d q_0(d) (1 - K(d, x1)) r_0(x0 | x1)
    Wrong targets: ``order`` "first" always keeps position 0, "uniform" either with probability 1/2
    (an infinite choice temperature); ``processed_confidence`` reads c from the processed logits."""
    V = MG_V
    logp, logq = (a[0] for a in mg_step(model, config, 0, torch.tensor([[MG_MASK, MG_MASK]])))  # (2, V)
    q = logq.exp()
    r1 = mg_step(model, config, 1, torch.tensor([[v, MG_MASK] for v in range(V)]))[1][:, 1].exp()  # [x0, x1]
    r0 = mg_step(model, config, 1, torch.tensor([[MG_MASK, v] for v in range(V)]))[1][:, 0].exp()  # [x1, x0]
    conf = logq if processed_confidence else logp
    diff = conf[0][:, None] - conf[1][None, :]  # c_0(d0) - c_1(d1): (V, V)
    s = config.choice_temperature * (1 - 1 / MG_T)
    if order == "first":
        keep0 = torch.ones_like(diff)
    elif order == "uniform":
        keep0 = torch.full_like(diff, 0.5)
    elif s == 0:
        keep0 = (diff > 0).double()  # a tie would keep position 1 (the stable argsort re-masks position 0)
    else:
        keep0 = torch.sigmoid(diff / s).nan_to_num(0.5)  # nan: -inf - -inf, draws of probability 0
    first0 = q[0][:, None] * (q[1][None, :] * keep0).sum(1, keepdim=True) * r1  # (x0, x1)
    first1 = q[1][None, :] * (q[0][:, None] * (1 - keep0)).sum(0, keepdim=True) * r0.T  # (x0, x1)
    return (first0 + first1).flatten()


MG_CASES = {  # sampler config, wrong targets the chi-square must reject
    "greedy-order": ({"choice_temperature": 0.0}, ["marginals", "one-step", "uniform", "first"]),
    "greedy-order-cfg": ({"choice_temperature": 0.0, "cfg": 1.0}, ["one-step", "uniform", "plain"]),
    "gumbel-order": ({"choice_temperature": 2.0}, ["marginals", "one-step", "greedy", "uniform", "first"]),
    "gumbel-order-cfg-linear": ({"choice_temperature": 1.0, "cfg": 3.0, "cfg_schedule": "linear"},
                                ["greedy", "uniform", "plain", "constant"]),
    "gumbel-order-temperature-top-k": ({"choice_temperature": 1.0, "temperature": 0.5, "top_k": 2},
                                       ["greedy", "uniform", "plain", "processed-confidence"]),
    "gumbel-order-temperature-top-p": ({"choice_temperature": 1.0, "temperature": 3.0, "top_p": 0.5},
                                       ["greedy", "uniform", "plain", "no-top-p", "processed-confidence"]),
}


def mg_wrong_target(name: str, model, config: MaskGITSamplerConfig, p: torch.Tensor) -> torch.Tensor:
    if name == "marginals":
        return product_of_marginals(p, (MG_V, MG_V))
    if name == "one-step":  # both first-step draws kept: one parallel step
        q = mg_step(model, config, 0, torch.tensor([[MG_MASK, MG_MASK]]))[1][0].exp()
        return torch.outer(q[0], q[1]).flatten()
    if name == "greedy":
        return mg_exact(model, config.replace(choice_temperature=0.0))
    if name in ("uniform", "first"):
        return mg_exact(model, config, order=name)
    if name == "plain":
        return mg_exact(model, MaskGITSamplerConfig(steps=MG_T, choice_temperature=config.choice_temperature))
    if name == "constant":
        return mg_exact(model, config.replace(cfg_schedule="constant"))
    if name == "no-top-p":
        return mg_exact(model, config.replace(top_p=1.0))
    if name == "processed-confidence":
        return mg_exact(model, config, processed_confidence=True)
    raise AssertionError(name)


@pytest.mark.parametrize("case", list(MG_CASES))
def test_maskgit_sampler_matches_the_exact_distribution(mg_toy, case):
    kw, wrongs = MG_CASES[case]
    config = MaskGITSamplerConfig(steps=MG_T, **kw)
    p = mg_exact(mg_toy, config)
    out = maskgit_sample(mg_toy, None, torch.full((MG_SAMPLES,), MG_LABEL), config, gen(5))
    assert out.shape == (MG_SAMPLES, 1, 2)
    counts = torch.bincount(out[:, 0, 0] * MG_V + out[:, 0, 1], minlength=MG_V ** 2).double()
    check_matches(counts, p)
    for name in wrongs:
        q = mg_wrong_target(name, mg_toy, config, p)
        assert tv(p, q) > 0.02, name
        assert rejects(counts, q), name


def test_maskgit_targets_are_well_posed(mg_toy):
    """Guards the distribution test: no two first-step confidences tie (the greedy order is decided by
    a clear margin), top-p bites but no conditional sits on its boundary, and the order of commits
    approaches the uniform one as the choice temperature grows."""
    for kw, _ in MG_CASES.values():
        config = MaskGITSamplerConfig(steps=MG_T, **kw)
        logp, logq = (a[0] for a in mg_step(mg_toy, config, 0, torch.tensor([[MG_MASK, MG_MASK]])))
        assert (logp[0][:, None] - logp[1][None, :]).abs().min() > 0.01, kw
        if config.top_p < 1:
            assert int((logq > float("-inf")).sum()) < 2 * MG_V, kw
            for delta in (-2e-3, 2e-3):
                torch.testing.assert_close(mg_exact(mg_toy, config.replace(top_p=config.top_p + delta)),
                                           mg_exact(mg_toy, config))
    config = MaskGITSamplerConfig(steps=MG_T, choice_temperature=1e4)
    torch.testing.assert_close(mg_exact(mg_toy, config), mg_exact(mg_toy, config, order="uniform"), atol=1e-4, rtol=0)
