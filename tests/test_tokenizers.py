"""Tests for argen.tokenizers: single-scale VQ, VAR's multi-scale VQ, the codebook and the conv nets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    random_images,
    random_scales,
    tiny_msvq,
    tiny_msvq_config,
    tiny_vq,
    tiny_vq_config,
)

from argen.errors import ConfigError
from argen.tokenizers.base import Codebook, kmeans, usage_stats
from argen.tokenizers.msvq import MultiScaleVQ, phi_index
from argen.tokenizers.nets import Decoder, Encoder
from argen.tokenizers.vq import VQTokenizer

B = 3


def batch(n: int = B, seed: int = 0):
    return random_images(n, seed=seed), torch.zeros(n, dtype=torch.long)


# ------------------------------------------------------------------------------------ conv nets


@pytest.mark.parametrize("ch_mult, size", [((1,), 8), ((1, 2), 8), ((1, 2, 2), 16)])
def test_encoder_decoder_shapes(ch_mult, size):
    torch.manual_seed(0)
    kw = {"ch": 8, "ch_mult": ch_mult, "num_res_blocks": 1, "z_ch": 4, "groups": 4, "attn_lowest": True}
    enc, dec = Encoder(in_ch=3, **kw), Decoder(out_ch=3, **kw)
    x = torch.randn(2, 3, size, size)
    z = enc(x)
    down = 2 ** (len(ch_mult) - 1)
    assert z.shape == (2, 4, size // down, size // down)
    assert dec(z).shape == x.shape


# ------------------------------------------------------------------------------------ shapes


def test_msvq_encode_decode_shapes_and_ranges():
    tok = tiny_msvq()
    assert tok.grid == (4, 4) and tok.scales == (1, 2, 4) and tok.codebook_size == 16 and tok.token_dim == 4
    x = random_images(B)
    idx = tok.encode(x)
    assert [tuple(i.shape) for i in idx] == [(B, 1, 1), (B, 2, 2), (B, 4, 4)]
    assert all(i.dtype == torch.long and i.min() >= 0 and i.max() < 16 for i in idx)
    y = tok.decode(idx)
    assert y.shape == x.shape
    assert y.min() >= -1 and y.max() <= 1


def test_vq_encode_decode_shapes_and_ranges():
    tok = tiny_vq()
    assert tok.grid == (4, 4) and tok.codebook_size == 16
    x = random_images(B)
    idx = tok.encode(x)
    assert idx.shape == (B, 4, 4) and idx.dtype == torch.long
    assert idx.min() >= 0 and idx.max() < 16
    y = tok.decode(idx)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1


def test_vq_encode_picks_the_most_similar_code():
    tok = tiny_vq()
    x = random_images(B)
    idx = tok.encode(x)
    z = F.normalize(tok.quant_conv(tok.encoder(x)), dim=1).permute(0, 2, 3, 1).reshape(-1, 4)
    sims = z @ F.normalize(tok.quantize.embedding.weight, dim=-1).t()
    assert torch.equal(idx.flatten(), sims.argmax(-1))


def test_vq_decode_depends_on_the_tokens():
    tok = tiny_vq()
    idx = random_scales(B, scales=(4,), seed=1)[0]
    other = (idx + 1) % 16
    assert not torch.allclose(tok.decode(idx), tok.decode(other))


# ------------------------------------------------------------------------------------ multi-scale maths


def test_decode_scales_equals_decode_fhat_of_fhat_from_scales():
    tok = tiny_msvq()
    idx = tok.encode_scales(random_images(B))
    a = tok.decode_scales(idx)
    b = tok.decode_fhat(tok.fhat_from_scales(idx))
    assert torch.equal(a, b)


def test_encode_scales_is_the_residual_quantisation_of_the_features():
    tok = tiny_msvq()
    x = random_images(B)
    f = tok.features(x)
    f_hat, idx_q, _, _ = tok.quantize.quantize(f)
    idx = tok.encode_scales(x)
    assert all(torch.equal(a, b) for a, b in zip(idx, idx_q))
    assert torch.allclose(tok.fhat_from_scales(idx), f_hat, atol=1e-6)
    # Scale 0 picks the nearest code to the area-pooled (1x1) features.
    pooled = f.mean((2, 3))
    d = torch.cdist(pooled, tok.quantize.embedding.weight)
    assert torch.equal(idx[0].flatten(), d.argmin(-1))


def test_embed_scale_upsamples_to_the_grid_and_applies_its_phi():
    tok = tiny_msvq()
    q = tok.quantize
    idx = random_scales(B, seed=2)
    for si, pn in enumerate(tok.scales):
        h = q.embed_scale(idx[si], si)
        assert h.shape == (B, 4, 4, 4)
        e = q.embedding.weight[idx[si]].permute(0, 3, 1, 2)
        if pn != 4:
            e = F.interpolate(e, size=(4, 4), mode="bicubic")
        phi = q.quant_resi.qresi_ls[phi_index(si, len(tok.scales), tok.config.num_phi)]
        assert torch.allclose(h, 0.5 * e + 0.5 * phi.conv(e), atol=1e-6)


def test_teacher_forcing_input_layout():
    tok = tiny_msvq()
    idx = random_scales(B, seed=3)
    x = tok.teacher_forcing_input(idx)
    L = sum(p * p for p in tok.scales)
    assert x.shape == (B, L - 1, tok.token_dim) == (B, 20, 4)
    q = tok.quantize
    h0 = q.embed_scale(idx[0], 0)
    first = F.interpolate(h0, size=(2, 2), mode="area").flatten(2).transpose(1, 2)
    assert torch.allclose(x[:, :4], first, atol=1e-6)
    # The last block is f_hat after scales 0 and 1, already at the grid (area to 4x4 is identity).
    f_hat = h0 + q.embed_scale(idx[1], 1)
    assert torch.allclose(x[:, 4:], f_hat.flatten(2).transpose(1, 2), atol=1e-6)
    # The last scale's tokens are a target only: they never enter the input.
    idx2 = [idx[0], idx[1], (idx[2] + 1) % 16]
    assert torch.equal(tok.teacher_forcing_input(idx2), x)
    # An earlier scale's tokens do.
    idx3 = [(idx[0] + 1) % 16, idx[1], idx[2]]
    assert not torch.allclose(tok.teacher_forcing_input(idx3)[:, :4], x[:, :4])


# ------------------------------------------------------------------------------------ phi table


def test_phi_index_matches_var_for_ten_scales():
    assert tuple(phi_index(i, 10, 4) for i in range(10)) == (0, 0, 1, 1, 1, 2, 2, 3, 3, 3)


def test_config_refuses_an_unused_phi():
    # 3 scales with 4 phis map to phis (0, 1, 3): phi 2 would never train.
    with pytest.raises(ConfigError, match="unused"):
        tiny_msvq_config(scales=(1, 2, 4), num_phi=4)


def test_phi_index_uses_every_phi_for_four_scales():
    assert [phi_index(i, 4, 4) for i in range(4)] == [0, 1, 2, 3]


def test_phi_index_is_monotone_and_spans_the_ends():
    for K in (2, 5, 7, 13):
        for n_phi in (1, 2, 4):
            got = [phi_index(i, K, n_phi) for i in range(K)]
            assert got == sorted(got)
            assert got[0] == 0 and got[-1] == n_phi - 1


# ------------------------------------------------------------------------------------ training losses


def test_msvq_loss_backward_reaches_encoder_decoder_and_codebook():
    tok = tiny_msvq().train()
    loss, metrics = tok.loss(batch())
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert {"rec", "vq", "usage_s0", "usage_s1", "usage_s2"} <= set(metrics)
    loss.backward()
    for name, mod in [("encoder", tok.encoder), ("decoder", tok.decoder), ("quant_conv", tok.quant_conv),
                      ("post_quant_conv", tok.post_quant_conv)]:
        grads = [p.grad for p in mod.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    g = tok.quantize.embedding.weight.grad
    assert g is not None and g.abs().sum() > 0


@pytest.mark.parametrize("scales", [(1, 2, 3, 4), (1, 2, 4)])
def test_msvq_loss_gives_every_parameter_a_gradient(scales):
    """DDP (find_unused_parameters=False, as the trainer builds it) needs every parameter used."""
    tok = tiny_msvq(scales=scales).train()
    tok.loss(batch())[0].backward()
    missing = [n for n, p in tok.named_parameters() if p.grad is None]
    assert missing == []


def test_vq_loss_backward_reaches_encoder_decoder_and_codebook():
    tok = tiny_vq().train()
    loss, metrics = tok.loss(batch())
    assert torch.isfinite(loss)
    assert {"rec", "vq", "usage", "perplexity"} <= set(metrics)
    loss.backward()
    missing = [n for n, p in tok.named_parameters() if p.grad is None]
    assert missing == []
    for mod in (tok.encoder, tok.decoder, tok.quantize):
        assert sum(float(p.grad.abs().sum()) for p in mod.parameters()) > 0


@pytest.mark.parametrize("make", [tiny_msvq, tiny_vq])
def test_kmeans_init_once_in_begin_training(make):
    tok = make(spread_codebook=False) if make is tiny_msvq else make()
    q = tok.quantize
    before = q.embedding.weight.detach().clone()
    assert int(q.initialized) == 0
    # Losses never initialise, in either mode: the trainer's begin_training does, once.
    tok.eval().loss(batch())
    tok.train().loss(batch())
    assert int(q.initialized) == 0 and torch.equal(q.embedding.weight, before)
    tok.begin_training(batch())
    assert int(q.initialized) == 1
    after = q.embedding.weight.detach().clone()
    assert not torch.allclose(after, before)
    assert torch.allclose(q.usage_SV.sum(-1), torch.ones(q.usage_SV.shape[0]), atol=1e-5)
    # A resumed run (initialized set) keeps its codebook.
    tok.begin_training(batch(seed=1))
    assert torch.equal(q.embedding.weight, after)


def test_kmeans_init_can_be_disabled():
    tok = tiny_msvq(spread_codebook=False, kmeans_init=False).train()
    before = tok.quantize.embedding.weight.detach().clone()
    tok.begin_training(batch())
    assert int(tok.quantize.initialized) == 0
    assert torch.equal(tok.quantize.embedding.weight, before)


def test_msvq_kmeans_init_spreads_codes_over_features():
    # After init, the codebook sits among the features: the mean distance from a pooled feature
    # to its nearest code is far smaller than with the default tiny uniform init.
    tok = tiny_msvq(spread_codebook=False).train()
    x = batch(8)
    pooled = torch.cat(tok.init_vectors(x[0]), 0).detach()
    d_before = torch.cdist(pooled, tok.quantize.embedding.weight).min(-1).values.mean()
    tok.begin_training(x)
    d_after = torch.cdist(pooled, tok.quantize.embedding.weight).min(-1).values.mean()
    assert d_after < 0.5 * d_before


def test_restart_schedule_runs_at_step_ends():
    tok = tiny_msvq(restart_every=2, restart_threshold=0.5, usage_decay=0.99).train()
    q = tok.quantize
    tok.loss(batch())
    assert tok.end_step() == {}
    tok.loss(batch(seed=1))
    q.usage_SV.zero_()  # every code looks dead (one batch at decay 0.99 cannot revive any)
    q.usage_SV[0, 0] = 1.0  # ... but code 0; the step's own hits are applied first, at decay 0.99
    assert tok.end_step() == {"restarted": 15}
    assert int(tok.train_steps) == 2


# ------------------------------------------------------------------------------------ codebook upkeep


def test_restart_dead_replaces_dead_codes_only():
    torch.manual_seed(0)
    V, C, S = 16, 4, 3
    cb = Codebook(V, C, num_scales=S)
    with torch.no_grad():
        cb.embedding.weight.normal_()
    cb.usage_SV.fill_(1.0 / V)
    dead = torch.tensor([1, 5, 6, 12])
    cb.usage_SV[:, dead] = 0.0
    # Code 9 is unused at two scales but well used at the third: its summed usage keeps it alive.
    cb.usage_SV[:2, 9] = 0.0
    cb.usage_SV[2, 9] = 3.0 / V
    before = cb.embedding.weight.detach().clone()
    candidates = torch.randn(50, C) + 10.0  # far from every current code
    n = cb.restart_dead(candidates, threshold=0.03)
    assert n == 4
    after = cb.embedding.weight.detach()
    live = torch.ones(V, dtype=torch.bool)
    live[dead] = False
    assert torch.equal(after[live], before[live])
    # Each new code is a candidate plus a little noise.
    dist_to_cand = torch.cdist(after[dead], candidates).min(-1).values
    assert (dist_to_cand < 0.1).all(), dist_to_cand
    # Restarted codes get a grace period: their usage is reset to uniform.
    assert torch.allclose(cb.usage_SV[:, dead], torch.full((S, 4), 1.0 / V))
    # Nothing left to restart.
    assert cb.restart_dead(candidates, threshold=0.03) == 0


def test_restart_dead_returns_zero_when_all_codes_live():
    cb = Codebook(8, 2)
    cb.usage_SV.fill_(1.0 / 8)
    before = cb.embedding.weight.detach().clone()
    assert cb.restart_dead(torch.randn(10, 2), threshold=0.5) == 0
    assert torch.equal(cb.embedding.weight, before)


def test_record_usage_is_an_ema_of_hit_shares():
    cb = Codebook(4, 2, num_scales=2)
    cb.record_usage(torch.tensor([0, 0, 1]), scale=1)
    cb.record_usage(torch.tensor([3]), scale=1)  # a second micro-batch of the same step
    assert torch.equal(cb.usage_SV, torch.zeros(2, 4))  # applied at the step's end
    assert cb.end_step(None, 0.5) == 0
    expected = 0.01 * torch.tensor([0.5, 0.25, 0.0, 0.25])
    assert torch.allclose(cb.usage_SV[1], expected)
    assert torch.equal(cb.usage_SV[0], torch.zeros(4))  # a scale without hits keeps its EMA


def test_usage_stats_exact():
    s = usage_stats(torch.tensor([[0, 0], [1, 2]]), 8)
    assert s["usage"] == 3 / 8
    assert math.isclose(s["perplexity"], 2 ** 1.5, rel_tol=1e-12)  # H = 1.5 bits
    s = usage_stats(torch.arange(16), 16)
    assert s["usage"] == 1.0 and math.isclose(s["perplexity"], 16.0, rel_tol=1e-12)
    s = usage_stats(torch.full((10,), 3), 16)
    assert s["usage"] == 1 / 16 and math.isclose(s["perplexity"], 1.0)


def test_kmeans_finds_two_separated_blobs():
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        a = torch.randn(100, 2, generator=g) * 0.3 + torch.tensor([-5.0, -5.0])
        b = torch.randn(60, 2, generator=g) * 0.3 + torch.tensor([5.0, 3.0])
        x = torch.cat([a, b])[torch.randperm(160, generator=g)]
        c = kmeans(x, 2, generator=torch.Generator().manual_seed(seed))
        c = c[c[:, 0].argsort()]
        assert torch.allclose(c[0], a.mean(0), atol=1e-4), (seed, c)
        assert torch.allclose(c[1], b.mean(0), atol=1e-4), (seed, c)


def test_kmeans_with_fewer_points_than_codes_returns_k_centres_from_the_points():
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    c = kmeans(x, 8, generator=torch.Generator().manual_seed(0))
    assert c.shape == (8, 2)
    assert torch.cdist(c, x).min(-1).values.max() < 1e-6


# ------------------------------------------------------------------------------------ config validation


@pytest.mark.parametrize("overrides, words", [
    ({"scales": (1, 2, 3)}, "last scale"),
    ({"scales": (1, 2, 8)}, "last scale"),
    ({"scales": (1, 2, 2, 4)}, "strictly increasing"),
    ({"scales": (2, 1, 4)}, "strictly increasing"),
    ({"recon_loss": "l3"}, "recon_loss"),
    ({"image_size": 10, "ch_mult": (1, 2, 2)}, "image_size"),
    ({"codebook_size": 1}, "codebook_size"),
    ({"num_phi": 0}, "num_phi"),
])
def test_msvq_config_errors_are_one_line(overrides, words):
    with pytest.raises(ConfigError) as e:
        tiny_msvq_config(**overrides)
    msg = str(e.value)
    assert "\n" not in msg and words in msg


def test_vq_config_errors():
    with pytest.raises(ConfigError, match="recon_loss"):
        tiny_vq_config(recon_loss="huber")
    with pytest.raises(ConfigError, match="code_dim"):
        tiny_vq_config(code_dim=0)
    with pytest.raises(ConfigError, match="image_channels"):
        tiny_vq_config(image_channels=2)


def test_config_grid_and_token_count():
    c = tiny_msvq_config()
    assert c.grid == (4, 4) and c.downsample == 2 and c.num_tokens == 21
    assert MultiScaleVQ.config_class is type(c) and VQTokenizer.config_class is type(tiny_vq_config())
