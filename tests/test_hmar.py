"""HMAR: block-diagonal attention (Markov across scales), no KV cache, masked refinement inside a
scale, the one-shot sampler against teacher forcing and against the exact distribution of a toy."""

from __future__ import annotations

import pytest
import torch
from helpers import chi2_pvalue, tiny_hmar, tiny_msvq

from argen.generators.hmar import HMARConfig
from argen.models import build
from argen.sampling.guidance import guide
from argen.sampling.hmar import HMARSamplerConfig, sample
from argen.sampling.processors import apply, build_processors

SCALES = (1, 2, 4)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def teacher_logits(model, tok, idx_list, labels, masked=True):
    """Logits of every scale from the reconstruction of the coarser ones; every token masked when ``masked``."""
    x = tok.teacher_forcing_input(idx_list)
    idx = torch.cat([i.flatten(1) for i in idx_list], 1)
    return model(labels, x, torch.full_like(idx, model.mask_id) if masked else idx)


def test_a_scale_sees_only_its_own_block():
    model, tok = tiny_hmar(), tiny_msvq()
    labels = torch.tensor([0, 1])
    a = [torch.randint(16, (2, p, p), generator=gen(k)) for k, p in enumerate(SCALES)]
    base = teacher_logits(model, tok, a, labels, masked=False)
    b = [t.clone() for t in a]
    b[2][:, 0, 0] = (a[2][:, 0, 0] + 1) % 16       # a token of the last scale, as an input of that scale
    other = teacher_logits(model, tok, b, labels, masked=False)
    e1, (s2, e2) = model.config.begin_ends[1][1], model.config.begin_ends[2]
    torch.testing.assert_close(other[:, :e1], base[:, :e1])  # earlier scales: untouched
    assert not torch.allclose(other[:, s2:e2], base[:, s2:e2])  # its own scale: changed
    c = [t.clone() for t in a]
    c[1][:, 1, 1] = (a[1][:, 1, 1] + 1) % 16       # a scale-1 token changes scale 2 only through the input
    with_input = teacher_logits(model, tok, c, labels)
    torch.testing.assert_close(with_input[:, :e1], teacher_logits(model, tok, a, labels)[:, :e1])
    assert not torch.allclose(with_input[:, s2:e2], teacher_logits(model, tok, a, labels)[:, s2:e2])


@pytest.mark.parametrize("cfg", [0.0, 1.5])
def test_one_shot_greedy_sampling_equals_greedy_teacher_forcing(cfg, monkeypatch):
    model, tok = tiny_hmar(seed=2), tiny_msvq()
    monkeypatch.setattr(model, "new_caches", lambda *a, **k: pytest.fail("HMAR needs no KV cache"))
    labels = torch.tensor([0, 1, 2])
    out = sample(model, tok, labels, HMARSamplerConfig(top_k=1, cfg=cfg, cfg_schedule="constant"), gen(0))
    want = [torch.zeros(3, p, p, dtype=torch.long) for p in SCALES]
    for k, (s, e) in enumerate(model.config.begin_ends):  # scale k depends on scales < k only
        logits = teacher_logits(model, tok, want, labels)
        if cfg:
            logits = guide(torch.cat([logits, teacher_logits(model, tok, want, torch.full_like(labels, 3))]), cfg)
        want[k] = logits[:, s:e].argmax(-1).view_as(want[k])
    assert all(torch.equal(o, w) for o, w in zip(out, want))


@pytest.mark.parametrize("steps", [1, 2, 3, 16])
def test_passes_are_the_refinement_steps_of_every_scale(steps):
    model, tok = tiny_hmar(), tiny_msvq()
    calls = []
    handle = model.blocks[0].register_forward_hook(lambda *a: calls.append(1))
    config = HMARSamplerConfig(refine_steps=steps, cfg=1.0)
    out = sample(model, tok, torch.tensor([0, 1]), config, gen(0))
    handle.remove()
    assert len(calls) == sum(min(steps, p * p) for p in SCALES) == config.passes(model)
    assert [o.shape for o in out] == [(2, p, p) for p in SCALES] and all(int(o.max()) < 16 for o in out)


def test_refinement_feeds_committed_tokens_back():
    """With refinement the later steps see the committed tokens: the maps differ from one-shot ones."""
    model, tok = tiny_hmar(seed=3), tiny_msvq()
    labels = torch.arange(3).repeat(20)
    one = sample(model, tok, labels, HMARSamplerConfig(), gen(5))
    four = sample(model, tok, labels, HMARSamplerConfig(refine_steps=4), gen(5))
    assert torch.equal(one[0], four[0])  # one token: one step either way, the same draw
    assert not torch.equal(one[2], four[2])


