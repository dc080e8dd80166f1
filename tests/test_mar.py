"""The continuous family: KL tokenizer, MAR body, its sampler, presets, checkpoints, exact resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import TINY_KL, random_images, read_layout, tiny_kl, tiny_mar

import argen
from argen.checkpoint import load_tensors, load_train_state, save_model
from argen.data import load_dataset
from argen.errors import ArgenError, ConfigError, TokenMismatchError
from argen.generators.mar import MAR, truncated_mask_ratio
from argen.models import get_preset, load_model
from argen.pipeline import Pipeline
from argen.presets.mar import mar_official
from argen.sampling.mar import MARSamplerConfig
from argen.sampling.mar import sample as sample_continuous
from argen.tokenizers.kl import KLConfig, KLTokenizer
from argen.training.trainer import GeneratorObjective, TrainConfig, train

LAYOUTS = Path(__file__).parent / "data" / "layouts"
class CallCounter:
    """Counts calls (and rows) of a module's forward."""

    def __init__(self, module):
        self.calls, self.rows = 0, []
        module.register_forward_hook(self._hook)

    def _hook(self, module, args, out):
        self.calls += 1
        self.rows.append(args[0].shape[0])


# ---- KL tokenizer -------------------------------------------------------------------------------------

def test_kl_tokenizer_shapes_and_posterior_sampling():
    tok = tiny_kl()
    x = random_images(5)
    z = tok.encode(x)
    assert z.shape == (5, 3, 4, 4) and tok.token_dim == 3 and tok.grid == (4, 4)
    assert torch.equal(z, tok.encode(x))  # the mean is deterministic
    g = torch.Generator().manual_seed(0)
    zs = tok.encode(x, sample=True, generator=g)
    assert not torch.allclose(zs, z)
    assert tok.decode(z).shape == x.shape and tok.decode(z).abs().max() <= 1


def test_kl_scale_factor_gives_unit_variance_tokens_and_round_trips(tmp_path):
    digits = load_dataset("digits")
    tok = tiny_kl()
    s = tok.fit_scale_factor(digits, n=256)
    tok.config = tok.config.replace(scale_factor=s)
    z = tok.encode(digits.batch(torch.arange(256))[0])
    assert abs(float(z.std()) - 1.0) < 1e-3
    save_model(tmp_path, tok)
    back = load_model(tmp_path)
    assert back.config.scale_factor == s
    # Decoding divides by the factor again: the same images whatever the factor.
    assert torch.allclose(back.decode(z), tok.latents_to_image(z / s).clamp(-1, 1), atol=1e-6)


def test_kl_training_lowers_the_loss():
    digits = load_dataset("digits")
    tok = tiny_kl().train()
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    batch = digits.batch(torch.arange(64))
    first = None
    for _ in range(40):
        loss, metrics = tok.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else float(loss.detach())
    assert float(loss.detach()) < 0.5 * first and {"rec", "kl", "latent_std"} <= metrics.keys()


def test_kl_config_errors():
    with pytest.raises(ConfigError, match="embed_dim"):
        KLConfig(**TINY_KL, embed_dim=0)
    with pytest.raises(ConfigError, match="kl_weight"):
        KLConfig(**TINY_KL, kl_weight=-1.0)


# ---- MAR body ---------------------------------------------------------------------------------------

def test_official_mar_b_matches_the_official_layout_key_for_key():
    with torch.device("meta"):
        model = MAR(mar_official("B"))
    layout = read_layout(LAYOUTS / "mar-b.tsv")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours.keys() == layout.keys()
    assert all(ours[k] == layout[k][0] for k in ours)
    assert sum(p.numel() for p in model.parameters()) == sum(
        torch.Size(shape).numel() for shape, _ in layout.values())


