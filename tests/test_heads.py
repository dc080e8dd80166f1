"""Diffusion and flow heads: they learn a conditional 2-D mixture, count their network calls, keep layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import read_layout

from argen.errors import ConfigError
from argen.generators.heads import AdaLNMLP, DiffusionHead, FlowHead, make_head
from argen.sampling.head import sample_head
from argen.schedulers.ddpm import cosine_alphas_cumprod, respaced_timesteps

LAYOUTS = Path(__file__).parent / "data" / "layouts"


def toy_batch(n: int, g: torch.Generator):
    """Class 0: two blobs at (+-2, 0), std 0.3; class 1: one blob at (0, 2), std 0.5. cond = one-hot class."""
    cls = torch.randint(2, (n,), generator=g)
    side = torch.randint(2, (n,), generator=g) * 4.0 - 2.0
    centre = torch.where(cls[:, None] == 0, torch.stack([side, torch.zeros(n)], 1), torch.tensor([0.0, 2.0]))
    std = torch.where(cls == 0, 0.3, 0.5)[:, None]
    return centre + std * torch.randn(n, 2, generator=g), torch.nn.functional.one_hot(cls, 2).float()


TRUE_MEAN = {0: torch.tensor([0.0, 0.0]), 1: torch.tensor([0.0, 2.0])}
TRUE_VAR = {0: torch.tensor([4.09, 0.09]), 1: torch.tensor([0.25, 0.25])}


def train_head(head, steps: int = 400, seed: int = 0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(head.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        x, c = toy_batch(256, g)
        loss = head.loss(x, c)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return head.eval()


@pytest.fixture(scope="module")
def diffusion():
    return train_head(DiffusionHead(2, 2, 64, 2, train_steps=1000, batch_mul=2, clip_x0=5.0))


@pytest.fixture(scope="module")
def flow():
    return train_head(FlowHead(2, 2, 64, 2, batch_mul=2))


def check_moments(sample_fn):
    for k in (0, 1):
        cond = torch.nn.functional.one_hot(torch.full((3000,), k), 2).float()
        x = sample_fn(cond)
        assert torch.allclose(x.mean(0), TRUE_MEAN[k], atol=0.2), (k, x.mean(0))
        assert torch.allclose(x.var(0), TRUE_VAR[k], rtol=0.3, atol=0.05), (k, x.var(0))
        if k == 0:  # two modes, nothing in between
            assert (x[:, 0].abs() > 1).float().mean() > 0.9


def test_diffusion_head_samples_the_conditional_mixture(diffusion):
    check_moments(lambda c: sample_head(diffusion, c, steps=50, generator=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("solver, steps", [("euler", 16), ("heun", 8)])
def test_flow_head_samples_the_conditional_mixture(flow, solver, steps):
    check_moments(lambda c: sample_head(flow, c, steps=steps, solver=solver, generator=torch.Generator().manual_seed(1)))


def test_moment_check_can_fail(flow):
    # Swapped conditions give the other class's moments: the check above is not vacuous.
    def swapped(c):
        return sample_head(flow, c.flip(1), steps=16, generator=torch.Generator().manual_seed(1))

    with pytest.raises(AssertionError):
        check_moments(swapped)


def test_temperature_scales_the_spread(flow):
    c = torch.nn.functional.one_hot(torch.full((2000,), 1), 2).float()
    cold = sample_head(flow, c, steps=16, temperature=0.3, generator=torch.Generator().manual_seed(1))
    warm = sample_head(flow, c, steps=16, temperature=1.0, generator=torch.Generator().manual_seed(1))
    assert cold.var(0).sum() < 0.5 * warm.var(0).sum()


def count_calls(module):
    calls = []
    module.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    return calls


@pytest.mark.parametrize("cfg", [0.0, 1.5])
def test_network_calls_per_sample(cfg):
    c = torch.randn(10 if cfg else 5, 8)
    d = DiffusionHead(3, 8, 16, 1, train_steps=100)
    calls = count_calls(d.net)
    assert sample_head(d, c, steps=7, cfg=cfg).shape == (5, 3)
    assert len(calls) == 7 == d.net_calls(7) and set(calls) == {len(c)}  # CFG: one call on 2N rows
    f = FlowHead(3, 8, 16, 1)
    calls = count_calls(f.net)
    sample_head(f, c, steps=4, cfg=cfg)
    assert len(calls) == 4 == f.net_calls(4)
    sample_head(f, c, steps=4, cfg=cfg, solver="heun")
    assert len(calls) - 4 == 7 == f.net_calls(4, "heun")


def test_guidance_and_seeds():
    torch.manual_seed(0)
    head = DiffusionHead(3, 8, 16, 1, train_steps=100)
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.3)
    c, u = torch.randn(4, 8), torch.randn(4, 8)
    a = sample_head(head, c, steps=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, sample_head(head, c, steps=5, generator=torch.Generator().manual_seed(0)))
    assert not torch.allclose(a, sample_head(head, torch.cat([c, u]), steps=5, cfg=2.0,
                                             generator=torch.Generator().manual_seed(0)))
    # A per-row weight of 0 everywhere is the conditional model alone, row for row.
    zero_w = sample_head(head, torch.cat([c, u]), steps=5, cfg=torch.zeros(4), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(zero_w, a, atol=1e-6)



@pytest.mark.parametrize("kind", ["diffusion", "flow"])
def test_guided_rows_follow_the_rows_not_the_weight(kind):
    # MAR outside its guidance interval: 2N rows [cond; uncond] with weight 0 give N tokens, the cond half's.
    torch.manual_seed(0)
    head = make_head(kind, 3, 8, 16, 1, train_steps=100)
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.3)
    c, u = torch.randn(4, 8), torch.randn(4, 8)
    alone = sample_head(head, c, steps=5, generator=torch.Generator().manual_seed(0))
    calls = count_calls(head.net)
    zero = sample_head(head, torch.cat([c, u]), steps=5, cfg=0.0, guided=True,
                       generator=torch.Generator().manual_seed(0))
    assert zero.shape == (4, 3) and set(calls) == {8}
    assert torch.allclose(zero, alone, atol=1e-6)
    with pytest.raises(ConfigError, match="even"):
        sample_head(head, torch.randn(3, 8), steps=5, guided=True)
    with pytest.raises(ConfigError, match="guided=False"):
        sample_head(head, torch.cat([c, u]), steps=5, cfg=1.0, guided=False)


# ---- the samplers against a closed form: a Gaussian target and its exact network --------------------

class GaussianOracle(torch.nn.Module):
    """The exact optimal network of a head for the target x0 ~ N(mean_KC[k], diag(std_KC[k]^2)), k = the class of
    a one-hot condition: E[eps | x_t] (diffusion) or E[noise - x0 | x_t] (flow). With it a sampler's only errors
    are its own (discretisation), so its samples must have the target's mean and variance."""

    def __init__(self, kind: str, mean_KC: torch.Tensor, std_KC: torch.Tensor, train_steps: int):
        super().__init__()
        self.cond_embed = torch.nn.Linear(len(mean_KC), len(mean_KC), bias=False)  # the identity: one-hot rows
        torch.nn.init.eye_(self.cond_embed.weight)
        self.kind, self.train_steps = kind, train_steps
        self.mean_KC, self.var_KC = mean_KC.double(), std_KC.double() ** 2
        self.abar = cosine_alphas_cumprod(train_steps)

    def forward(self, x_NC, t_N, c_ND=None, *, cond_emb_NW=None):
        onehot = (self.cond_embed(c_ND) if cond_emb_NW is None else cond_emb_NW).double()
        mu, var, x, t = onehot @ self.mean_KC, onehot @ self.var_KC, x_NC.double(), float(t_N[0])
        if self.kind == "diffusion":  # x_t = a x0 + b eps: E[eps | x_t] = b (x_t - a mu) / (a^2 var + b^2)
            abar = self.abar[round(t)]
            a, b = abar.sqrt(), (1 - abar).sqrt()
            out = b * (x - a * mu) / (a * a * var + b * b)
        else:  # x_t = (1 - s) x0 + s noise, s = t / train_steps: E[noise - x0 | x_t] by Gaussian conditioning
            s = t / self.train_steps
            out = (s - (1 - s) * var) * (x - (1 - s) * mu) / ((1 - s) ** 2 * var + s * s) - mu
        return out.to(x_NC.dtype)


