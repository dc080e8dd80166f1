"""Collaborative decoding (CoDe) for VAR, ``argen.sampling.collaborative``, and VAR's ``cfg_scales``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_msvq, tiny_var

from argen.cli import main
from argen.errors import ArgenError, ConfigError, TokenMismatchError
from argen.images import to_uint8
from argen.pipeline import Pipeline
from argen.sampling.collaborative import CoDeSamplerConfig
from argen.sampling.collaborative import sample as code
from argen.sampling.next_scale import VARSamplerConfig
from argen.sampling.next_scale import sample as plain

LABELS = torch.tensor([0, 1, 2, 1, 0, 2])
K = 3  # the tiny models' scales: 1, 2, 4
SETTINGS = [{}, {"cfg": 1.5}, {"cfg": 2.0, "cfg_schedule": "constant", "top_k": 6, "temperature": 0.9}]


@pytest.fixture(scope="module")
def tok():
    return tiny_msvq()


@pytest.fixture(scope="module")
def large():
    return tiny_var()


@pytest.fixture(scope="module")
def small():
    """Another VAR on the same tokenizer: shallower, narrower, other weights."""
    return tiny_var(seed=5, depth=1, width=16)


def gen(seed: int = 3) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> list[bool]:
    return [torch.equal(x, y) for x, y in zip(a, b, strict=True)]


@pytest.mark.parametrize("settings", SETTINGS)
def test_switch_at_the_last_scale_is_the_plain_sampler(tok, large, small, settings):
    want = plain(large, tok, LABELS, VARSamplerConfig(**settings), gen())
    for refiner in (None, small):  # the refiner, given or not, draws nothing
        got = code(large, tok, LABELS, CoDeSamplerConfig(switch_scale=K, **settings), gen(), refiner=refiner)
        assert same(got, want) == [True] * K
    # the seed matters: the equality above is not two constant outputs
    assert not all(same(plain(large, tok, LABELS, VARSamplerConfig(**settings), gen(4)), want))


@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("switch", range(K))
def test_the_large_model_as_its_own_refiner_gives_the_plain_tokens(tok, large, settings, switch):
    """The hand-over (a fresh cache, the coarse scales re-encoded in one block-causal call) loses nothing."""
    want = plain(large, tok, LABELS, VARSamplerConfig(**settings), gen())
    got = code(large, tok, LABELS, CoDeSamplerConfig(switch_scale=switch, **settings), gen(), refiner=large)
    assert same(got, want) == [True] * K


@pytest.mark.parametrize("settings", [*SETTINGS, {"cfg": 1.5, "cfg_scales": 2}])
@pytest.mark.parametrize("switch", range(1, K))
def test_the_refiner_continues_the_large_models_scales(tok, large, small, settings, switch):
    """Scales < J are the large model's; the rest are what the refiner alone draws with those scales
    forced (the VAR sampler's ``known``, scale by scale with its own cache): the prefill is exact."""
    mixed = code(large, tok, LABELS, CoDeSamplerConfig(switch_scale=switch, **settings), gen(), refiner=small)
    mine = plain(large, tok, LABELS, VARSamplerConfig(**settings), gen())
    assert same(mixed, mine)[:switch] == [True] * switch
    assert not any(same(mixed, mine)[switch:])  # the refiner did draw the fine scales
    known = ([*mine[:switch], *mixed[switch:]], [torch.full_like(t, si < switch, dtype=torch.bool)
                                                   for si, t in enumerate(mine)])
    forced = plain(small, tok, LABELS, VARSamplerConfig(**settings), gen(), known=known)
    assert same(mixed, forced) == [True] * K


def test_the_refiner_sees_the_coarse_scales(tok, large, small):
    """Only scale 0 differs (forced), the seed is the same: the refiner's scales differ."""
    cfg = CoDeSamplerConfig(switch_scale=1)
    maps = []
    for token in (0, 1):
        known = ([torch.full((len(LABELS), 1, 1), token)] + [torch.zeros(len(LABELS), p, p, dtype=torch.long)
                                                             for p in (2, 4)],
                 [torch.ones(len(LABELS), 1, 1, dtype=torch.bool)] + [torch.zeros(len(LABELS), p, p, dtype=torch.bool)
                                                                      for p in (2, 4)])
        maps.append(code(large, tok, LABELS, cfg, gen(), known=known, refiner=small))
    assert not torch.equal(maps[0][1], maps[1][1]) and not torch.equal(maps[0][2], maps[1][2])


def test_a_refiner_on_another_tokenizer_is_refused(tok, large):
    for other in (tiny_var(seed=5, vocab_size=32), tiny_var(seed=5, scales=(1, 2, 3, 4)), tiny_var(token_dim=8)):
        with pytest.raises(TokenMismatchError, match="refiner"):
            code(large, tok, LABELS, CoDeSamplerConfig(switch_scale=1), gen(), refiner=other)


def test_one_line_errors(tok, large, small):
    with pytest.raises(ArgenError, match="needs --refiner"):
        code(large, tok, LABELS, CoDeSamplerConfig(switch_scale=1), gen())
    for bad in (K + 1, 100):
        with pytest.raises(ArgenError, match=r"--switch-scale must be in 0\.\.3"):
            code(large, tok, LABELS, CoDeSamplerConfig(switch_scale=bad), gen(), refiner=small)
    with pytest.raises(ConfigError, match="switch_scale must be >= 0"):
        CoDeSamplerConfig(switch_scale=-1)
    with pytest.raises(ArgenError, match="classes"):
        code(large, tok, LABELS, CoDeSamplerConfig(switch_scale=1), gen(), refiner=tiny_var(num_classes=5))
    with pytest.raises(ConfigError, match="cfg_scales"):
        VARSamplerConfig(cfg_scales=-1)


def test_lossy_only_with_a_refiner():
    assert not CoDeSamplerConfig().lossy and CoDeSamplerConfig(refiner="x").lossy


# ---- guidance on the coarse scales only ---------------------------------------------------------------


def batch_per_scale(model, run) -> list[int]:
    """The batch of every transformer call ``run()`` makes (a forward hook on the first block)."""
    seen = []
    h = model.blocks[0].register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    try:
        run()
    finally:
        h.remove()
    return seen


@pytest.mark.parametrize("j", range(1, K))
def test_cfg_scales_is_cfg_interval_at_half_the_batch(tok, large, j):
    """cfg_interval can say "guide scales < J" (its end between the token fractions of scales J-1 and J),
    but the unguided scales still run the unconditional half; cfg_scales = J drops it."""
    c = large.config
    end = c.begin_ends[j][0] / c.seq_len
    interval = VARSamplerConfig(cfg=2.0, cfg_interval=(0.0, end))
    dropped = VARSamplerConfig(cfg=2.0, cfg_scales=j)
    want = plain(large, tok, LABELS, interval, gen())
    got = plain(large, tok, LABELS, dropped, gen())
    assert same(got, want) == [True] * K
    assert not all(same(got, plain(large, tok, LABELS, VARSamplerConfig(cfg=2.0), gen())))  # guidance did stop
    B = len(LABELS)
    assert batch_per_scale(large, lambda: plain(large, tok, LABELS, interval, gen())) == [2 * B] * K
    assert batch_per_scale(large, lambda: plain(large, tok, LABELS, dropped, gen())) == [2 * B] * j + [B] * (K - j)
    # cfg_scales >= K and 0 guide every scale
    full = plain(large, tok, LABELS, VARSamplerConfig(cfg=2.0), gen())
    for all_scales in (0, K, K + 5):
        assert same(plain(large, tok, LABELS, VARSamplerConfig(cfg=2.0, cfg_scales=all_scales), gen()), full) == [True] * K


@pytest.mark.parametrize("cfg_scales, refiner_batches", [(1, [6, 6]), (2, [12, 6]), (3, [12, 12])])
def test_code_refiner_runs_unguided_after_cfg_scales(tok, large, small, cfg_scales, refiner_batches):
    """Switch at scale 1: the refiner's prefill call (scales 0..1) and its scale-2 call carry the
    unconditional half only while guidance lasts."""
    cfg = CoDeSamplerConfig(cfg=1.5, switch_scale=1, cfg_scales=cfg_scales)
    assert batch_per_scale(small, lambda: code(large, tok, LABELS, cfg, gen(), refiner=small)) == refiner_batches


# ---- through the pipeline and the CLI ------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tok, large, small):
    root = tmp_path_factory.mktemp("code")
    Pipeline(tok, large, {"cfg": 1.0}).save_pretrained(root / "large")
    Pipeline(tok, small, {}).save_pretrained(root / "small")
    Pipeline(tiny_msvq(seed=1, codebook_size=32), tiny_var(seed=5, vocab_size=32), {}).save_pretrained(root / "other")
    return root


def test_cli_samples_with_a_refiner(checkpoints, tmp_path, one_thread):
    root = checkpoints
    out = tmp_path / "s"
    assert main(["sample", "--checkpoint", str(root / "large"), "--sampler", "code", "--refiner", str(root / "small"),
                 "--switch-scale", "2", "--labels", "0,2", "--per-label", "3", "--seed", "5", "--quiet",
                 "--threads", "1", "--device", "cpu", "--out", str(out)]) == 0
    got = np.load(out.with_suffix(".npz"))["images"]
    pipe = Pipeline.from_pretrained(root / "large", sampler="code")
    labels = [0, 0, 0, 2, 2, 2]
    assert np.array_equal(got, to_uint8(pipe(labels, seed=5, refiner=str(root / "small"), switch_scale=2)))
    # the refiner mattered: the large model alone gives other images
    assert not np.array_equal(got, to_uint8(pipe(labels, seed=5, switch_scale=K)))


@pytest.mark.parametrize("extra, words", [
    (["--switch-scale", "4"], "--switch-scale must be in 0..3"),
    (["--switch-scale", "-1"], "switch_scale must be >= 0"),
    (["--switch-scale", "1"], "needs --refiner"),
    (["--switch-scale", "1", "--refiner", "{root}/missing"], "missing"),
    (["--switch-scale", "1", "--refiner", "{root}/other"], "does not fit refiner"),
    (["--switch-scale", "1", "--refiner", "{root}/other/tokenizer"], "not a generator"),
])
def test_cli_bad_values_exit_2_with_one_line(checkpoints, tmp_path, capsys, extra, words):
    argv = ["sample", "--checkpoint", str(checkpoints / "large"), "--sampler", "code", "--labels", "0", "--quiet",
            "--threads", "1", "--device", "cpu", "--out", str(tmp_path / "s"),
            *[a.format(root=checkpoints) for a in extra]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and words in err, err
    assert not list(tmp_path.iterdir())


def test_cli_refuses_code_flags_on_the_plain_sampler(checkpoints, tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(checkpoints / "large"), "--switch-scale", "1", "--labels", "0",
                 "--quiet", "--threads", "1", "--device", "cpu", "--out", str(tmp_path / "s")]) == 2
    assert "--switch-scale does not apply to sampler var" in capsys.readouterr().err
