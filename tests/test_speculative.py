"""Speculative Jacobi decoding, its lossy relatives (LANTERN, GSD) and ZipAR (argen.sampling.speculative,
argen.sampling.acceptance, argen.sampling.zipar).

The exactness tests enumerate every token map of a toy raster model: the lossless samplers must
reproduce its exact joint distribution (chi-square, and total variation no larger than plain
sampling's with the same sample count), and the lossy ones must fail the same test at a setting
that relaxes them (so the test has power).
"""

from __future__ import annotations

import pytest
import torch
from helpers import chi2_pvalue, tiny_raster, tiny_vq

from argen.errors import ArgenError, ConfigError
from argen.sampling import is_lossy, sampler_for, samplers_of
from argen.sampling.acceptance import Exact, Grouped, Relaxed, nearest_codes
from argen.sampling.autoregressive import RasterSamplerConfig
from argen.sampling.autoregressive import sample as raster_sample
from argen.sampling.guidance import guide
from argen.sampling.processors import apply
from argen.sampling.speculative import GSDSamplerConfig, LanternSamplerConfig, SJDSamplerConfig
from argen.sampling.zipar import ZipARSamplerConfig, zipar_passes
from argen.tokens import TokenSpec

stats = pytest.importorskip("scipy.stats")

TOY = {"vocab_size": 3, "grid": (2, 3), "num_classes": 2, "width": 16, "heads": 2}
V, GRID, N, NULL, LABEL = 3, (2, 3), 6, 2, 1
SAMPLES = 20_000


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def toy():
    return tiny_raster(seed=3, logit_scale=0.6, **TOY)


class Codebook:
    """A stand-in tokenizer for the toy grid: a token spec and code vectors (LANTERN's distances)."""

    token_spec = TokenSpec("discrete", GRID, vocab_size=V)

    def code_vectors(self):
        return torch.tensor([[0.0], [0.1], [1.0]])  # tokens 0 and 1 are each other's nearest neighbour


@torch.no_grad()
def exact_probs(model, config: RasterSamplerConfig) -> torch.Tensor:
    """P(token map) of the sampler's target for all V^N maps, from teacher-forced logits with guidance
    and the processors applied to each exact conditional: (V^N,), first token most significant."""
    n = model.config.seq_len
    seqs = torch.cartesian_prod(*[torch.arange(V)] * n)
    S = seqs.shape[0]
    cond, uncond = model(seqs, torch.full((S,), LABEL)), model(seqs, torch.full((S,), NULL))
    total = torch.zeros(S, dtype=torch.float64)
    for i in range(n):
        w = config.weight(i / n, ramp=i / n)
        logits = guide(torch.cat([cond[:, i], uncond[:, i]]).double(), w) if config.use_cfg else cond[:, i].double()
        total += apply(logits, config.processors()).log_softmax(-1).gather(1, seqs[:, i:i + 1])[:, 0]
    return total.exp()


def counts_of(tokens: torch.Tensor) -> torch.Tensor:
    """How often each of the V^n token maps was drawn."""
    n = tokens[0].numel()
    code = (tokens.flatten(1) * torch.tensor([V ** (n - 1 - j) for j in range(n)])).sum(1)
    return torch.bincount(code, minlength=V ** n).double()


def draw(model, name: str, config, n: int = SAMPLES, batch: int = SAMPLES, seed: int = 0, tokenizer=None):
    sample = sampler_for("raster", name).sample
    g = gen(seed)
    return torch.cat([sample(model, tokenizer, torch.full((min(batch, n - i),), LABEL), config, g)
                      for i in range(0, n, batch)])