GAUSS_MEAN = torch.tensor([[1.5, -0.5], [-1.0, 0.5]])
GAUSS_STD = torch.tensor([[0.5, 2.0], [0.5, 2.0]])  # the same per channel: guidance keeps a Gaussian (below)


def oracle_head(kind: str, mean_KC=GAUSS_MEAN, std_KC=GAUSS_STD):
    head = DiffusionHead(2, 2, 8, 1, train_steps=1000) if kind == "diffusion" else FlowHead(2, 2, 8, 1)
    head.net = GaussianOracle(kind, mean_KC, std_KC, head.train_steps)
    return head


def check_gaussian(x_NC: torch.Tensor, mean_C: torch.Tensor, std_C: torch.Tensor):
    """Mean within 4 standard errors; variance within 6% (4 standard errors of a variance at n = 20000 is 5.7%)."""
    n = x_NC.shape[0]
    assert ((x_NC.mean(0) - mean_C).abs() < 4 * std_C / n ** 0.5).all(), (x_NC.mean(0), mean_C)
    assert ((x_NC.var(0) / std_C**2 - 1).abs() < 0.06).all(), (x_NC.std(0), std_C)


# Diffusion: ancestral steps with the posterior variance (no learned variance) underestimate the variance
# by O(1 / steps) (3% in std at 100 of 1000 steps), so the full chain; flow: Euler's error is O(1 / steps).
GAUSS_SAMPLERS = [("diffusion", 1000, "euler"), ("flow", 200, "euler"), ("flow", 50, "heun")]


