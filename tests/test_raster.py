"""Tests for the raster next-token generator (argen.generators.raster) and its sampler (argen.sampling.autoregressive)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import random_images, read_layout, tiny_raster, tiny_raster_config, tiny_vq
from reference import raster_uncached

from argen.checkpoint import save_model
from argen.errors import ArgenError, ConfigError
from argen.generators.raster import RasterAR, apply_rope, rope_2d_table
from argen.models import get_preset, load_model
from argen.presets.raster import llamagen_config
from argen.sampling.autoregressive import RasterSamplerConfig, sample
from argen.sampling.guidance import guide
from argen.sampling.processors import apply, build_processors

B = 4
LABELS = torch.tensor([0, 1, 2, 1])
NULL = 3  # num_classes of the tiny config
N = 16    # tokens of the tiny 4x4 grid
LAYOUT = Path(__file__).resolve().parent / "data" / "layouts" / "llamagen-gpt-b.tsv"


@pytest.fixture
def model():
    return tiny_raster()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_idx(batch: int = B, n: int = N, vocab: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(vocab, (batch, n), generator=gen(seed))


def cached_logits(model, idx_BN, labels_B, step=None) -> torch.Tensor:
    """Teacher-force ``idx_BN`` through prefill + one decode step per token: (B, N, V)."""
    caches = model.new_caches(labels_B.shape[0])
    step = step or model.decode_step
    out = [model(labels_B.new_empty(labels_B.shape[0], 0), labels_B, caches=caches)]  # the prefill
    cls = model.config.cls_token_num
    for i in range(idx_BN.shape[1] - 1):
        out.append(step(idx_BN[:, i:i + 1], torch.tensor([cls + i]), caches))
    return torch.cat(out, 1)


# ------------------------------------------------------------------------------------ forward


def test_logits_shape_and_the_model_is_not_near_identity(model):
    idx = random_idx()
    logits = model(idx, LABELS)
    assert logits.shape == (B, N, 16) and logits.dtype == torch.float32
    # The randomised tiny model reacts to the label at every position and to the tokens: else equality tests are weak.
    other = model(idx, torch.tensor([1, 2, 0, 0]))
    assert (logits - other).abs().mean(dim=(0, 2)).min() > 0.05
    assert (model(random_idx(seed=1), LABELS)[:, 1:] - logits[:, 1:]).abs().mean() > 0.1


def test_a_prefix_gives_the_same_logits_plus_the_next_tokens(model):
    idx = random_idx()
    full = model(idx, LABELS)
    for n in (0, 1, 5, N - 1, N):
        part = model(idx[:, :n], LABELS)
        assert part.shape == (B, min(n + 1, N), 16)
        torch.testing.assert_close(part, full[:, :min(n + 1, N)], atol=1e-5, rtol=0)


def test_causal_mask_a_token_only_changes_later_logits(model):
    idx = random_idx()
    base = model(idx, LABELS)
    for j in (0, 6, N - 2):
        idx2 = idx.clone()
        idx2[:, j] = (idx2[:, j] + 1) % 16
        out = model(idx2, LABELS)
        torch.testing.assert_close(out[:, :j + 1], base[:, :j + 1], atol=1e-6, rtol=0)
        assert (out[:, j + 1:] - base[:, j + 1:]).abs().amax(dim=(0, 2)).min() > 1e-4
    # The last token is never read: nothing follows it.
    idx3 = idx.clone()
    idx3[:, -1] = (idx3[:, -1] + 1) % 16
    assert torch.equal(model(idx3, LABELS), base)


@pytest.mark.parametrize("overrides", [{}, {"kv_heads": 1}, {"zero_rope_at_cond": False}, {"cls_token_num": 3},
                                       {"grid": (2, 5)}])
@pytest.mark.parametrize("cfg", [False, True])
def test_kv_cached_decoding_equals_the_full_forward(overrides, cfg):
    model = tiny_raster(**overrides)
    n = model.config.seq_len
    idx, labels = random_idx(n=n), LABELS
    if cfg:  # the sampler's doubled batch: [cond; uncond] with the same tokens
        idx, labels = torch.cat([idx, idx]), torch.cat([labels, torch.full_like(labels, NULL)])
    with torch.inference_mode():
        full = model(idx, labels)
        torch.testing.assert_close(cached_logits(model, idx, labels), full, atol=1e-5, rtol=0)


def test_prefill_of_a_known_prefix_then_decode_equals_the_full_forward(model):
    idx = random_idx()
    full = model(idx, LABELS)
    caches = model.new_caches(B)
    n0, cls = 5, model.config.cls_token_num
    out = [model(idx[:, :n0], LABELS, caches=caches)]  # logits of tokens 0..n0
    for i in range(n0, N - 1):
        out.append(model.decode_step(idx[:, i:i + 1], torch.tensor([cls + i]), caches))
    torch.testing.assert_close(torch.cat(out, 1), full, atol=1e-5, rtol=0)


def test_batched_logits_equal_unbatched_logits(model):
    """What batching guarantees: each row's logits (full and cached) do not depend on the other rows."""
    idx = random_idx()
    full, cached = model(idx, LABELS), cached_logits(model, idx, LABELS)
    for i in range(B):
        torch.testing.assert_close(model(idx[i:i + 1], LABELS[i:i + 1]), full[i:i + 1], atol=1e-5, rtol=0)
        torch.testing.assert_close(cached_logits(model, idx[i:i + 1], LABELS[i:i + 1]), cached[i:i + 1],
                                   atol=1e-5, rtol=0)


