"""Tests for the VAR generator (argen.generators.var) and its next-scale sampler."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import random_images, random_scales, read_layout, tiny_msvq, tiny_var, tiny_var_config
from reference import var_uncached

from argen.checkpoint import save_model
from argen.generators.var import VAR
from argen.models import load_model
from argen.presets.var import var_official
from argen.sampling.guidance import guide
from argen.sampling.next_scale import VARSamplerConfig, sample

B = 4
LABELS = torch.tensor([0, 1, 2, 1])
NULL = 3  # num_classes of the tiny config
LAYOUT = Path(__file__).resolve().parent / "data" / "layouts" / "var-d16.tsv"
NOT_IN_STATE_DICT = ("lvl_1L", "attn_bias_for_masking", "zero_k_bias")  # argen keeps them non-persistent


@pytest.fixture(scope="module")
def tok():
    return tiny_msvq()


@pytest.fixture
def model():
    return tiny_var()


def tf_inputs(tok, seed=0):
    idx = random_scales(B, seed=seed)
    return idx, tok.teacher_forcing_input(idx)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------ forward


def test_logits_shape_and_the_model_is_not_near_identity(model, tok):
    _, x = tf_inputs(tok)
    logits = model(LABELS, x)
    assert logits.shape == (B, 21, 16)
    # The randomised tiny model reacts to its condition and inputs: otherwise equality tests are weak.
    other_labels = model(torch.tensor([1, 2, 0, 0]), x)
    assert (logits - other_labels).abs().mean() > 0.1
    _, x2 = tf_inputs(tok, seed=1)
    assert (model(LABELS, x2)[:, 1:] - logits[:, 1:]).abs().mean() > 0.1


def test_teacher_forced_logits_equal_kv_cached_scale_by_scale(model, tok):
    _, x = tf_inputs(tok)
    full = model(LABELS, x)
    cond = model.cond_embed(LABELS)
    caches = model.new_caches(B)
    first_l = model.first_l
    for si, (b, e) in enumerate(model.config.begin_ends):
        inp = model.first_input(cond) if si == 0 else model.embed_input(x[:, b - first_l:e - first_l], si)
        step = model.trunk(inp, cond, b, caches)
        assert step.shape == (B, e - b, 16)
        torch.testing.assert_close(step, full[:, b:e], atol=1e-5, rtol=0)


def test_block_causal_mask(model, tok):
    _, x = tf_inputs(tok)
    bounds = model.config.begin_ends  # [(0, 1), (1, 5), (5, 21)]
    first_l = model.first_l
    base = model(LABELS, x)
    # Changing the last scale's inputs leaves scales 0 and 1 alone but changes scale 2.
    x2 = x.clone()
    x2[:, bounds[2][0] - first_l:] += 1.0
    out = model(LABELS, x2)
    torch.testing.assert_close(out[:, :bounds[2][0]], base[:, :bounds[2][0]], atol=1e-6, rtol=0)
    assert (out[:, bounds[2][0]:] - base[:, bounds[2][0]:]).abs().max() > 1e-2
    # Changing scale 1's inputs leaves scale 0 alone and changes scales 1 and 2.
    x3 = x.clone()
    x3[:, :bounds[1][1] - first_l] += 1.0
    out = model(LABELS, x3)
    torch.testing.assert_close(out[:, :1], base[:, :1], atol=1e-6, rtol=0)
    for b, e in bounds[1:]:
        assert (out[:, b:e] - base[:, b:e]).abs().max() > 1e-2
    # And a token of scale 2 sees every token of its own scale (not causal inside a scale).
    x4 = x.clone()
    x4[:, -1] += 1.0
    out = model(LABELS, x4)
    assert (out[:, bounds[2][0]] - base[:, bounds[2][0]]).abs().max() > 1e-4


def test_changing_an_earlier_scale_token_changes_later_logits_only(model, tok):
    idx, x = tf_inputs(tok)
    base = model(LABELS, x)
    changed = [(idx[0] + 1) % 16, idx[1], idx[2]]
    out = model(LABELS, tok.teacher_forcing_input(changed))
    torch.testing.assert_close(out[:, :1], base[:, :1], atol=1e-6, rtol=0)
    assert (out[:, 1:] - base[:, 1:]).abs().max() > 1e-2


# ------------------------------------------------------------------------------------ sampler


SAMPLER_CONFIGS = [
    {},
    {"top_k": 5},
    {"top_p": 0.8, "temperature": 0.7},
    {"cfg": 2.0},
    {"cfg": 1.5, "cfg_schedule": "constant", "top_k": 4, "top_p": 0.9},
]


@pytest.mark.parametrize("kw", SAMPLER_CONFIGS)
def test_cached_and_uncached_sampling_agree(model, tok, kw):
    a = sample(model, tok, LABELS, VARSamplerConfig(**kw), gen(7))
    b = var_uncached(model, tok, LABELS, VARSamplerConfig(**kw), gen(7))
    assert [tuple(t.shape) for t in a] == [(B, 1, 1), (B, 2, 2), (B, 4, 4)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("kw", [{}, {"cfg": 2.0, "top_p": 0.9}])
def test_same_seed_same_tokens_different_seed_different(model, tok, kw):
    cfg = VARSamplerConfig(**kw)
    a = sample(model, tok, LABELS, cfg, gen(1))
    b = sample(model, tok, LABELS, cfg, gen(1))
    c = sample(model, tok, LABELS, cfg, gen(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_sampling_respects_top_k(model, tok):
    # With top_k=1 the draw is the argmax whatever the seed.
    cfg = VARSamplerConfig(top_k=1)
    a = sample(model, tok, LABELS, cfg, gen(1))
    b = sample(model, tok, LABELS, cfg, gen(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("kw", [{"top_k": 1}, {"top_k": 1, "cfg": 3.0}])
def test_batched_equals_unbatched_greedy(model, tok, kw):
    cfg = VARSamplerConfig(**kw)
    batched = sample(model, tok, LABELS, cfg, gen(0))
    for i in range(B):
        alone = sample(model, tok, LABELS[i:i + 1], cfg, gen(0))
        for si in range(3):
            assert torch.equal(alone[si][0], batched[si][i]), (i, si)


def reference_greedy(model, tok, labels, w: float, schedule: str = "linear") -> list[torch.Tensor]:
    """Greedy next-scale decoding with the teacher-forced forward only (no cache, no sampler code)."""
    K = len(model.config.scales)
    n = labels.shape[0]
    out: list[torch.Tensor] = []
    for si, pn in enumerate(model.config.scales):
        padded = out + [torch.zeros(n, p, p, dtype=torch.long) for p in model.config.scales[si:]]
        x = tok.teacher_forcing_input(padded)
        b, e = model.config.begin_ends[si]
        cond = model(labels, x)[:, b:e]
        if w > 0:
            uncond = model(torch.full_like(labels, NULL), x)[:, b:e]
            wk = w * (si / (K - 1) if schedule == "linear" else 1.0)
            cond = cond + wk * (cond - uncond)
        out.append(cond.argmax(-1).view(n, pn, pn))
    return out


@pytest.mark.parametrize("w, schedule", [(0.0, "linear"), (2.0, "linear"), (2.0, "constant")])
def test_greedy_sampling_matches_a_teacher_forced_reference(model, tok, w, schedule):
    cfg = VARSamplerConfig(top_k=1, cfg=w, cfg_schedule=schedule)
    got = sample(model, tok, LABELS, cfg, gen(0))
    ref = reference_greedy(model, tok, LABELS, w, schedule)
    assert all(torch.equal(a, b) for a, b in zip(got, ref))


def test_cfg_weight_changes_the_result(model, tok):
    """Guards the test above: guidance must matter for this model, or it would prove nothing."""
    plain = reference_greedy(model, tok, LABELS, 0.0)
    guided = reference_greedy(model, tok, LABELS, 4.0, "constant")
    assert not all(torch.equal(a, b) for a, b in zip(plain, guided))
    # The constant schedule guides the first scale; the linear one starts at w = 0 there.
    _, x = tf_inputs(tok)
    cond, uncond = model(LABELS, x)[:, 0], model(torch.full_like(LABELS, NULL), x)[:, 0]
    assert torch.equal(guided[0].flatten(), guide(torch.cat([cond, uncond]), 4.0).argmax(-1))


class Spy:
    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args, **kwargs):
        self.calls.append(args)
        return self.fn(*args, **kwargs)


def test_cfg_off_never_uses_the_null_class_and_keeps_the_batch(model, tok, monkeypatch):
    embed, trunk = Spy(model.cond_embed), Spy(model.trunk)
    monkeypatch.setattr(model, "cond_embed", embed)
    monkeypatch.setattr(model, "trunk", trunk)
    sample(model, tok, LABELS, VARSamplerConfig(cfg=0.0), gen(0))
    seen = torch.cat([c[0] for c in embed.calls])
    assert len(embed.calls) >= 1 and not (seen == NULL).any()
    assert len(trunk.calls) == 3 and all(c[0].shape[0] == B and c[1].shape[0] == B for c in trunk.calls)


def test_cfg_on_doubles_the_batch_with_null_labels_second(model, tok, monkeypatch):
    embed, trunk = Spy(model.cond_embed), Spy(model.trunk)
    monkeypatch.setattr(model, "cond_embed", embed)
    monkeypatch.setattr(model, "trunk", trunk)
    out = sample(model, tok, LABELS, VARSamplerConfig(cfg=1.0), gen(0))
    labels = torch.cat([c[0] for c in embed.calls])
    assert torch.equal(labels, torch.cat([LABELS, torch.full_like(LABELS, NULL)]))
    assert len(trunk.calls) == 3
    assert all(c[0].shape[0] == 2 * B and c[1].shape[0] == 2 * B for c in trunk.calls)
    assert all(t.shape[0] == B for t in out)


def test_sampling_does_not_change_the_model(model, tok):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sample(model, tok, LABELS, VARSamplerConfig(cfg=1.0, top_k=3), gen(0))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training


def test_sampler_config_validation():
    from argen.errors import ConfigError

    for bad in ({"temperature": 0.0}, {"top_k": -1}, {"top_p": 0.0}, {"top_p": 1.5}, {"cfg": -1.0},
                {"cfg_schedule": "cosine"}):
        with pytest.raises(ConfigError):
            VARSamplerConfig(**bad)


# ------------------------------------------------------------------------------------ training


def test_loss_is_cross_entropy_of_the_teacher_forced_forward(tok):
    model = tiny_var().train()
    images = random_images(B)
    tokens = VAR.tokens_from_images(tok, images)
    assert tokens["target_BL"].shape == (B, 21)
    assert tokens["x_BLCv_wo_first_l"].shape == (B, 20, 4)
    idx = tok.encode_scales(images)
    assert torch.equal(tokens["target_BL"], torch.cat([i.flatten(1) for i in idx], 1))
    loss, metrics = model.loss(tokens, LABELS)
    logits = model(LABELS, tokens["x_BLCv_wo_first_l"])
    ref = F.cross_entropy(logits.flatten(0, 1), tokens["target_BL"].flatten())
    torch.testing.assert_close(loss, ref)
    assert math.isfinite(metrics["ce"]) and 0.0 <= metrics["acc_last_scale"] <= 1.0


def test_loss_backward_reaches_every_parameter(tok):
    """DDP without find_unused_parameters needs a gradient for every trainable parameter."""
    model = tiny_var(label_drop=0.1, drop_path=0.1).train()
    torch.manual_seed(0)
    tokens = VAR.tokens_from_images(tok, random_images(B))
    loss, _ = model.loss(tokens, LABELS)
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    zero = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.abs().sum() > 0]
    assert zero == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_label_drop_replaces_labels_with_the_null_class_in_training_only(tok, monkeypatch):
    model = tiny_var(label_drop=0.5).train()
    embed = Spy(model.cond_embed)
    monkeypatch.setattr(model, "cond_embed", embed)
    tokens = VAR.tokens_from_images(tok, random_images(64))
    labels = torch.arange(64) % 3
    torch.manual_seed(0)
    model.loss(tokens, labels)
    used = embed.calls[-1][0]
    dropped = used == NULL
    assert 10 < int(dropped.sum()) < 54
    assert torch.equal(used[~dropped], labels[~dropped])
    model.eval()
    model.loss(tokens, labels)
    assert torch.equal(embed.calls[-1][0], labels)


def test_config_validation():
    from argen.errors import ConfigError

    for bad in ({"width": 30, "heads": 4}, {"scales": (1, 3, 2)}, {"depth": 0}, {"label_drop": 1.0},
                {"num_classes": 0}, {"drop_path": -0.1}):
        with pytest.raises(ConfigError) as e:
            tiny_var_config(**bad)
        assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------ official layout


@pytest.mark.skipif(not LAYOUT.is_file(), reason=f"official layout {LAYOUT} not available")
def test_var_d16_matches_the_official_layout():
    with torch.device("meta"):
        model = VAR(var_official(16))
    official = {k: v for k, v in read_layout(LAYOUT).items() if k.split(".")[-1] not in NOT_IN_STATE_DICT}
    expected_count = sum(math.prod(shape) for shape, _ in official.values())
    assert expected_count == 310_283_520
    sd = model.state_dict()
    assert sum(v.numel() for v in sd.values()) == expected_count
    assert sum(p.numel() for p in model.parameters()) == expected_count
    assert set(sd) == set(official)
    wrong = {k: (tuple(v.shape), official[k][0]) for k, v in sd.items() if tuple(v.shape) != official[k][0]}
    assert wrong == {}
    assert all(str(v.dtype) == official[k][1] for k, v in sd.items())
    # The buffers we leave out of the state dict exist on the module with the official shapes.
    full = read_layout(LAYOUT)
    assert tuple(model.lvl_1L.shape) == full["lvl_1L"][0]
    assert tuple(model.attn_bias_for_masking.shape) == full["attn_bias_for_masking"][0]
    assert tuple(model.blocks[0].attn.zero_k_bias.shape) == full["blocks.0.attn.zero_k_bias"][0]


# ------------------------------------------------------------------------------------ checkpoints


def test_checkpoint_round_trip_gives_identical_weights_and_samples(model, tok, tmp_path):
    save_model(tmp_path / "var", model)
    loaded = load_model(tmp_path / "var")
    assert isinstance(loaded, VAR) and loaded.config == model.config and not loaded.training
    a, b = model.state_dict(), loaded.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    cfg = VARSamplerConfig(cfg=1.5, top_k=8)
    s1 = sample(model, tok, LABELS, cfg, gen(3))
    s2 = sample(loaded, tok, LABELS, cfg, gen(3))
    assert all(torch.equal(x, y) for x, y in zip(s1, s2))