def test_masked_tokens_are_ignored_and_known_tokens_and_labels_matter():
    model = tiny_mar()
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 16, 3, generator=g)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, 5:] = True
    labels = torch.tensor([0, 1])
    z = model(tokens, mask, labels)
    assert z.shape == (2, 16, 32)
    changed = tokens.clone()
    changed[:, 5:] += 10.0  # masked positions: their values must not matter
    assert torch.allclose(model(changed, mask, labels), z, atol=1e-6)
    changed = tokens.clone()
    changed[:, :5] += 1.0  # known positions do
    assert not torch.allclose(model(changed, mask, labels), z, atol=1e-3)
    assert not torch.allclose(model(tokens, mask, torch.tensor([2, 3])), z, atol=1e-3)  # 3 = null condition
    uneven = mask.clone()
    uneven[0, 0] = True  # 12 masked in the first image, 11 in the second
    with pytest.raises(ArgenError, match="same number"):
        model(tokens, uneven, labels)


def test_training_mask_ratio_is_a_truncated_normal_with_mode_one():
    g = torch.Generator().manual_seed(0)
    r = torch.tensor([truncated_mask_ratio(0.7, g) for _ in range(4000)])
    assert r.min() >= 0.7 and r.max() <= 1.0
    # mean of N(1, 0.25) truncated to [0.7, 1]: 1 + 0.25 (phi(-1.2) - phi(0)) / (Phi(0) - Phi(-1.2))
    # = 1 + 0.25 (0.19419 - 0.39894) / 0.38493 = 0.8670; the standard error of 4000 draws is ~0.0012.
    assert abs(float(r.mean()) - 0.8670) < 0.005


def test_loss_is_on_masked_tokens_only_and_reaches_every_parameter():
    model = tiny_mar().train()
    net = CallCounter(model.diffloss.net)  # the head's network sees batch_mul copies of each masked token
    torch.manual_seed(0)
    loss, metrics = model.loss(torch.randn(4, 16, 3), torch.tensor([0, 1, 2, 0]))
    assert net.rows == [model.diffloss.batch_mul * round(metrics["mask_ratio"] * 64)]
    assert 0.7 <= metrics["mask_ratio"] <= 1.0
    loss.backward()
    # With a fully masked batch (ratio can be 1) the known-token projection gets no gradient; all else does.
    missing = [n for n, p in model.named_parameters() if p.grad is None and not n.startswith("z_proj.")]
    assert missing == []


@pytest.mark.parametrize("head", ["diffusion", "flow"])
@pytest.mark.parametrize("cfg", [0.0, 1.5])
def test_each_ar_step_runs_the_body_once_and_the_head_head_steps_times(head, cfg):
    model = tiny_mar(head=head)
    body, net = CallCounter(model), CallCounter(model.diffloss.net)
    config = MARSamplerConfig(ar_steps=5, head_steps=3, cfg=cfg)
    out = sample_continuous(model, tiny_kl(), torch.tensor([0, 1, 2, 1]), config, torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 4, 4) and torch.isfinite(out).all()
    assert body.calls == 5 and set(body.rows) == {8 if cfg else 4}
    assert net.calls == 5 * 3  # head evaluations per image = AR steps x head steps
    assert sum(net.rows) == 3 * 16 * 4 * (2 if cfg else 1)  # every token of every image once per head step


def test_heun_flow_head_calls_and_schedule_counts():
    model = tiny_mar(head="flow")
    net = CallCounter(model.diffloss.net)
    sample_continuous(model, None, torch.tensor([0]), MARSamplerConfig(ar_steps=4, head_steps=3, solver="heun"))
    assert net.calls == 4 * (2 * 3 - 1)


def test_known_tokens_are_never_changed_and_a_full_map_is_returned_as_is():
    model = tiny_mar()
    g = torch.Generator().manual_seed(1)
    given = torch.randn(3, 3, 4, 4, generator=g)
    known = torch.zeros(3, 4, 4, dtype=torch.bool)
    known[:, :2] = True  # the top half
    out = sample_continuous(model, None, torch.tensor([0, 1, 2]), MARSamplerConfig(ar_steps=4, head_steps=2),
                            torch.Generator().manual_seed(0), known=(given, known))
    assert torch.equal(out[:, :, :2], given[:, :, :2])
    assert not torch.allclose(out[:, :, 2:], given[:, :, 2:])
    full = torch.ones(3, 4, 4, dtype=torch.bool)
    assert torch.equal(sample_continuous(model, None, torch.tensor([0, 1, 2]), known=(given, full)), given)
    with pytest.raises(ArgenError, match="same number"):
        uneven = known.clone()
        uneven[0, 3, 3] = True
        sample_continuous(model, None, torch.tensor([0, 1, 2]), known=(given, uneven))