def test_grouped_query_attention_equals_multi_head_with_repeated_kv_heads():
    gqa = tiny_raster(heads=4, kv_heads=2, width=32)
    mha = tiny_raster(heads=4, width=32)
    mha.load_state_dict({k: v for k, v in gqa.state_dict().items() if "wqkv" not in k}, strict=False)
    D, H = 8, 4
    with torch.no_grad():
        for a, b in zip(gqa.layers, mha.layers):
            q, k, v = a.attention.wqkv.weight.split([H * D, 2 * D, 2 * D])
            # kv head g serves query heads 2g and 2g+1 (repeat_interleave, as LlamaGen)
            rep = [t.view(2, D, -1).repeat_interleave(2, 0).reshape(H * D, -1) for t in (k, v)]
            b.attention.wqkv.weight.copy_(torch.cat([q, *rep]))
    idx = random_idx()
    torch.testing.assert_close(gqa(idx, LABELS), mha(idx, LABELS), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------ 2D RoPE


def test_rope_table_rotates_the_first_quarter_by_row_and_the_second_by_column():
    c = tiny_raster_config(grid=(2, 3), width=16, heads=2)  # head dim 8: 2 row pairs, 2 column pairs
    table = rope_2d_table(c)
    assert table.shape == (1 + 6, 4, 2)
    freqs = torch.tensor([1.0, 10000.0 ** -0.5])
    for r in range(2):
        for col in range(3):
            angles = torch.cat([r * freqs, col * freqs])
            row = table[1 + r * 3 + col]
            torch.testing.assert_close(row, torch.stack([angles.cos(), angles.sin()], -1))
    assert torch.equal(table[0], torch.zeros(4, 2))  # LlamaGen: cos = sin = 0 at the class position
    no_zero = rope_2d_table(tiny_raster_config(grid=(2, 3), width=16, heads=2, zero_rope_at_cond=False))
    assert torch.equal(no_zero[0], torch.tensor([[1.0, 0.0]] * 4)) and torch.equal(no_zero[1:], table[1:])


def test_rope_scores_depend_only_on_the_row_and_column_offsets():
    c = tiny_raster_config(grid=(8, 8), width=32, heads=2)  # head dim 16
    table = rope_2d_table(c)[1:].view(8, 8, 8, 2)
    g = gen(0)
    q, k = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)

    def score(pq, pk):
        return (apply_rope(q, table[pq].unsqueeze(0)) * apply_rope(k, table[pk].unsqueeze(0))).sum()

    for (r1, c1), (r2, c2), (dr, dc) in [((0, 0), (2, 3), (1, 1)), ((5, 1), (1, 6), (2, 0)),
                                         ((3, 3), (3, 0), (-3, 4)), ((7, 7), (0, 7), (0, -7))]:
        torch.testing.assert_close(score((r1, c1), (r2, c2)), score((r1 + dr, c1 + dc), (r2 + dr, c2 + dc)),
                                   atol=1e-5, rtol=1e-5)
    # Both axes matter: moving only the key's row, or only its column, changes the score.
    s = score((2, 2), (2, 2))
    assert (score((2, 2), (3, 2)) - s).abs() > 1e-3 and (score((2, 2), (2, 3)) - s).abs() > 1e-3
    # A rotation keeps norms.
    torch.testing.assert_close(apply_rope(q, table[4, 5].unsqueeze(0)).norm(), q.norm())


