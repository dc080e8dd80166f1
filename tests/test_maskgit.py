"""Tests for the MaskGIT generator (argen.generators.maskgit), its mask schedules and its sampler."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import random_images, tiny_maskgit, tiny_maskgit_config, tiny_vq

from argen.checkpoint import save_model
from argen.errors import ArgenError, ConfigError
from argen.generators.maskgit import MaskGIT, MaskGITConfig
from argen.models import get_preset, load_model
from argen.sampling.maskgit import MaskGITSamplerConfig, sample
from argen.schedulers.masking import MASK_SCHEDULES, get_schedule, mask_counts, mask_counts_batched

B, N, V = 4, 16, 16
MASK = V  # the [MASK] id of the tiny config
NULL = 3  # num_classes of the tiny config
LABELS = torch.tensor([0, 1, 2, 1])


@pytest.fixture(scope="module")
def tok():
    return tiny_vq()


@pytest.fixture
def model():
    return tiny_maskgit()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Spy:
    """Records the positional arguments of every forward call of a module, through a forward pre-hook."""

    def __init__(self, module):
        self.calls = []
        module.register_forward_pre_hook(self._record)

    def _record(self, module, args):
        self.calls.append([a.clone() if isinstance(a, torch.Tensor) else a for a in args])


def spy_forward(model) -> Spy:
    return Spy(model)  # the model fixture is fresh per test, so the hook goes with it


# ------------------------------------------------------------------------------------ model


def test_logits_shape_and_the_model_reacts_to_class_and_tokens(model):
    idx = torch.randint(V, (B, N), generator=gen(0))
    logits = model(idx, LABELS)
    assert logits.shape == (B, N, V)  # V real tokens: the head never predicts the mask id
    assert (model(idx, torch.tensor([1, 2, 0, 0])) - logits).abs().mean() > 0.1
    # Bidirectional: changing the *last* token changes the logits of the *first* position.
    idx2 = idx.clone()
    idx2[:, -1] = (idx2[:, -1] + 1) % V
    assert (model(idx2, LABELS)[:, 0] - logits[:, 0]).abs().max() > 1e-3
    assert model.tok_emb.num_embeddings == V + 1 and model.class_emb.num_embeddings == NULL + 1


def test_config_validation_gives_one_line_errors():
    for bad in ({"width": 30, "heads": 4}, {"depth": 0}, {"grid": (4,)}, {"grid": (0, 4)}, {"vocab_size": 0},
                {"label_drop": 1.0}, {"dropout": -0.1}, {"mask_schedule": "zigzag"}, {"num_classes": 0}):
        with pytest.raises(ConfigError) as e:
            tiny_maskgit_config(**bad)
        assert "\n" not in str(e.value)


def test_presets_are_registered_and_fit_their_tokenizers():
    digits, fmnist = get_preset("maskgit-digits", "generator"), get_preset("maskgit-fmnist", "generator")
    for preset, tok_name in ((digits, "vq-digits"), (fmnist, "vq-fmnist")):
        cfg = preset.make_config()
        assert isinstance(cfg, MaskGITConfig)
        tok_cfg = get_preset(tok_name, "tokenizer").make_config()
        assert cfg.vocab_size == tok_cfg.codebook_size and cfg.grid == tok_cfg.grid
        MaskGITSamplerConfig.from_dict(preset.sampler)
        assert {"steps", "batch_size", "lr", "warmup", "ema", "weight_decay"} <= set(preset.train)
    assert digits.data == "digits" and fmnist.data == "fashion-mnist"


# ------------------------------------------------------------------------------------ schedules


@pytest.mark.parametrize("name", list(MASK_SCHEDULES))
def test_every_schedule_goes_from_all_masked_to_none_monotonically(name):
    gamma = get_schedule(name)
    r = torch.linspace(0, 1, 101, dtype=torch.float64)
    g = gamma(r)
    assert abs(float(g[0]) - 1) < 1e-9 and abs(float(g[-1])) < 1e-9
    assert (g[1:] <= g[:-1] + 1e-12).all() and ((g >= -1e-12) & (g <= 1 + 1e-12)).all()


@pytest.mark.parametrize("name", list(MASK_SCHEDULES))
@pytest.mark.parametrize("n, T", [(16, 8), (16, 16), (16, 1), (49, 12), (256, 8), (1024, 12), (5, 4), (3, 3)])
def test_mask_counts_strictly_decrease_to_zero_in_exactly_T_steps(name, n, T):
    counts = mask_counts(T, n, name)
    assert len(counts) == T and counts[-1] == 0 and counts[0] < n
    assert all(a > b for a, b in itertools.pairwise(counts))


def test_mask_counts_follow_the_schedule_where_it_allows():
    # 256 tokens, 8 steps, cosine: floor(256 cos(pi/2 (t+1)/8)), with no clamping needed.
    expected = [math.floor(256 * math.cos(math.pi / 2 * (t + 1) / 8) + 1e-9) for t in range(8)]
    assert mask_counts(8, 256, "cosine") == expected
    assert mask_counts(8, 256, "linear") == [224, 192, 160, 128, 96, 64, 32, 0]


def test_mask_counts_errors_and_batched_clamp():
    with pytest.raises(ConfigError, match="steps"):
        mask_counts(9, 8)  # T > N: T steps cannot each commit a token
    with pytest.raises(ConfigError):
        mask_counts(0, 8)
    with pytest.raises(ConfigError) as e:
        get_schedule("zigzag")
    assert all(name in str(e.value) for name in MASK_SCHEDULES) and "\n" not in str(e.value)
    # Per-image counts (inpainting): rows with N >= T match mask_counts, rows with N < T commit one
    # token per step and then nothing; a row with nothing unknown stays at 0.
    rows = mask_counts_batched(4, torch.tensor([16, 2, 0]), "cosine")
    assert rows[0].tolist() == mask_counts(4, 16) and rows[1].tolist() == [1, 0, 0, 0] and rows[2].tolist() == [0] * 4


# ------------------------------------------------------------------------------------ sampler


@pytest.mark.parametrize("T", [1, 4, 8, 16])
@pytest.mark.parametrize("cfg", [0.0, 2.0])
def test_T_steps_make_exactly_T_forward_calls_batched_2B_with_cfg(model, tok, monkeypatch, T, cfg):
    spy = spy_forward(model)
    out = sample(model, tok, LABELS, MaskGITSamplerConfig(steps=T, cfg=cfg), gen(0))
    assert out.shape == (B, 4, 4)
    assert len(spy.calls) == T
    want_labels = torch.cat([LABELS, torch.full_like(LABELS, NULL)]) if cfg > 0 else LABELS
    for idx, labels in spy.calls:
        assert idx.shape == (2 * B if cfg > 0 else B, N) and torch.equal(labels, want_labels)
        if cfg > 0:
            assert torch.equal(idx[:B], idx[B:])  # both halves see the same map


@pytest.mark.parametrize("kw", [{}, {"top_k": 3}, {"top_p": 0.8, "temperature": 0.7}, {"cfg": 2.0},
                                {"cfg": 1.5, "cfg_schedule": "linear", "choice_temperature": 0.0},
                                {"schedule": "linear", "steps": 3}, {"schedule": "sqrt"}, {"schedule": "square"},
                                {"schedule": "exp", "steps": 16}])
def test_no_mask_token_remains_and_every_id_is_in_the_vocabulary(model, tok, kw):
    out = sample(model, tok, LABELS, MaskGITSamplerConfig(**kw), gen(0))
    assert out.shape == (B, 4, 4) and out.dtype == torch.long
    assert ((out >= 0) & (out < V)).all()


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_each_step_commits_per_the_schedule_and_committed_tokens_never_change(model, tok, monkeypatch, schedule):
    spy = spy_forward(model)
    T = 6
    out = sample(model, tok, LABELS, MaskGITSamplerConfig(steps=T, schedule=schedule), gen(3))
    inputs = [c[0] for c in spy.calls] + [out.view(B, N)]
    still_masked = [int(x[0].eq(MASK).sum()) for x in inputs]
    assert still_masked == [N] + mask_counts(T, N, schedule)
    assert all(int(x.eq(MASK).sum(1).max()) == int(x.eq(MASK).sum(1).min()) for x in inputs)  # every image alike
    for a, b in itertools.pairwise(inputs):
        fixed = a != MASK
        assert torch.equal(a[fixed], b[fixed])


def random_known(seed: int = 0):
    """Known tokens and per-image known masks: 6 of 16 known, 14 of 16 known (fewer unknown than T),
    all known, none known."""
    g = gen(seed)
    idx = torch.randint(V, (B, N), generator=g)
    known = torch.ones(B, N, dtype=torch.bool)
    known[0, torch.randperm(N, generator=g)[:10]] = False
    known[1] = True
    known[1, :2] = False
    known[2] = True
    known[3] = False
    return idx, known


@pytest.mark.parametrize("kw", [{}, {"cfg": 2.0, "steps": 4}, {"top_k": 1, "choice_temperature": 0.0}])
def test_known_tokens_are_never_changed(model, tok, monkeypatch, kw):
    idx, known = random_known()
    spy = spy_forward(model)
    out = sample(model, tok, LABELS, MaskGITSamplerConfig(**kw), gen(1), known=(idx.view(B, 4, 4), known))
    flat = out.view(B, N)
    assert torch.equal(flat[known], idx[known]) and ((flat >= 0) & (flat < V)).all()
    for x, _ in spy.calls:  # known tokens are inputs from the first step on, never masked
        assert torch.equal(x[:B][known], idx[known])
    # The schedule runs over the unknown positions only.
    unknown = int((~known[0]).sum())
    assert [int(x[0].eq(MASK).sum()) for x, _ in spy.calls] == [unknown] + mask_counts(len(spy.calls), unknown)[:-1]


def test_a_full_known_map_changes_nothing_and_an_empty_one_changes_nothing_either(model, tok):
    idx = torch.randint(V, (B, N), generator=gen(5))
    out = sample(model, tok, LABELS, MaskGITSamplerConfig(cfg=1.0), gen(0), known=(idx, torch.ones(B, N, dtype=bool)))
    assert torch.equal(out.view(B, N), idx)
    free = sample(model, tok, LABELS, MaskGITSamplerConfig(), gen(0))
    empty = sample(model, tok, LABELS, MaskGITSamplerConfig(), gen(0), known=(idx, torch.zeros(B, N, dtype=bool)))
    assert torch.equal(free, empty)


@pytest.mark.parametrize("kw", [{}, {"cfg": 2.0, "top_p": 0.9}])
def test_same_seed_same_tokens_different_seed_different(model, tok, kw):
    cfg = MaskGITSamplerConfig(**kw)
    a, b = sample(model, tok, LABELS, cfg, gen(1)), sample(model, tok, LABELS, cfg, gen(1))
    c = sample(model, tok, LABELS, cfg, gen(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_choice_noise_matters_and_greedy_without_it_ignores_the_seed(model, tok):
    greedy = MaskGITSamplerConfig(top_k=1, choice_temperature=0.0)
    assert torch.equal(sample(model, tok, LABELS, greedy, gen(1)), sample(model, tok, LABELS, greedy, gen(2)))
    noisy = MaskGITSamplerConfig(top_k=1, choice_temperature=50.0)  # the order of commits now depends on the seed
    assert not torch.equal(sample(model, tok, LABELS, noisy, gen(1)), sample(model, tok, LABELS, noisy, gen(2)))


@torch.no_grad()
def reference_greedy(model, labels, T: int, w: float, cfg_schedule: str = "constant") -> torch.Tensor:
    """Greedy MaskGIT decoding one image and one position at a time, from the forward alone."""
    out = []
    counts = mask_counts(T, N)
    for i in range(labels.shape[0]):
        idx = torch.full((N,), MASK)
        for t in range(T):
            logits = model(idx[None], labels[i:i + 1])[0]
            if w > 0:
                uncond = model(idx[None], torch.tensor([NULL]))[0]
                logits = logits + w * ((t + 1) / T if cfg_schedule == "linear" else 1.0) * (logits - uncond)
            conf, best = torch.log_softmax(logits, -1).max(-1)
            masked = [p for p in range(N) if idx[p] == MASK]
            for p in sorted(masked, key=lambda p: -conf[p].item())[: len(masked) - counts[t]]:
                idx[p] = best[p]
        out.append(idx.view(4, 4))
    return torch.stack(out)


@pytest.mark.parametrize("T, w, schedule", [(8, 0.0, "constant"), (4, 2.0, "constant"), (5, 2.0, "linear")])
def test_greedy_sampling_matches_a_one_position_at_a_time_reference(model, tok, T, w, schedule):
    cfg = MaskGITSamplerConfig(steps=T, top_k=1, choice_temperature=0.0, cfg=w, cfg_schedule=schedule)
    got = sample(model, tok, LABELS, cfg, gen(0))
    assert torch.equal(got, reference_greedy(model, LABELS, T, w, schedule))
    # Guards the test: guidance changes this model's greedy result, so the cfg cases prove something.
    if w > 0:
        assert not torch.equal(got, sample(model, tok, LABELS, cfg.replace(cfg=0.0), gen(0)))


def test_batched_equals_unbatched_greedy(model, tok):
    cfg = MaskGITSamplerConfig(top_k=1, choice_temperature=0.0, cfg=1.5)
    batched = sample(model, tok, LABELS, cfg, gen(0))
    for i in range(B):
        assert torch.equal(sample(model, tok, LABELS[i:i + 1], cfg, gen(0))[0], batched[i])


def test_sampling_does_not_change_the_model(model, tok):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sample(model, tok, LABELS, MaskGITSamplerConfig(cfg=1.0, top_k=3), gen(0))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and not model.training


def test_sampler_config_and_input_validation(model, tok):
    for bad in ({"steps": 0}, {"schedule": "zigzag"}, {"temperature": 0.0}, {"top_k": -1}, {"top_p": 0.0},
                {"top_p": 1.5}, {"cfg": -1.0}, {"cfg_schedule": "cosine"}, {"choice_temperature": -1.0}):
        with pytest.raises(ConfigError) as e:
            MaskGITSamplerConfig(**bad)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="steps"):  # T > N: refused without known tokens
        sample(model, tok, LABELS, MaskGITSamplerConfig(steps=17), gen(0))
    with pytest.raises(ArgenError, match="known"):
        sample(model, tok, LABELS, MaskGITSamplerConfig(), gen(0), known=(torch.zeros(B, 9), torch.ones(B, 9)))
    with pytest.raises(ConfigError, match="grid"):
        sample(tiny_maskgit(grid=(2, 8)), tok, LABELS, MaskGITSamplerConfig(), gen(0))


# ------------------------------------------------------------------------------------ training


def test_tokens_from_images_are_the_flattened_token_map(tok):
    images = random_images(B)
    tokens = MaskGIT.tokens_from_images(tok, images)
    assert torch.equal(tokens["idx_BN"], tok.encode(images).flatten(1)) and tokens["idx_BN"].shape == (B, N)


def test_loss_is_cross_entropy_on_masked_positions_only(monkeypatch):
    model = tiny_maskgit().train()
    idx = torch.randint(V, (B, N), generator=gen(0))
    mask = torch.rand(B, N, generator=gen(1)) < 0.4
    mask[:, 0] = True
    fixed_logits = torch.randn(B, N, V, generator=gen(2))
    monkeypatch.setattr(model, "draw_mask", lambda *a: mask)
    spy = Spy(model)
    model.register_forward_hook(lambda module, args, out: fixed_logits.clone())  # the loss sees these logits

    loss, metrics = model.loss({"idx_BN": idx}, LABELS)
    # (not torch.testing.assert_close: its first call imports torch.distributed, over a second)
    assert abs(float(loss) - float(F.cross_entropy(fixed_logits[mask], idx[mask]))) < 1e-6
    # The model saw MASK exactly at the masked positions and the true tokens elsewhere.
    seen = spy.calls[0][0]
    assert torch.equal(seen[mask], torch.full_like(idx[mask], MASK)) and torch.equal(seen[~mask], idx[~mask])
    assert metrics["mask_ratio"] == pytest.approx(float(mask.float().mean()))
    # Targets and logits at unmasked positions do not matter; at masked positions they do.
    other_idx = torch.where(mask, idx, (idx + 1) % V)
    assert torch.equal(model.loss({"idx_BN": other_idx}, LABELS)[0], loss)
    fixed_logits[~mask] += torch.randn(int((~mask).sum()), V) * 5
    assert torch.equal(model.loss({"idx_BN": idx}, LABELS)[0], loss)
    fixed_logits[mask] += 1.0 * torch.randn(int(mask.sum()), V)
    assert not torch.equal(model.loss({"idx_BN": idx}, LABELS)[0], loss)


@pytest.mark.parametrize("schedule, mean", [("cosine", 2 / math.pi), ("linear", 0.5), ("square", 2 / 3)])
def test_training_mask_ratio_follows_the_schedule_and_masks_at_least_one(schedule, mean):
    model = tiny_maskgit(mask_schedule=schedule)
    torch.manual_seed(0)
    mask = model.draw_mask(4000, N, "cpu")
    per_image = mask.sum(1)
    assert (per_image >= 1).all() and (per_image <= N).all()
    # ceil(ratio * N) adds about half a token on average.
    assert abs(float(per_image.float().mean()) / N - (mean + 0.5 / N)) < 0.02
    assert mask.float().mean(0).min() > 0.5 * mask.float().mean()  # positions are drawn uniformly


def test_class_dropout_to_the_null_class_in_training_only(monkeypatch):
    model = tiny_maskgit(label_drop=0.5).train()
    spy = spy_forward(model)
    idx = torch.randint(V, (64, N), generator=gen(0))
    labels = torch.arange(64) % 3
    torch.manual_seed(0)
    model.loss({"idx_BN": idx}, labels)
    used = spy.calls[-1][1]
    dropped = used == NULL
    assert 10 < int(dropped.sum()) < 54 and torch.equal(used[~dropped], labels[~dropped])
    model.eval()
    model.loss({"idx_BN": idx}, labels)
    assert torch.equal(spy.calls[-1][1], labels)


def test_loss_backward_reaches_every_parameter():
    model = tiny_maskgit(dropout=0.1, label_drop=0.1, label_smoothing=0.1).train()
    torch.manual_seed(0)
    loss, metrics = model.loss({"idx_BN": torch.randint(V, (B, N), generator=gen(0))}, LABELS)
    loss.backward()
    assert torch.isfinite(loss) and math.isfinite(metrics["ce"]) and 0 <= metrics["acc_masked"] <= 1
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def rule(labels: torch.Tensor) -> torch.Tensor:
    """The toy data set: class c always maps to the token map (5 c + position) mod V."""
    return (5 * labels[:, None] + torch.arange(N)) % V


def train_on_rule(seed: int = 0, steps: int = 150, lr: float = 5e-3) -> MaskGIT:
    """A tiny MaskGIT trained with Adam and cosine decay on ``rule``. The Adam is written out
    because constructing a torch.optim optimizer first imports torch._dynamo (1-3 s)."""
    torch.manual_seed(seed)
    model = MaskGIT(tiny_maskgit_config(label_drop=0.1)).train()
    params = list(model.parameters())
    m1, m2 = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    for step in range(1, steps + 1):
        labels = torch.randint(3, (16,))
        loss, _ = model.loss({"idx_BN": rule(labels)}, labels)
        grads = torch.autograd.grad(loss, params)
        lr_t = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        with torch.no_grad():
            for p, g, a, b in zip(params, grads, m1, m2):
                a.lerp_(g, 0.1)
                b.lerp_(g * g, 0.001)
                p -= lr_t * (a / (1 - 0.9**step)) / ((b / (1 - 0.999**step)).sqrt() + 1e-8)
    return model.eval()


def test_training_on_a_deterministic_rule_makes_greedy_sampling_reproduce_it(tok):
    model = train_on_rule()
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    # One step predicts every token from the class alone; more steps also condition on committed tokens.
    for T in (8, 4, 1):
        out = sample(model, tok, labels, MaskGITSamplerConfig(steps=T, top_k=1), gen(0))
        assert torch.equal(out.view(-1, N), rule(labels)), T


def test_checkpoint_round_trip_gives_identical_weights_and_samples(model, tok, tmp_path):
    save_model(tmp_path / "maskgit", model)
    loaded = load_model(tmp_path / "maskgit")
    assert isinstance(loaded, MaskGIT) and loaded.config == model.config and not loaded.training
    a, b = model.state_dict(), loaded.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    cfg = MaskGITSamplerConfig(cfg=1.5, top_k=8)
    assert torch.equal(sample(model, tok, LABELS, cfg, gen(3)), sample(loaded, tok, LABELS, cfg, gen(3)))