def count_passes(model, fn) -> int:
    """Forward passes of ``model`` while ``fn()`` runs (a hook on its first block)."""
    calls = []
    hook = model.layers[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        fn()
    finally:
        hook.remove()
    return len(calls)


def tv(counts: torch.Tensor, p: torch.Tensor) -> float:
    return 0.5 * float((counts / counts.sum() - p).abs().sum())


@pytest.fixture(scope="module")
def floors(toy):
    """Plain sampling's TV to its own exact target with the same sample count, per processor setting."""
    return {}


LOSSLESS = [
    ("sjd", {"window": 4, "coupled": False}),          # the SJD paper's redraw
    ("sjd", {"window": 5, "coupled": True}),
    ("sjd", {"window": 4, "coupled": False, "init": "repeat-left", "cfg": 1.5, "top_k": 2}),
    ("sjd", {"window": 3, "coupled": True, "cfg": 1.0, "cfg_interval": (0.0, 0.5), "temperature": 0.8}),
    ("sjd", {"window": 8, "coupled": True, "top_p": 0.8}),
    ("lantern", {"window": 4, "lantern_delta": 0.0, "lantern_k": 2}),   # delta 0 is SJD
    ("gsd", {"window": 4, "group_ranks": 0}),                           # a group of one is SJD
    ("zipar", {"window": 3}),                              # S = the grid width is raster order
]


@pytest.mark.parametrize("name, kw", LOSSLESS)
def test_lossless_samplers_reproduce_the_exact_joint_distribution(toy, floors, name, kw):
    config = sampler_for("raster", name).config_class(**kw)
    base = RasterSamplerConfig(**{k: v for k, v in kw.items() if k in RasterSamplerConfig.__dataclass_fields__})
    p = exact_probs(toy, base)
    torch.testing.assert_close(p.sum(), torch.tensor(1.0, dtype=torch.float64))
    key = tuple(sorted(base.to_dict().items(), key=str))
    if key not in floors:  # the noise floor: plain sampling, same count
        floors[key] = tv(counts_of(raster_sample(toy, None, torch.full((SAMPLES,), LABEL), base, gen(1))), p)
    counts = counts_of(draw(toy, name, config, tokenizer=Codebook()))
    assert tv(counts, p) < 1.3 * floors[key] + 0.005, (tv(counts, p), floors[key])
    assert chi2_pvalue(counts, p) > 0.01
    # the test has power: the target is far from uniform
    assert 0.5 * float((p - 1 / V ** N).abs().sum()) > 0.2


def test_speculative_decoding_is_exact_at_batch_1():
    """Rows leave the batch as they finish and batch 1 takes its own cache path: the same law holds
    (a 1 x 3 toy, so that 600 one-image calls populate its outcomes)."""
    small = tiny_raster(seed=3, logit_scale=0.6, **dict(TOY, grid=(1, 3)))
    config = SJDSamplerConfig(window=2, coupled=True, cfg=1.0, top_k=2)
    p = exact_probs(small, config)
    counts = counts_of(draw(small, "sjd", config, n=600, batch=1))
    assert chi2_pvalue(counts, p) > 0.01
    assert 0.5 * float((p - 1 / 27).abs().sum()) > 0.2


@pytest.mark.parametrize("name, kw", [
    ("lantern", {"window": 4, "lantern_delta": 0.5, "lantern_k": 1}),
    ("gsd", {"window": 4, "group_ranks": 1, "group_gap": 1.0, "group_dist": 10.0}),
    ("zipar", {"window": 1}),
])
def test_lossy_samplers_fail_the_same_test(toy, name, kw):
    config = sampler_for("raster", name).config_class(**kw)
    assert config.lossy
    p = exact_probs(toy, RasterSamplerConfig())
    counts = counts_of(draw(toy, name, config, tokenizer=Codebook()))
    assert chi2_pvalue(counts, p) < 1e-6
    assert tv(counts, p) > 0.03


def test_speculative_decoding_accepts_several_tokens_per_pass():
    """The point of it: fewer passes than tokens, and coupled redrafting accepts more."""
    model = tiny_raster(seed=3, vocab_size=16, grid=(4, 4))
    passes = {}
    for coupled in (False, True):
        passes[coupled] = count_passes(model, lambda c=coupled: draw(model, "sjd", SJDSamplerConfig(
            window=8, coupled=c), n=100, batch=1)) / 100
    assert passes[True] < passes[False] < 16 / 1.5, passes


def test_greedy_speculative_decoding_equals_greedy_decoding_token_for_token():
    model = tiny_raster(seed=5, vocab_size=64, grid=(4, 4))
    labels = torch.tensor([0, 1, 2, 1])
    want = raster_sample(model, None, labels, RasterSamplerConfig(top_k=1, cfg=1.0), gen(0))
    sjd = sampler_for("raster", "sjd").sample
    for kw in ({}, {"coupled": False, "window": 5}, {"init": "repeat-left", "window": 16}):
        assert torch.equal(sjd(model, None, labels, SJDSamplerConfig(top_k=1, cfg=1.0, **kw), gen(3)), want), kw


def test_known_tokens_are_kept_by_every_raster_sampler():
    model, tok = tiny_raster(seed=2, vocab_size=16), tiny_vq()
    c = model.config
    idx = torch.randint(c.vocab_size, (2, c.seq_len), generator=gen(0))
    mask = torch.zeros(2, c.seq_len, dtype=torch.bool)
    mask[:, :5] = True     # a prefix known in every row (prefilled) and scattered known tokens after it
    mask[:, 9::4] = True
    for s in samplers_of("raster"):
        out = s.sample(model, tok, torch.tensor([0, 1]), s.config_class(), gen(1), known=(idx, mask)).flatten(1)
        assert torch.equal(out[mask], idx[mask]), s.name


def test_zipar_takes_its_closed_form_number_of_passes():
    model = tiny_raster(seed=2, grid=(4, 6))
    zipar = sampler_for("raster", "zipar").sample
    for window, want in ((0, 24), (6, 24), (9, 24), (3, 6 + 3 * 3), (1, 6 + 3)):
        assert zipar_passes((4, 6), window) == want
        assert count_passes(model, lambda w=window: zipar(model, None, torch.tensor([0]), ZipARSamplerConfig(window=w),
                                                          gen(0))) == want, window


def test_zipar_at_the_grid_width_is_raster_decoding_token_for_token():
    model = tiny_raster(seed=2, grid=(3, 4))
    labels = torch.tensor([0, 2, 1])
    want = raster_sample(model, None, labels, RasterSamplerConfig(cfg=1.0, top_k=5), gen(4))
    got = sampler_for("raster", "zipar").sample(model, None, labels, ZipARSamplerConfig(window=4, cfg=1.0, top_k=5),
                                                  gen(4))
    assert torch.equal(got, want)


# ---- the acceptance rules on their own ----------------------------------------------------------------

def test_exact_rule_accepts_with_p_over_q_and_replaces_from_the_residual():
    p = torch.tensor([[[0.5, 0.3, 0.2]]])
    q = torch.tensor([[[0.2, 0.6, 0.2]]])
    rule = Exact()
    torch.testing.assert_close(rule.accept_prob(p, q, torch.tensor([[0]])), torch.tensor([[1.0]]))
    torch.testing.assert_close(rule.accept_prob(p, q, torch.tensor([[1]])), torch.tensor([[0.5]]))
    torch.testing.assert_close(rule.residual(p[:, 0], q[:, 0], torch.tensor([1])), torch.tensor([[0.3, 0.0, 0.0]]))


def test_lantern_borrows_the_nearest_neighbours_mass_up_to_delta():
    nb = nearest_codes(torch.tensor([[0.0], [0.1], [1.0], [1.05]]), k=2)
    assert nb[0].tolist() == [1, 2] and nb[2].tolist() == [3, 1]
    p = torch.tensor([[[0.1, 0.2, 0.3, 0.4]]])
    q = torch.nn.functional.one_hot(torch.tensor([[0]]), 4).float()
    d = torch.tensor([[0]])
    assert float(Relaxed(nb, 0.0).accept_prob(p, q, d)) == pytest.approx(0.1)
    assert float(Relaxed(nb, 0.25).accept_prob(p, q, d)) == pytest.approx(0.3)   # + token 1 (0.2 <= 0.25)
    assert float(Relaxed(nb, 0.6).accept_prob(p, q, d)) == pytest.approx(0.6)    # + tokens 1 and 2
    # a rejection removes the borrowed neighbours from the replacement draw
    torch.testing.assert_close(Relaxed(nb, 0.25).residual(p[:, 0], q[:, 0], d[:, 0]),
                               torch.tensor([[0.0, 0.0, 0.3, 0.4]]))


def test_gsd_groups_look_alike_tokens_near_the_draft():
    emb = torch.tensor([[0.0], [0.1], [5.0], [0.2]])
    p = torch.tensor([[[0.30, 0.25, 0.25, 0.20]]])
    q = torch.nn.functional.one_hot(torch.tensor([[1]]), 4).float()
    d = torch.tensor([[1]])
    assert float(Grouped(emb, 0, 1.0, 1.0).accept_prob(p, q, d)) == pytest.approx(0.25)
    # ranks +-1 around token 1: tokens 0 and 2; token 2's embedding is far, token 0 joins
    assert float(Grouped(emb, 1, 1.0, 1.0).accept_prob(p, q, d)) == pytest.approx(0.55)
    # a tight probability gap keeps token 0 (|0.30 - 0.25| = 0.05) out
    assert float(Grouped(emb, 1, 0.01, 1.0).accept_prob(p, q, d)) == pytest.approx(0.25)


# ---- configuration and errors -------------------------------------------------------------------------

@pytest.mark.parametrize("cls, kw, word", [
    (SJDSamplerConfig, {"window": 0}, "window"),
    (SJDSamplerConfig, {"init": "zeros"}, "init"),
    (SJDSamplerConfig, {"compile": True}, "compile"),
    (LanternSamplerConfig, {"lantern_delta": 1.5}, "lantern_delta"),
    (LanternSamplerConfig, {"lantern_k": 0}, "lantern_k"),
    (GSDSamplerConfig, {"group_ranks": -1}, "group_ranks"),
    (ZipARSamplerConfig, {"window": -2}, "window"),
])
def test_bad_settings_are_one_line_errors(cls, kw, word):
    with pytest.raises(ConfigError, match=word) as e:
        cls(**kw)
    assert "\n" not in str(e.value)


def test_lossy_flags():
    assert not is_lossy(SJDSamplerConfig()) and not is_lossy(RasterSamplerConfig())
    assert LanternSamplerConfig().lossy and not LanternSamplerConfig(lantern_delta=0).lossy
    assert GSDSamplerConfig().lossy and not GSDSamplerConfig(group_ranks=0).lossy
    assert ZipARSamplerConfig(window=2).lossy and not ZipARSamplerConfig().lossy


def test_lantern_needs_a_codebook():
    model = tiny_raster(seed=2)
    with pytest.raises(ArgenError, match="tokenizer"):
        sampler_for("raster", "lantern").sample(model, None, torch.tensor([0]), LanternSamplerConfig(), gen(0))
    tok = tiny_vq(codebook_size=model.config.vocab_size)
    assert tok.code_vectors().shape == (model.config.vocab_size, tok.config.code_dim)


def test_unknown_sampler_names_the_ones_the_family_has():
    with pytest.raises(ArgenError, match="raster, .*sjd.*zipar"):
        sampler_for("raster", "beam")
    with pytest.raises(ArgenError, match="does not sample var models"):
        sampler_for("var", "sjd")