def test_zero_rope_zeroes_the_class_positions_query_and_key():
    x = torch.randn(2, 3, 2, 8)
    table = rope_2d_table(tiny_raster_config(cls_token_num=2, width=16, heads=2))[:3]
    out = apply_rope(x, table)
    assert torch.equal(out[:, :2], torch.zeros_like(out[:, :2])) and out[:, 2].abs().sum() > 0


# ------------------------------------------------------------------------------------ compile


def test_compiled_decode_step_equals_eager_with_one_graph_for_every_position(model):
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()  # runs the captured graph eagerly and counts compilations
    step = torch.compile(model.decode_step, fullgraph=True, backend=counter)
    idx = random_idx()
    with torch.inference_mode():
        compiled = cached_logits(model, idx, LABELS, step)
        again = cached_logits(model, idx, LABELS, step)  # fresh caches: still no recompile
        eager = cached_logits(model, idx, LABELS)
    assert counter.frame_count == 1
    torch.testing.assert_close(compiled, eager, atol=1e-6, rtol=0)
    assert torch.equal(again, compiled)


@pytest.mark.parametrize("kw", [{}, {"cfg": 1.5, "top_k": 5}])
def test_compiled_sampler_equals_eager(model, kw):
    eager = sample(model, None, LABELS, RasterSamplerConfig(**kw), gen(3))
    compiled = sample(model, None, LABELS, RasterSamplerConfig(compile=True, compile_backend="eager", **kw), gen(3))
    assert torch.equal(compiled, eager)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("ARGEN_TEST_INDUCTOR"),
                    reason="inductor compiles C++ for ~45 s on a 2-core CPU: set ARGEN_TEST_INDUCTOR=1")
def test_inductor_compiled_sampler_equals_eager(model):
    torch._dynamo.reset()
    cfg = RasterSamplerConfig(cfg=1.0)
    eager = sample(model, None, LABELS, cfg, gen(3))
    assert torch.equal(sample(model, None, LABELS, cfg.replace(compile=True), gen(3)), eager)


# ------------------------------------------------------------------------------------ sampler


SAMPLER_CONFIGS = [
    {},
    {"top_k": 5},
    {"top_p": 0.8, "temperature": 0.7},
    {"cfg": 2.0},
    {"cfg": 1.5, "cfg_interval": (0.25, 0.75), "top_k": 4, "top_p": 0.9},
]


@pytest.mark.parametrize("kw", SAMPLER_CONFIGS)
def test_cached_and_uncached_sampling_agree(model, kw):
    a = sample(model, None, LABELS, RasterSamplerConfig(**kw), gen(7))
    b = raster_uncached(model, LABELS, RasterSamplerConfig(**kw), gen(7))
    assert a.shape == (B, 4, 4) and a.dtype == torch.long
    assert torch.equal(a, b)


def reference_greedy(model, labels, w: float = 0.0, interval=(0.0, 1.0)) -> torch.Tensor:
    """Greedy raster decoding with the teacher-forced forward only (no cache, no sampler code)."""
    out = torch.zeros(labels.shape[0], 0, dtype=torch.long)
    for i in range(N):
        logits = model(out, labels)[:, -1]
        if w > 0 and interval[0] <= i / N < interval[1]:
            uncond = model(out, torch.full_like(labels, NULL))[:, -1]
            logits = logits + w * (logits - uncond)
        out = torch.cat([out, logits.argmax(-1, keepdim=True)], 1)
    return out.view(-1, 4, 4)