def test_known_tokens_are_kept_and_condition_the_rest():
    model, tok = tiny_hmar(seed=4), tiny_msvq()
    B = 4
    idx = [torch.randint(16, (B, p, p), generator=gen(k)) for k, p in enumerate(SCALES)]
    mask = [torch.rand(B, p, p, generator=gen(10 + k)) < 0.5 for k, p in enumerate(SCALES)]
    out = sample(model, tok, torch.zeros(B, dtype=torch.long), HMARSamplerConfig(refine_steps=3), gen(1),
                 known=(idx, mask))
    for o, i, m in zip(out, idx, mask):
        assert torch.equal(o[m], i[m])


# ------------------------------------------------------------------------------------ exact distribution

TOY_SCALES, TOY_V, SAMPLES = (1, 2), 2, 20_000


@pytest.fixture(scope="module")
def toy():
    tok = tiny_msvq(scales=TOY_SCALES, codebook_size=TOY_V, image_size=4)
    model = tiny_hmar(seed=1, scales=TOY_SCALES, vocab_size=TOY_V, num_classes=2)
    return model, tok


@torch.no_grad()
def exact_log_probs(model, tok, label: int, config: HMARSamplerConfig) -> torch.Tensor:
    """log P of all V^5 pairs (scale 0, scale 1) under one-shot sampling: each scale's tokens independent
    given the reconstruction of the coarser one; guidance and processors on each conditional."""
    maps = torch.cartesian_prod(*[torch.arange(TOY_V)] * 5)  # (32, 5): token of scale 0, then scale 1's four
    S = maps.shape[0]
    idx_list = [maps[:, :1].view(S, 1, 1), maps[:, 1:].view(S, 2, 2)]
    cond = teacher_logits(model, tok, idx_list, torch.full((S,), label))
    uncond = teacher_logits(model, tok, idx_list, torch.full((S,), 2))
    procs = build_processors(config.temperature, config.top_k, config.top_p)
    total = torch.zeros(S, dtype=torch.float64)
    for k, (s, e) in enumerate(model.config.begin_ends):
        w = config.weight(s / 5, ramp=float(k))  # ramp k / (K - 1) with K = 2
        logits = guide(torch.cat([cond[:, s:e], uncond[:, s:e]]).double(), w) if w > 0 else cond[:, s:e].double()
        total += apply(logits, procs).log_softmax(-1).gather(-1, maps[:, s:e, None]).squeeze(-1).sum(1)
    return total


@pytest.mark.parametrize("kw", [{}, {"cfg": 2.0, "temperature": 0.8}])
def test_one_shot_sampler_matches_the_exact_joint_distribution(toy, kw):
    pytest.importorskip("scipy.stats")
    model, tok = toy
    config = HMARSamplerConfig(**kw)
    p = exact_log_probs(model, tok, 1, config).exp()
    torch.testing.assert_close(p.sum(), torch.tensor(1.0, dtype=torch.float64))
    out = sample(model, tok, torch.ones(SAMPLES, dtype=torch.long), config, gen(3))
    flat = torch.cat([o.flatten(1) for o in out], 1)
    code = (flat * torch.tensor([TOY_V ** (4 - j) for j in range(5)])).sum(1)
    counts = torch.bincount(code, minlength=TOY_V ** 5).double()
    assert 0.5 * (counts / SAMPLES - p).abs().sum() < 0.04
    assert chi2_pvalue(counts, p) > 0.01
    assert 0.5 * (p - 1 / p.numel()).abs().sum() > 0.1  # power: far from uniform


# ------------------------------------------------------------------------------------ training


def test_training_masks_every_scale_and_the_lognormal_weights():
    model = build("hmar-digits")
    masked = model.random_mask(500, "cpu")
    for b, e in model.config.begin_ends:
        n = masked[:, b:e].sum(1)
        assert n.min() >= 1 and n.max() <= e - b
    assert masked[:, 1:].float().mean() < 0.9  # not everything masked: refinement has something to learn
    w = HMARConfig(scale_loss="lognormal").scale_weights()
    assert sum(w) == pytest.approx(1.0) and len(set(w)) == len(w)
    with pytest.raises(Exception, match="scale_loss must be one of tokens, lognormal"):
        HMARConfig(scale_loss="uniform")


def test_a_training_step_lowers_the_masked_loss():
    model, tok = tiny_hmar(randomize=False, scale_loss="lognormal"), tiny_msvq()
    model.train()
    images = torch.rand(16, 1, 8, 8) * 2 - 1
    tokens = model.tokens_from_images(tok, images)
    labels = torch.arange(16) % 3
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for step in range(30):
        torch.manual_seed(step % 2)  # the same two masks again and again
        loss, metrics = model.loss(tokens, labels)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.8 * first and "ce_masked" in metrics
