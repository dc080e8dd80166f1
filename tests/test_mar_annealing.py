"""MAR head-step annealing (DiSA): the per-AR-step head step counts, the sampler that follows them, the knobs."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from helpers import tiny_kl, tiny_mar

from argen.cli import main
from argen.errors import ConfigError
from argen.pipeline import Pipeline
from argen.sampling import knobs
from argen.sampling.mar import HEAD_SCHEDULES, MARSamplerConfig, head_step_counts
from argen.sampling.mar import sample as sample_mar

CPU = ["--threads", "1", "--quiet", "--device", "cpu"]


def _counts(a: int, b: int, T: int, schedule: str = "linear") -> list[int]:
    return head_step_counts(MARSamplerConfig(head_steps=a, head_steps_end=b, head_schedule=schedule), T)


class HeadCalls:
    """Calls of the head network and the rows of each call (a forward hook, as ``argen bench`` counts)."""

    def __init__(self, model):
        self.calls, self.rows = 0, []
        self.handle = model.counted_modules()["head_calls"].register_forward_hook(self._hook)

    def _hook(self, module, args, out):
        self.calls += 1
        self.rows.append(args[0].shape[0])


# ---- the schedule -------------------------------------------------------------------------------------

def test_constant_by_default_and_for_a_single_ar_step():
    assert MARSamplerConfig().head_steps_end == 0
    assert head_step_counts(MARSamplerConfig(head_steps=7), 5) == [7] * 5
    assert _counts(50, 5, 1) == [50]  # the first AR step is also the last: it runs head_steps


def test_linear_closed_form():
    assert _counts(8, 2, 4) == [8, 6, 4, 2]
    assert _counts(50, 5, 16) == [50 - 3 * t for t in range(16)]  # 45 / 15 = 3 fewer per AR step
    assert _counts(2, 8, 4) == [2, 4, 6, 8]  # increasing works too
    assert _counts(6, 6, 9) == [6] * 9
    assert _counts(4, 1, 3) == [4, 3, 1]  # 2.5 rounds up


def test_cosine_closed_form():
    # f(r) = (1 - cos(pi r)) / 2 at r = 0, 1/3, 2/3, 1 is 0, 1/4, 3/4, 1: 8 - 6 f = 8, 6.5, 3.5, 2 (halves up)
    assert _counts(8, 2, 4, "cosine") == [8, 7, 4, 2]
    # flat at both ends: slower than linear early, faster late
    cos, lin = _counts(50, 5, 16, "cosine"), _counts(50, 5, 16)
    assert cos[0] == 50 and cos[-1] == 5 and cos[1] > lin[1] and cos[-2] < lin[-2]
    assert cos == [math.floor(50 - 45 * (1 - math.cos(math.pi * t / 15)) / 2 + 0.5) for t in range(16)]


@pytest.mark.parametrize("schedule", sorted(HEAD_SCHEDULES))
@pytest.mark.parametrize("a,b,T", [(50, 5, 16), (8, 1, 16), (3, 9, 7), (100, 2, 64), (2, 1, 2)])
def test_every_schedule_starts_at_head_steps_ends_at_head_steps_end_and_is_monotone(schedule, a, b, T):
    n = _counts(a, b, T, schedule)
    assert len(n) == T and n[0] == a and n[-1] == b and all(isinstance(x, int) for x in n)
    steps = [y - x for x, y in itertools.pairwise(n)]
    assert all(d <= 0 for d in steps) if b < a else all(d >= 0 for d in steps)


# ---- the sampler --------------------------------------------------------------------------------------

@pytest.mark.parametrize("head", ["diffusion", "flow"])
def test_head_steps_end_equal_to_head_steps_is_the_constant_sampler(head):
    model = tiny_mar(head=head)
    labels = torch.tensor([0, 1, 2, 1])
    base = MARSamplerConfig(ar_steps=5, head_steps=4, cfg=1.5)
    const = sample_mar(model, None, labels, base, torch.Generator().manual_seed(7))
    same = sample_mar(model, None, labels, base.replace(head_steps_end=4, head_schedule="cosine"),
                      torch.Generator().manual_seed(7))
    annealed = sample_mar(model, None, labels, base.replace(head_steps_end=1), torch.Generator().manual_seed(7))
    assert torch.equal(same, const)
    assert not torch.allclose(annealed, const, atol=1e-4)  # fewer steps late: other tokens


@pytest.mark.parametrize("head,solver", [("diffusion", "euler"), ("flow", "euler"), ("flow", "heun")])
@pytest.mark.parametrize("cfg", [0.0, 1.5])
def test_each_ar_step_runs_the_head_its_own_number_of_steps(head, solver, cfg):
    model = tiny_mar(head=head)
    counter = HeadCalls(model)
    config = MARSamplerConfig(ar_steps=5, head_steps=6, head_steps_end=2, cfg=cfg, solver=solver)
    out = sample_mar(model, tiny_kl(), torch.tensor([0, 1, 2]), config, torch.Generator().manual_seed(0))
    assert out.shape == (3, 3, 4, 4) and torch.isfinite(out).all()
    n = _counts(6, 2, 5)
    assert n == [6, 5, 4, 3, 2]
    calls = [x if solver == "euler" else 2 * x - 1 for x in n]
    assert counter.calls == sum(calls)  # 20 (euler) or 35 (heun), not 5 x 6
    # Within an AR step every call has the same rows (its tokens of 3 images, x2 with CFG); the steps
    # together draw each of the 16 tokens of each image once.
    per_step, i = [], 0
    for c in calls:
        assert len(set(counter.rows[i:i + c])) == 1
        per_step.append(counter.rows[i])
        i += c
    assert sum(per_step) == 16 * 3 * (2 if cfg else 1)


def test_an_inpainting_region_with_fewer_tokens_than_ar_steps_anneals_over_its_own_steps():
    model = tiny_mar()
    counter = HeadCalls(model)
    given = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    known = torch.ones(2, 4, 4, dtype=torch.bool)
    known[:, 3, 1:] = False  # 3 unknown tokens, 8 AR steps asked: 3 steps run
    config = MARSamplerConfig(ar_steps=8, head_steps=9, head_steps_end=1)
    out = sample_mar(model, None, torch.tensor([0, 1]), config, torch.Generator().manual_seed(0), known=(given, known))
    assert counter.calls == 9 + 5 + 1 == sum(head_step_counts(config, 3))
    assert torch.equal(out[:, :, :3], given[:, :, :3])


def test_pipeline_takes_the_knobs_as_overrides():
    pipe = Pipeline(tiny_kl(), tiny_mar(head="flow"), {"ar_steps": 4, "head_steps": 5})
    counter = HeadCalls(pipe.generator)
    pipe([0, 1], seed=0, head_steps_end=1, head_schedule="cosine")
    assert counter.calls == sum(_counts(5, 1, 4, "cosine"))
    counter.calls = 0
    pipe([0, 1], seed=0, schedule="linear")
    assert counter.calls == 4 * 5


# ---- bad values ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value,match", [
    ("head_steps_end", -1, "head_steps_end must be >= 1, or 0"),
    ("head_schedule", "exp", "head_schedule must be one of linear, cosine"),
    ("schedule", "zigzag", "schedule must be one of cosine"),
])
def test_bad_values_are_one_line_config_errors(field, value, match):
    with pytest.raises(ConfigError, match=match) as e:
        MARSamplerConfig(**{field: value})
    assert "\n" not in str(e.value)


def test_a_diffusion_head_refuses_more_steps_than_it_was_trained_with():
    config = MARSamplerConfig(ar_steps=2, head_steps=3, head_steps_end=51)  # tiny_mar trains 50 steps
    with pytest.raises(ConfigError, match=r"steps \(51\) must be <= the head's train_steps \(50\)") as e:
        sample_mar(tiny_mar(), None, torch.tensor([0]), config)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="ar_steps must be an int >= 1"):
        head_step_counts(MARSamplerConfig(), 0)


def test_the_fields_are_knobs():
    k = knobs(MARSamplerConfig)
    assert {"head_steps_end", "head_schedule", "schedule", "solver"} <= k.keys()
    assert ((k["head_steps_end"].default, k["head_schedule"].default, k["schedule"].default, k["solver"].default)
            == (0, "linear", "cosine", "euler"))


# ---- the command line ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("mar-anneal")
    Pipeline(tiny_kl(), tiny_mar(), {"ar_steps": 4, "head_steps": 6, "cfg": 1.0}).save_pretrained(root / "gen")
    return root


def test_cli_sample_with_annealed_head_steps(checkpoint, capsys):
    out = checkpoint / "s"
    args = ["sample", "--checkpoint", str(checkpoint / "gen"), "--labels", "0,2", "--seed", "3", *CPU]
    assert main([*args, "--head-steps-end", "2", "--head-schedule", "cosine", "--schedule", "linear",
                 "--out", str(out)]) == 0
    assert (checkpoint / "s.png").is_file() and (checkpoint / "s.npz").is_file()
    assert main([*args, "--head-steps-end", "2", "--out", str(checkpoint / "t")]) == 0
    assert main([*args, "--out", str(checkpoint / "u")]) == 0
    assert main([*args, "--head-steps-end", "2", "--solver", "heun", "--out", str(checkpoint / "v")]) == 0
    import numpy as np

    with np.load(checkpoint / "t.npz") as t, np.load(checkpoint / "u.npz") as u:
        assert not np.array_equal(t["images"], u["images"])  # the knob reached the sampler


@pytest.mark.parametrize("flag,value,match", [
    ("--head-steps-end", "-2", "head_steps_end must be >= 1, or 0"),
    ("--head-schedule", "zigzag", "head_schedule must be one of"),
    ("--schedule", "zigzag", "schedule must be one of"),
    ("--solver", "rk4", "solver must be one of euler, heun"),
])
def test_cli_bad_values_exit_2_with_one_line(checkpoint, capsys, flag, value, match):
    code = main(["sample", "--checkpoint", str(checkpoint / "gen"), "--labels", "0", flag, value,
                 "--out", str(checkpoint / "bad"), *CPU])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and match in err, err
    assert not (checkpoint / "bad.png").exists()