def test_same_seed_same_tokens_and_sampler_validation():
    model = tiny_mar()
    cfg = MARSamplerConfig(ar_steps=4, head_steps=2, cfg=1.0)
    a = sample_continuous(model, None, torch.tensor([0, 1]), cfg, torch.Generator().manual_seed(3))
    b = sample_continuous(model, None, torch.tensor([0, 1]), cfg, torch.Generator().manual_seed(3))
    c = sample_continuous(model, None, torch.tensor([0, 1]), cfg, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    with pytest.raises(ConfigError, match="ar_steps"):
        sample_continuous(model, None, torch.tensor([0]), MARSamplerConfig(ar_steps=17))
    with pytest.raises(ConfigError, match="solver"):
        MARSamplerConfig(solver="rk4")
    with pytest.raises(TokenMismatchError, match="KLTokenizer .continuous tokens, grid 4x4, 4 channels. does not fit generator MAR"):
        sample_continuous(model, tiny_kl(embed_dim=4), torch.tensor([0]), MARSamplerConfig(ar_steps=2))


def test_presets_are_registered_with_their_heads():
    for name, head in [("mar-digits", "diffusion"), ("mar-flow-digits", "flow"), ("mar-fmnist", "diffusion"),
                       ("mar-flow-fmnist", "flow")]:
        p = get_preset(name, "generator")
        assert p.make_config().head == head and "ar_steps" in p.sampler
    assert get_preset("kl-digits", "tokenizer").make_config().embed_dim >= 1
    assert isinstance(argen.build("kl-fmnist"), KLTokenizer)


# ---- checkpoints, pipeline, resume ---------------------------------------------------------------------

def test_checkpoint_round_trip_gives_identical_samples(tmp_path):
    model, tok = tiny_mar(), tiny_kl()
    pipe = Pipeline(tok, model, {"ar_steps": 4, "head_steps": 3, "cfg": 1.0})
    pipe.save_pretrained(tmp_path)
    back = Pipeline.from_pretrained(tmp_path)
    assert back.settings == pipe.settings
    assert torch.equal(back([0, 1, 2], seed=0), pipe([0, 1, 2], seed=0))
    # Editing keeps the top half of the token map; decoded, the images have the right shape.
    image = random_images(1)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 4:, :] = 1
    edited = back.edit(image, mask, [0, 1])
    assert edited.shape == (2, 1, 8, 8)


def _mar_run(tok):
    torch.manual_seed(0)
    model = tiny_mar(label_drop=0.1, num_classes=10).train()
    return model, GeneratorObjective(model, tok)


def test_resume_is_bit_identical(tmp_path):
    digits, tok = load_dataset("digits"), tiny_kl()
    cfg = dict(batch_size=16, lr=2e-3, warmup=2, ema=0.9, log_every=1, save_every=100, seed=3)
    model, obj = _mar_run(tok)
    train(model, digits, TrainConfig(steps=4, **cfg), tmp_path / "straight", objective=obj, quiet=True)
    model, obj = _mar_run(tok)
    train(model, digits, TrainConfig(steps=2, **cfg), tmp_path / "split", objective=obj, quiet=True)
    model, obj = _mar_run(tok)
    torch.manual_seed(123)
    train(model, digits, TrainConfig(steps=4, **cfg), tmp_path / "split", objective=obj, resume=True, quiet=True)
    a, b = load_tensors(tmp_path / "straight" / "model.safetensors"), load_tensors(tmp_path / "split" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert load_train_state(tmp_path / "split")["step"] == 4
