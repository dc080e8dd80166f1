"""Diffusion and flow heads: they learn a conditional 2-D mixture, count their network calls, keep layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import read_layout

from argen.errors import ConfigError
from argen.generators.heads import AdaLNMLP, DiffusionHead, FlowHead, make_head, respaced_timesteps

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
    check_moments(lambda c: diffusion.sample(c, steps=50, generator=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("solver, steps", [("euler", 16), ("heun", 8)])
def test_flow_head_samples_the_conditional_mixture(flow, solver, steps):
    check_moments(lambda c: flow.sample(c, steps=steps, solver=solver, generator=torch.Generator().manual_seed(1)))


def test_moment_check_can_fail(flow):
    # Swapped conditions give the other class's moments: the check above is not vacuous.
    def swapped(c):
        return flow.sample(c.flip(1), steps=16, generator=torch.Generator().manual_seed(1))

    with pytest.raises(AssertionError):
        check_moments(swapped)


def test_temperature_scales_the_spread(flow):
    c = torch.nn.functional.one_hot(torch.full((2000,), 1), 2).float()
    cold = flow.sample(c, steps=16, temperature=0.3, generator=torch.Generator().manual_seed(1))
    warm = flow.sample(c, steps=16, temperature=1.0, generator=torch.Generator().manual_seed(1))
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
    assert d.sample(c, steps=7, cfg=cfg).shape == (5, 3)
    assert len(calls) == 7 == d.net_calls(7) and set(calls) == {len(c)}  # CFG: one call on 2N rows
    f = FlowHead(3, 8, 16, 1)
    calls = count_calls(f.net)
    f.sample(c, steps=4, cfg=cfg)
    assert len(calls) == 4 == f.net_calls(4)
    f.sample(c, steps=4, cfg=cfg, solver="heun")
    assert len(calls) - 4 == 7 == f.net_calls(4, "heun")


def test_guidance_and_seeds():
    torch.manual_seed(0)
    head = DiffusionHead(3, 8, 16, 1, train_steps=100)
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.3)
    c, u = torch.randn(4, 8), torch.randn(4, 8)
    a = head.sample(c, steps=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, head.sample(c, steps=5, generator=torch.Generator().manual_seed(0)))
    assert not torch.allclose(a, head.sample(torch.cat([c, u]), steps=5, cfg=2.0,
                                             generator=torch.Generator().manual_seed(0)))
    # A per-row weight of 0 everywhere is the conditional model alone, row for row.
    zero_w = head.sample(torch.cat([c, u]), steps=5, cfg=torch.zeros(4), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(zero_w, a, atol=1e-6)


def test_learned_sigma_head_trains_and_samples():
    head = DiffusionHead(2, 2, 32, 1, train_steps=100, learn_sigma=True)
    assert head.net.final_layer.linear.out_features == 4
    x, c = toy_batch(64, torch.Generator().manual_seed(0))
    loss = head.loss(x, c)
    loss.backward()
    assert torch.isfinite(loss) and head.net.final_layer.linear.weight.grad is not None
    assert torch.isfinite(head.sample(c, steps=10)).all()


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
        DiffusionHead(2, 2, 8, 1, train_steps=10).sample(torch.randn(3, 2), steps=11)
    with pytest.raises(ConfigError, match="solver"):
        FlowHead(2, 2, 8, 1).sample(torch.randn(3, 2), solver="rk4")
    with pytest.raises(ConfigError, match="even"):
        FlowHead(2, 2, 8, 1).sample(torch.randn(3, 2), cfg=1.0)
    with pytest.raises(ConfigError, match="temperature"):
        FlowHead(2, 2, 8, 1).sample(torch.randn(3, 2), temperature=0)
    with pytest.raises(ConfigError, match="clip_x0"):
        DiffusionHead(2, 2, 8, 1, clip_x0=0.0)