@pytest.mark.parametrize("w, interval", [(0.0, (0.0, 1.0)), (3.0, (0.0, 1.0)), (3.0, (0.0, 0.5)), (3.0, (0.5, 1.0))])
def test_greedy_sampling_matches_a_teacher_forced_reference(model, w, interval):
    cfg = RasterSamplerConfig(top_k=1, cfg=w, cfg_interval=interval)
    assert torch.equal(sample(model, None, LABELS, cfg, gen(0)), reference_greedy(model, LABELS, w, interval))


def test_cfg_weight_and_interval_change_the_result(model):
    """Guards the test above: guidance and its interval must matter for this model, or it would prove nothing."""
    plain = reference_greedy(model, LABELS)
    full = reference_greedy(model, LABELS, 3.0)
    first_half = reference_greedy(model, LABELS, 3.0, (0.0, 0.5))
    assert not torch.equal(plain, full) and not torch.equal(full, first_half)
    assert not torch.equal(plain, first_half)


def test_cfg_interval_semantics():
    cfg = RasterSamplerConfig(cfg=2.0, cfg_interval=(0.25, 0.5))
    assert [cfg.weight(i / 8) for i in range(8)] == [0, 0, 2.0, 2.0, 0, 0, 0, 0]
    assert all(RasterSamplerConfig(cfg=1.0).weight(i / 8) == 1.0 for i in range(8))


@pytest.mark.parametrize("kw", [{"top_k": 1}, {"top_k": 1, "cfg": 3.0}])
def test_batched_equals_unbatched_greedy(model, kw):
    """Greedy decoding is batch-independent. Stochastic draws are not: a row's noise depends on its place
    in the batch (one generator feeds the whole batch), so only greedy rows can be compared."""
    cfg = RasterSamplerConfig(**kw)
    batched = sample(model, None, LABELS, cfg, gen(0))
    for i in range(B):
        assert torch.equal(sample(model, None, LABELS[i:i + 1], cfg, gen(0))[0], batched[i]), i