@pytest.mark.parametrize("kind, steps, solver", GAUSS_SAMPLERS)
def test_head_samplers_match_a_gaussian_target_in_closed_form(kind, steps, solver):
    head, n = oracle_head(kind), 20000
    c = torch.nn.functional.one_hot(torch.zeros(n, dtype=torch.long), 2).float()
    u = torch.nn.functional.one_hot(torch.ones(n, dtype=torch.long), 2).float()
    x = sample_head(head, c, steps=steps, solver=solver, generator=torch.Generator().manual_seed(0))
    check_gaussian(x, GAUSS_MEAN[0], GAUSS_STD[0])
    # Guidance: (1 + w) score_cond - w score_uncond of two Gaussians of equal variance is the score of the
    # Gaussian with mean (1 + w) mean_cond - w mean_uncond, at every t (eps and velocity are affine in it).
    w = 1.0
    xg = sample_head(head, torch.cat([c, u]), steps=steps, cfg=w, solver=solver,
                     generator=torch.Generator().manual_seed(1))
    check_gaussian(xg, (1 + w) * GAUSS_MEAN[0] - w * GAUSS_MEAN[1], GAUSS_STD[0])


@pytest.mark.parametrize("kind, steps, solver", GAUSS_SAMPLERS)
def test_gaussian_check_can_fail(kind, steps, solver):
    # A network exact for a target 0.1 std off in mean, or 10% off in std, fails the closed-form check.
    c = torch.nn.functional.one_hot(torch.zeros(20000, dtype=torch.long), 2).float()
    for mean_KC, std_KC in ((GAUSS_MEAN + 0.1 * GAUSS_STD, GAUSS_STD), (GAUSS_MEAN, 1.1 * GAUSS_STD)):
        x = sample_head(oracle_head(kind, mean_KC, std_KC), c, steps=steps, solver=solver,
                        generator=torch.Generator().manual_seed(0))
        with pytest.raises(AssertionError):
            check_gaussian(x, GAUSS_MEAN[0], GAUSS_STD[0])

def test_learned_sigma_head_trains_and_samples():
    head = DiffusionHead(2, 2, 32, 1, train_steps=100, learn_sigma=True)
    assert head.net.final_layer.linear.out_features == 4
    x, c = toy_batch(64, torch.Generator().manual_seed(0))
    loss = head.loss(x, c)
    loss.backward()
    assert torch.isfinite(loss) and head.net.final_layer.linear.weight.grad is not None
    assert torch.isfinite(sample_head(head, c, steps=10)).all()


def test_respacing_keeps_both_ends_and_the_official_mlp_layout():
    assert respaced_timesteps(1000, 100)[:3] == [0, 10, 20] and respaced_timesteps(1000, 100)[-1] == 999
    layout = {k.removeprefix("diffloss.net."): v[0] for k, v in read_layout(LAYOUTS / "mar-b.tsv").items()
              if k.startswith("diffloss.net.")}
    ours = {k: tuple(v.shape) for k, v in AdaLNMLP(16, 1024, 32, 768, 6).state_dict().items()}
    assert ours == layout


def test_bad_arguments_name_themselves():
    with pytest.raises(ConfigError, match="kind must be one of"):
        make_head("gan", 2, 2, 8, 1)
    with pytest.raises(ConfigError, match="steps"):
        sample_head(DiffusionHead(2, 2, 8, 1, train_steps=10), torch.randn(3, 2), steps=11)
    with pytest.raises(ConfigError, match="solver"):
        sample_head(FlowHead(2, 2, 8, 1), torch.randn(3, 2), steps=4, solver="rk4")
    with pytest.raises(ConfigError, match="even"):
        sample_head(FlowHead(2, 2, 8, 1), torch.randn(3, 2), steps=4, cfg=1.0)
    with pytest.raises(ConfigError, match="temperature"):
        sample_head(FlowHead(2, 2, 8, 1), torch.randn(3, 2), steps=4, temperature=0)
    with pytest.raises(ConfigError, match="clip_x0"):
        DiffusionHead(2, 2, 8, 1, clip_x0=0.0)
