"""Tests for argen.training.trainer (Python API): data order, LR schedule, training, exact resume."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal

import pytest
import torch
from helpers import tiny_msvq, tiny_var, tiny_vq

from argen.checkpoint import load_tensors, load_train_state
from argen.data import load_dataset
from argen.models import load_model
from argen.training.ema import EMA
from argen.training.trainer import GeneratorObjective, TrainConfig, batch_indices, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


# ------------------------------------------------------------------------------------ data order


@pytest.mark.parametrize("n, bs", [(10, 4), (10, 10), (7, 3), (5, 8)])
def test_batch_indices_cover_each_example_once_per_epoch(n, bs):
    epochs = 4
    steps = math.ceil(epochs * n / bs)
    stream = torch.cat([batch_indices(s, bs, n, seed=3) for s in range(steps)])
    assert all(len(batch_indices(s, bs, n, seed=3)) == bs for s in range(steps))
    for e in range(epochs):
        chunk = stream[e * n:(e + 1) * n]
        assert sorted(chunk.tolist()) == list(range(n)), (e, chunk)
    orders = {tuple(stream[e * n:(e + 1) * n].tolist()) for e in range(epochs)}
    if n >= 7:
        assert len(orders) > 1  # a new permutation each epoch, not one order repeated


def test_batch_indices_is_a_pure_function_of_seed_and_step():
    late_first = batch_indices(9, 4, 10, seed=1)
    for s in range(9):
        batch_indices(s, 4, 10, seed=1)
    assert torch.equal(batch_indices(9, 4, 10, seed=1), late_first)
    assert torch.equal(batch_indices(2, 4, 10, seed=1), batch_indices(2, 4, 10, seed=1))
    torch.manual_seed(123)  # the global RNG plays no part
    a = batch_indices(5, 4, 10, seed=1)
    torch.manual_seed(456)
    assert torch.equal(batch_indices(5, 4, 10, seed=1), a)
    assert not torch.equal(batch_indices(0, 10, 10, seed=1), batch_indices(0, 10, 10, seed=2))


# ------------------------------------------------------------------------------------ schedule


def test_lr_warmup_and_cosine_end_values():
    c = TrainConfig(steps=110, lr=1.0, warmup=10, min_lr_ratio=0.05)
    assert math.isclose(c.lr_at(0), 0.1)
    assert math.isclose(c.lr_at(4), 0.5)
    assert math.isclose(c.lr_at(9), 1.0)
    assert math.isclose(c.lr_at(10), 1.0)                      # cosine starts at the peak
    assert math.isclose(c.lr_at(60), 0.05 + 0.95 * 0.5)        # half way
    assert math.isclose(c.lr_at(110), 0.05)                    # the end value
    assert math.isclose(c.lr_at(500), 0.05)                    # and it stays there
    lrs = [c.lr_at(s) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))
    warm = [c.lr_at(s) for s in range(10)]
    assert all(a < b for a, b in itertools.pairwise(warm))
    no_warm = TrainConfig(steps=10, lr=2e-3, warmup=0)
    assert math.isclose(no_warm.lr_at(0), 2e-3)


def test_train_config_validation():
    from argen.errors import ConfigError

    for bad in ({"steps": 0}, {"batch_size": 0}, {"lr": 0.0}, {"ema": 1.0}, {"warmup": -1},
                {"save_every": 0}, {"lr": math.inf}, {"lr": math.nan}, {"ema": math.nan}, {"beta2": math.inf},
                {"grad_clip": math.inf}, {"weight_decay": math.nan}):
        with pytest.raises(ConfigError):
            TrainConfig(**bad)


# ------------------------------------------------------------------------------------ training runs


def read_log(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_training_a_tiny_vq_lowers_the_loss_and_writes_a_checkpoint(digits, tmp_path):
    tok = tiny_vq().train()
    cfg = TrainConfig(steps=30, batch_size=32, lr=3e-3, warmup=2, log_every=1, save_every=100, seed=0)
    metrics = train(tok, digits, cfg, tmp_path, quiet=True)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "train_state.safetensors", "log.jsonl"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    rows = read_log(tmp_path / "log.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 31))
    first = sum(r["loss"] for r in rows[:5]) / 5
    last = sum(r["loss"] for r in rows[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    assert metrics["loss"] == rows[-1]["loss"] and "grad_norm" in metrics
    # The checkpoint is the trained model (no EMA), and it loads on its own.
    loaded = load_model(tmp_path)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in tok.state_dict().items())
    cfg_json = json.loads((tmp_path / "config.json").read_text())
    assert cfg_json["meta"]["step"] == 30 and cfg_json["meta"]["dataset"] == "digits"
    state = load_train_state(tmp_path)
    assert state["step"] == 30 and state["train_config"] == cfg.to_dict()


def build_var_run():
    """Generator + frozen tokenizer, rebuilt identically for every run."""
    tok = tiny_msvq(seed=1)
    var = tiny_var(seed=2, randomize=False, num_classes=10, label_drop=0.1).train()
    return var, GeneratorObjective(var, tok)


def assert_same_tensors(path_a, path_b):
    a, b = load_tensors(path_a), load_tensors(path_b)
    assert set(a) == set(b)
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert differ == []


def var_cfg(steps: int, **kw) -> TrainConfig:
    # warmup > steps: the LR of steps 0..5 does not depend on cfg.steps, so a run stopped at 3 and
    # resumed to 6 follows the same schedule as a straight 6-step run.
    base = {"steps": steps, "batch_size": 16, "lr": 2e-3, "warmup": 8, "ema": 0.9, "weight_decay": 0.05,
                "log_every": 1, "save_every": 100, "seed": 5}
    return TrainConfig(**{**base, **kw})


def test_resume_is_bit_identical_for_a_generator_with_ema(digits, tmp_path):
    var, obj = build_var_run()
    train(var, digits, var_cfg(6), tmp_path / "straight", objective=obj, quiet=True)

    var, obj = build_var_run()
    train(var, digits, var_cfg(3), tmp_path / "split", objective=obj, quiet=True)
    var, obj = build_var_run()  # a fresh process would start from scratch like this
    torch.manual_seed(999)      # and its global RNG would be anywhere: resume restores it
    train(var, digits, var_cfg(6), tmp_path / "split", objective=obj, resume=True, quiet=True)

    assert_same_tensors(tmp_path / "straight" / "model.safetensors", tmp_path / "split" / "model.safetensors")
    a = load_train_state(tmp_path / "straight")
    b = load_train_state(tmp_path / "split")
    assert a["step"] == b["step"] == 6
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())
    assert all(torch.equal(v, b["ema"][k]) for k, v in a["ema"].items())
    # The EMA is what model.safetensors holds, and it differs from the raw weights.
    final = load_tensors(tmp_path / "split" / "model.safetensors")
    assert all(torch.equal(final[k], b["ema"][k]) for k in final)
    assert any(not torch.equal(final[k], b["model"][k]) for k in final)
    # The log has one row per step, no duplicates from the first run.
    la, lb = read_log(tmp_path / "straight" / "log.jsonl"), read_log(tmp_path / "split" / "log.jsonl")
    assert [r["step"] for r in lb] == list(range(1, 7))
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]


def test_resume_after_a_crash_is_bit_identical(digits, tmp_path):
    """A run killed after its step-3 checkpoint (save_every=3), resumed, ends like a straight run."""
    var, obj = build_var_run()
    train(var, digits, var_cfg(6, save_every=3), tmp_path / "straight", objective=obj, quiet=True)

    class Crash(Exception):
        pass

    class CrashingData:
        """The digits, except that fetching the batch of step 5 (index 4) dies."""

        name = "digits"

        def __init__(self, ds):
            self.ds, self.calls = ds, 0

        def __len__(self):
            return len(self.ds)

        def batch(self, idx):
            self.calls += 1
            if self.calls == 5:
                raise Crash()
            return self.ds.batch(idx)

    var, obj = build_var_run()
    with pytest.raises(Crash):
        train(var, CrashingData(digits), var_cfg(6, save_every=3), tmp_path / "split", objective=obj,
              quiet=True)
    assert load_train_state(tmp_path / "split")["step"] == 3
    assert [r["step"] for r in read_log(tmp_path / "split" / "log.jsonl")] == [1, 2, 3, 4]
    var, obj = build_var_run()
    train(var, digits, var_cfg(6, save_every=3), tmp_path / "split", objective=obj, resume=True, quiet=True)
    assert_same_tensors(tmp_path / "straight" / "model.safetensors", tmp_path / "split" / "model.safetensors")
    assert [r["step"] for r in read_log(tmp_path / "split" / "log.jsonl")] == list(range(1, 7))


def test_generator_objective_keeps_the_tokenizer_frozen(digits, tmp_path):
    var, obj = build_var_run()
    tok_before = {k: v.clone() for k, v in obj.tokenizer.state_dict().items()}
    train(var, digits, var_cfg(2), tmp_path, objective=obj, quiet=True)
    assert not obj.tokenizer.training
    assert all(torch.equal(v, obj.tokenizer.state_dict()[k]) for k, v in tok_before.items())
    # Only the generator is saved.
    saved = load_tensors(tmp_path / "model.safetensors")
    assert set(saved) == set(var.state_dict())


def test_ema_warmup_and_buffers():
    torch.manual_seed(0)
    m = torch.nn.BatchNorm1d(2)
    ema = EMA(m, 0.99)
    w0 = m.weight.detach().clone()
    with torch.no_grad():
        m.weight.add_(1.0)
    m.train()(torch.randn(8, 2))  # changes running stats (buffers)
    ema.update(m, step=0)
    d = min(0.99, 1 / 10)
    assert torch.allclose(ema.state["weight"], d * w0 + (1 - d) * m.weight.detach())
    assert torch.equal(ema.state["running_mean"], m.running_mean)  # buffers are copied
    assert torch.equal(ema.state["num_batches_tracked"], m.num_batches_tracked)



@pytest.mark.parametrize("where, sig", [("between_steps", signal.SIGINT), ("inside_forward", signal.SIGINT),
                                        ("inside_forward", signal.SIGTERM)])
def test_resume_after_ctrl_c_is_bit_identical(digits, tmp_path, where, sig):
    """A real SIGINT (Ctrl-C) or SIGTERM (kill, a scheduler) finishes the current step, saves, then raises
    KeyboardInterrupt; resuming from that checkpoint must end exactly like a straight run, wherever in the
    step the signal lands."""
    var, obj = build_var_run()
    train(var, digits, var_cfg(6), tmp_path / "straight", objective=obj, quiet=True)

    var, obj = build_var_run()
    calls = {"batch": 0, "forward": 0}

    class Data:
        name = "digits"

        def __len__(self):
            return len(digits)

        def batch(self, idx):
            calls["batch"] += 1
            if where == "between_steps" and calls["batch"] == 4:
                os.kill(os.getpid(), sig)
            return digits.batch(idx)

    forward = var.forward

    def interrupted_forward(*args, **kwargs):
        calls["forward"] += 1
        if where == "inside_forward" and calls["forward"] == 4:
            os.kill(os.getpid(), sig)
        return forward(*args, **kwargs)

    var.forward = interrupted_forward
    with pytest.raises(KeyboardInterrupt):
        train(var, Data(), var_cfg(6), tmp_path / "split", objective=obj, quiet=True)
    assert load_train_state(tmp_path / "split")["step"] == 4  # the interrupted step was finished, then saved

    var, obj = build_var_run()
    train(var, digits, var_cfg(6), tmp_path / "split", objective=obj, resume=True, quiet=True)
    assert_same_tensors(tmp_path / "straight" / "model.safetensors", tmp_path / "split" / "model.safetensors")


# ------------------------------------------------------------------------------------ safety


def test_divergence_stops_at_once_and_keeps_the_last_good_checkpoint(digits, tmp_path):
    from argen.errors import ArgenError

    tok = tiny_vq().train()
    train(tok, digits, TrainConfig(steps=2, batch_size=16, lr=1e-3, warmup=0, seed=0), tmp_path, quiet=True)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    # lr 1e9: the first step blows the weights up; nothing of it may reach the folder
    with pytest.raises(ArgenError, match="diverged at step"):
        train(tok, digits, TrainConfig(steps=20, batch_size=16, lr=1e9, warmup=0, seed=0), tmp_path,
              resume=True, quiet=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_resume_with_a_foreign_train_state_is_one_line(digits, tmp_path):
    from argen.errors import CheckpointError

    train(tiny_vq().train(), digits, TrainConfig(steps=1, batch_size=16, seed=0), tmp_path, quiet=True)
    with pytest.raises(CheckpointError, match="--resume: .*does not fit") as e:
        train(tiny_msvq().train(), digits, TrainConfig(steps=2, batch_size=16, seed=0), tmp_path, resume=True,
              quiet=True)
    assert "\n" not in str(e.value)


CLI_TOK = ["train", "tokenizer", "--preset", "msvq-digits", "--steps", "1", "--batch-size", "8", "--set", "ch=8",
           "--set", "z_channels=4", "--set", "codebook_size=16", "--threads", "1", "--quiet", "--device", "cpu"]


def test_a_second_training_into_a_locked_folder_fails_at_once(tmp_path, capsys):
    import fcntl

    from argen.cli import main

    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "a") as f:  # another training holds the folder (flock: per open file, so in-process works)
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main([*CLI_TOK, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another training" in err[0]
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written
    assert main([*CLI_TOK, "--out", str(out)]) == 0  # the lock went with its holder


def test_overwrite_replaces_the_old_run(tmp_path):
    from argen.cli import main

    out = tmp_path / "run"
    assert main([*CLI_TOK, "--out", str(out)]) == 0
    (out / "log.jsonl").write_text('{"step": 99, "loss": 1.0}\n')  # a row of the old run
    (out / "notes.txt").write_text("mine")
    assert main([*CLI_TOK, "--steps", "2", "--out", str(out)]) == 2  # refused without a flag
    assert main([*CLI_TOK, "--steps", "2", "--overwrite", "--out", str(out)]) == 0
    assert [r["step"] for r in read_log(out / "log.jsonl")] == [2]
    assert (out / "notes.txt").read_text() == "mine"
    metrics = (out / "metrics.json").read_text()
    assert "NaN" not in metrics and "Infinity" not in metrics