@pytest.mark.parametrize("kw", [{}, {"cfg": 2.0, "top_p": 0.9}])
def test_same_seed_same_tokens_different_seed_different(model, kw):
    cfg = RasterSamplerConfig(**kw)
    a, b, c = (sample(model, None, LABELS, cfg, gen(s)) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sampling_does_not_change_the_model(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sample(model, None, LABELS, RasterSamplerConfig(cfg=1.0, top_k=3), gen(0))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and not model.training


# ------------------------------------------------------------------------------------ known tokens


@pytest.mark.parametrize("kw", [{}, {"cfg": 2.0, "top_k": 3}])
def test_known_tokens_are_never_changed(model, kw):
    g = gen(5)
    idx, mask = torch.randint(16, (B, N), generator=g), torch.rand(B, N, generator=g) < 0.4
    out = sample(model, None, LABELS, RasterSamplerConfig(**kw), gen(1), known=(idx, mask)).flatten(1)
    assert torch.equal(out[mask], idx[mask])
    assert not torch.equal(out[~mask], idx[~mask])  # the rest is sampled, not copied
    ref = raster_uncached(model, LABELS, RasterSamplerConfig(**kw), gen(1), known=(idx.view(B, 4, 4), mask.view(B, 4, 4)))
    assert torch.equal(out.view(B, 4, 4), ref)


def test_completion_from_the_top_rows_prefills_the_prefix_in_one_call(model, monkeypatch):
    idx = random_idx(seed=3)
    mask = torch.zeros(B, N, dtype=torch.bool)
    mask[:, :6] = True       # rows 0 and 1 known everywhere, plus part of row 2 in one image
    mask[0, 6:9] = True
    calls = []
    step = model.decode_step
    monkeypatch.setattr(model, "decode_step", lambda *a: calls.append(a[1].clone()) or step(*a))
    cfg = RasterSamplerConfig(cfg=1.0)
    out = sample(model, None, LABELS, cfg, gen(2), known=(idx, mask)).flatten(1)
    assert torch.equal(out[:, :6], idx[:, :6]) and torch.equal(out[0, 6:9], idx[0, 6:9])
    # Tokens 0..5 go in with the prefill; one decode step per later token but the last.
    assert [int(p) for p in calls] == list(range(1 + 6, 1 + N - 1))
    monkeypatch.undo()
    assert torch.equal(out, raster_uncached(model, LABELS, cfg, gen(2), known=(idx, mask)).flatten(1))
    assert torch.equal(sample(model, None, LABELS, cfg, gen(2), known=(idx, torch.ones_like(mask))).flatten(1), idx)


# ------------------------------------------------------------------------------------ exact distributions


TOY = {"vocab_size": 3, "grid": (1, 3), "num_classes": 2, "width": 16, "heads": 2}
TOY_NULL, TOY_N, TOY_V, SAMPLES = 2, 3, 3, 20_000


@pytest.fixture(scope="module")
def toy():
    return tiny_raster(seed=1, logit_scale=0.5, **TOY)  # moderate logits: every bin populated


@torch.no_grad()
def exact_log_probs(model, label: int, cfg: RasterSamplerConfig, known=None) -> torch.Tensor:
    """log P(sequence) of the sampler's target for all V^N sequences, from teacher-forced logits:
    guidance, temperature, top-k and top-p applied to each exact conditional; known tokens forced."""
    seqs = torch.cartesian_prod(*[torch.arange(TOY_V)] * TOY_N)  # (V^N, N), first token most significant
    S = seqs.shape[0]
    cond = model(seqs, torch.full((S,), label))
    uncond = model(seqs, torch.full((S,), TOY_NULL))
    procs = build_processors(cfg.temperature, cfg.top_k, cfg.top_p)
    total = torch.zeros(S, dtype=torch.float64)
    for i in range(TOY_N):
        w = cfg.weight(i / TOY_N)
        logits = guide(torch.cat([cond[:, i], uncond[:, i]]).double(), w) if w > 0 else cond[:, i].double()
        logp = apply(logits, procs).log_softmax(-1)
        logp_i = logp.gather(1, seqs[:, i:i + 1]).squeeze(1)
        if known is not None and known[1][i]:
            logp_i = torch.where(seqs[:, i] == known[0][i], 0.0, float("-inf"))
        total += logp_i
    return total


@pytest.mark.parametrize("kw, known", [
    ({}, None),
    ({"top_k": 2}, None),
    ({"top_p": 0.7}, None),
    ({"cfg": 1.0, "temperature": 0.9}, None),
    ({"cfg": 2.0, "cfg_interval": (0.0, 0.5), "top_k": 2}, None),
    ({}, ([2, 0, 0], [True, False, False])),   # completion of a known first token: P(x1, x2 | x0 = 2)
    ({}, ([0, 1, 0], [False, True, False])),   # a forced middle token: P(x0) P(x2 | x0, x1 = 1)
])
def test_sampler_matches_the_exact_joint_distribution(toy, kw, known):
    chisquare = pytest.importorskip("scipy.stats").chisquare

    cfg = RasterSamplerConfig(**kw)
    label = 1
    p = exact_log_probs(toy, label, cfg, known).exp()
    torch.testing.assert_close(p.sum(), torch.tensor(1.0, dtype=torch.float64))
    k = None
    if known is not None:
        k = (torch.tensor(known[0]).expand(SAMPLES, -1), torch.tensor(known[1]).expand(SAMPLES, -1))
    out = sample(toy, None, torch.full((SAMPLES,), label), cfg, gen(11), known=k).flatten(1)
    code = (out * torch.tensor([TOY_V ** (TOY_N - 1 - j) for j in range(TOY_N)])).sum(1)
    counts = torch.bincount(code, minlength=TOY_V ** TOY_N).double()
    support = p > 0
    assert counts[~support].sum() == 0  # never a sequence the processors rule out
    tv = 0.5 * (counts / SAMPLES - p).abs().sum()
    assert tv < 0.025, tv
    expected = p[support].double() / p[support].double().sum() * SAMPLES
    assert expected.min() > 5  # chi-square needs populated bins
    assert chisquare(counts[support].numpy(), expected.numpy()).pvalue > 0.01
    # The test has power: the target is far from uniform over its support.
    assert 0.5 * (p[support] - 1 / int(support.sum())).abs().sum() > 0.1


def test_the_processed_targets_differ_from_the_plain_model(toy):
    """Guards the distribution test: top-k, top-p and CFG change the toy model's joint distribution."""
    plain = exact_log_probs(toy, 1, RasterSamplerConfig()).exp()
    for kw in ({"top_k": 2}, {"top_p": 0.7}, {"cfg": 1.5}):
        other = exact_log_probs(toy, 1, RasterSamplerConfig(**kw)).exp()
        assert 0.5 * (plain - other).abs().sum() > 0.05, kw
    assert (exact_log_probs(toy, 1, RasterSamplerConfig(top_k=2)) == float("-inf")).sum() >= 9


# ------------------------------------------------------------------------------------ errors


def test_sampler_settings_saved_with_use_cache_still_load():
    # use_cache was removed (the uncached reference lives in tests/reference.py): True loads, False is refused
    assert RasterSamplerConfig.from_dict({"use_cache": True, "cfg": 1.0}) == RasterSamplerConfig(cfg=1.0)
    with pytest.raises(ConfigError, match="'use_cache' was removed; only use_cache=True is left"):
        RasterSamplerConfig.from_dict({"use_cache": False})


def test_sampler_config_validation():
    for bad in ({"temperature": 0.0}, {"top_k": -1}, {"top_p": 0.0}, {"top_p": 1.5}, {"cfg": -1.0},
                {"cfg_interval": (0.5, 0.2)}, {"cfg_interval": (0.0, 1.5)}, {"cfg_interval": (0.0,)},
                {"compile_backend": ""}):
        with pytest.raises(ConfigError):
            RasterSamplerConfig(**bad)


def test_bad_sampler_inputs_get_one_line_errors(model):
    tok = tiny_vq(codebook_size=32)
    cases = [
        dict(labels_B=torch.tensor([0, 4])),                                  # 4 > num_classes
        dict(labels_B=torch.tensor([0.0, 1.0])),
        dict(labels_B=LABELS, tokenizer=tok),                                 # 32 codes vs vocab 16
        dict(labels_B=LABELS, known=(random_idx(n=N - 1), torch.ones(B, N - 1, dtype=torch.bool))),
        dict(labels_B=LABELS, known=(random_idx(), torch.ones(B, N))),         # mask not bool
        dict(labels_B=LABELS, known=(random_idx() + 16, torch.ones(B, N, dtype=torch.bool))),
    ]
    for case in cases:
        with pytest.raises(ArgenError) as e:
            sample(model, case.get("tokenizer"), case["labels_B"], RasterSamplerConfig(), gen(0), case.get("known"))
        assert "\n" not in str(e.value)
    assert sample(model, tiny_vq(), LABELS, RasterSamplerConfig(), gen(0)).shape == (B, 4, 4)


def test_config_validation():
    for bad in ({"width": 30, "heads": 4}, {"width": 24, "heads": 4}, {"grid": (0, 4)}, {"grid": (4,)},
                {"kv_heads": 3, "heads": 2}, {"depth": 0}, {"label_drop": 1.0},
                {"drop_path_rate": -0.1}, {"cls_token_num": 0}, {"ffn_dim_multiplier": 0.0}):
        with pytest.raises(ConfigError) as e:
            tiny_raster_config(**bad)
        assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------ training


def test_loss_is_cross_entropy_of_the_teacher_forced_forward():
    tok, model = tiny_vq(), tiny_raster().train()
    images = random_images(B)
    tokens = RasterAR.tokens_from_images(tok, images)
    assert tokens["idx_BN"].shape == (B, N) and torch.equal(tokens["idx_BN"], tok.encode(images).flatten(1))
    loss, metrics = model.loss(tokens, LABELS)
    ref = F.cross_entropy(model(tokens["idx_BN"], LABELS).flatten(0, 1), tokens["idx_BN"].flatten())
    torch.testing.assert_close(loss, ref)
    assert math.isfinite(metrics["ce"]) and 0.0 <= metrics["acc"] <= 1.0


def test_loss_backward_reaches_every_parameter():
    """DDP without find_unused_parameters needs a gradient for every trainable parameter."""
    model = tiny_raster(token_dropout_p=0.1, resid_dropout_p=0.1, ffn_dropout_p=0.1, drop_path_rate=0.1,
                        label_drop=0.5).train()
    torch.manual_seed(0)
    idx = random_idx(batch=16)
    loss, _ = model.loss({"idx_BN": idx}, torch.arange(16) % 3)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == [] and all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_class_dropout_replaces_labels_with_the_null_class_in_training_only(monkeypatch):
    model = tiny_raster(label_drop=0.5).train()
    seen = []
    embed = model.cls_embedding.forward
    monkeypatch.setattr(model.cls_embedding, "forward", lambda labels: seen.append(labels) or embed(labels))
    labels = torch.arange(64) % 3
    torch.manual_seed(0)
    model.loss({"idx_BN": random_idx(batch=64)}, labels)
    dropped = seen[-1] == NULL
    assert 10 < int(dropped.sum()) < 54 and torch.equal(seen[-1][~dropped], labels[~dropped])
    model.eval()
    model.loss({"idx_BN": random_idx(batch=64)}, labels)
    assert torch.equal(seen[-1], labels)


def test_output_head_starts_at_zero_as_llamagen():
    model = RasterAR(tiny_raster_config())
    assert torch.equal(model.output.weight, torch.zeros_like(model.output.weight))
    std = model.layers[0].attention.wqkv.weight.std()
    assert 0.015 < std < 0.025  # N(0, initializer_range)


@pytest.mark.parametrize("preset, tokenizer", [("raster-digits", "vq-digits"), ("raster-fmnist", "vq-fmnist")])
def test_presets_fit_their_tokenizers_and_train_one_step(preset, tokenizer):
    p, t = get_preset(preset, "generator"), get_preset(tokenizer, "tokenizer")
    config, tok_config = p.make_config(), t.make_config()
    assert config.grid == tok_config.grid and config.vocab_size == tok_config.codebook_size
    assert {"steps", "batch_size", "lr", "warmup", "ema", "weight_decay"} <= set(p.train)
    model = RasterAR(config).train()
    idx = torch.randint(config.vocab_size, (2, config.seq_len))
    loss, _ = model.loss({"idx_BN": idx}, torch.tensor([0, 1]))
    torch.testing.assert_close(loss, torch.tensor(math.log(config.vocab_size)))  # zero head: uniform logits


# ------------------------------------------------------------------------------------ official layout


@pytest.mark.skipif(not LAYOUT.is_file(), reason=f"official layout {LAYOUT} not available")
def test_gpt_b_matches_the_official_layout():
    with torch.device("meta"):
        model = RasterAR(llamagen_config("B"))
    official = read_layout(LAYOUT)
    expected_count = sum(math.prod(shape) for shape, _ in official.values())
    assert expected_count == 110_888_448
    sd = model.state_dict()
    assert set(sd) == set(official)
    wrong = {k: (tuple(v.shape), official[k][0]) for k, v in sd.items() if tuple(v.shape) != official[k][0]}
    assert wrong == {}
    assert all(str(v.dtype) == official[k][1] for k, v in sd.items())
    assert sum(p.numel() for p in model.parameters()) == expected_count
    # Derived tables stay out of the state dict (old official checkpoints may carry `freqs_cis`).
    assert tuple(model.freqs_cis.shape) == (1 + 256, 32, 2) and "freqs_cis" not in sd


@pytest.mark.parametrize("size, ffn, params_m", [("B", 2048, 110.9), ("L", 2816, 342.9), ("XL", 3584, 774.7),
                                                 ("XXL", 4096, 1411), ("3B", 8704, 3097)])
def test_official_sizes_have_the_published_widths_and_parameter_counts(size, ffn, params_m):
    c = llamagen_config(size)
    assert c.ffn_hidden == ffn
    with torch.device("meta"):
        model = RasterAR(c)
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(count - params_m) < 0.6, count


# ------------------------------------------------------------------------------------ checkpoints


def test_checkpoint_round_trip_gives_identical_weights_and_samples(model, tmp_path):
    save_model(tmp_path / "raster", model)
    loaded = load_model(tmp_path / "raster")
    assert isinstance(loaded, RasterAR) and loaded.config == model.config and not loaded.training
    a, b = model.state_dict(), loaded.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    cfg = RasterSamplerConfig(cfg=1.5, top_k=8)
    assert torch.equal(sample(model, None, LABELS, cfg, gen(3)), sample(loaded, None, LABELS, cfg, gen(3)))
