"""Exact resume after SIGKILL: a run killed mid-training and resumed with ``--resume`` ends
bit-identical (weights, EMA, optimizer moments, RNG state, step) to an uninterrupted run.

The generator run draws random numbers every step (label dropout for CFG) and keeps an EMA;
the tokenizer run has k-means initialisation and dead-code restarts after the resume point.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import child_pids, run_torchrun, torchrun_cmd
from safetensors.torch import load_file

from argen.checkpoint import load_train_state
from argen.cli import main

CPU = ["--threads", "1", "--quiet", "--device", "cpu"]
TINY_TOK = ["--set", "ch=8", "--set", "z_channels=4", "--set", "codebook_size=16"]
TINY_GEN = ["--set", "depth=1", "--set", "width=32", "--set", "heads=2"]
N = 40          # steps of every run
SAVE_EVERY = 5
KILL_AFTER = 10  # kill once a checkpoint at step >= KILL_AFTER (and < N) is on disk
INIT_SEED = 1234

# The runs below seed torch's global RNG before the CLI builds its model, so that the
# uninterrupted and the killed run start from the same weights whether or not the CLI seeds
# the model initialisation itself (that is tested separately, in test_same_seed_same_model).
# The resumed run takes its weights and RNG state from the checkpoint.
_SEEDED_ARGEN = (f"import runpy, sys, torch; torch.manual_seed({INIT_SEED}); sys.argv = ['argen'] + sys.argv[1:]; "
                 "runpy.run_module('argen', run_name='__main__', alter_sys=True)")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    tok = tmp_path_factory.mktemp("resume") / "tok"
    assert main(["train", "tokenizer", "--preset", "msvq-digits", "--steps", "10", "--batch-size", "32",
                 "--out", str(tok), *TINY_TOK, *CPU]) == 0
    return tok


def _state_step(out: Path) -> int | None:
    if not (out / "train_state.safetensors").is_file():
        return None
    return int(load_train_state(out)["step"])


def _kill_mid_run(argv: list[str], out: Path, timeout: float = 120.0, launcher: list[str] | None = None) -> int:
    """Start ``argen argv`` (as ``launcher -m argen argv`` if given, e.g. torchrun), SIGKILL it and every
    process it started once ``out`` holds a checkpoint at step >= KILL_AFTER. Returns the step of the
    checkpoint left on disk."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [*launcher, "-m", "argen", *argv] if launcher else [sys.executable, "-c", _SEEDED_ARGEN, *argv]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    t0 = time.monotonic()
    try:
        while True:
            step = _state_step(out)
            if step is not None and step >= KILL_AFTER:
                # the ranks first (torchrun starts each in a session of its own), then the launcher: all at
                # once, as a crash would
                for pid in child_pids(proc.pid) if launcher else []:
                    os.kill(pid, signal.SIGKILL)
                os.killpg(proc.pid, signal.SIGKILL)
                break
            if proc.poll() is not None:
                pytest.fail(f"the run ended (exit code {proc.returncode}) before it could be killed: "
                            f"make the model bigger or N larger; stderr: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() - t0 > timeout:
                pytest.fail(f"no checkpoint at step >= {KILL_AFTER} after {timeout} s")
            time.sleep(0.01)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    step = _state_step(out)
    assert KILL_AFTER <= step < N, f"checkpoint at step {step}: the kill came too late to test a resume"
    return step


def _assert_same_tensors(a_path: Path, b_path: Path) -> None:
    a, b = load_file(str(a_path)), load_file(str(b_path))
    assert sorted(a) == sorted(b), f"{a_path.name}: different tensor names"
    diff = [k for k in a if a[k].dtype != b[k].dtype or a[k].shape != b[k].shape or not torch.equal(a[k], b[k])]
    assert not diff, f"{a_path.name}: {len(diff)} of {len(a)} tensors differ, e.g. {diff[:5]}"


def _log(out: Path) -> list[dict]:
    return [json.loads(r) for r in (out / "log.jsonl").read_text().splitlines() if r.strip()]


def _assert_same_run(ref: Path, res: Path) -> None:
    for name in ("model.safetensors", "train_state.safetensors"):
        _assert_same_tensors(ref / name, res / name)
    assert _state_step(res) == N
    assert json.loads((res / "config.json").read_text())["meta"]["step"] == N
    # the resumed log has each step once (rows of the killed run past its checkpoint are dropped)
    # and the same losses as the uninterrupted run
    ref_log, res_log = _log(ref), _log(res)
    assert [r["step"] for r in res_log] == [r["step"] for r in ref_log]
    assert [r["loss"] for r in res_log] == [r["loss"] for r in ref_log]


def _run_seeded_in_process(argv: list[str]) -> None:
    torch.manual_seed(INIT_SEED)  # what _SEEDED_ARGEN does in the killed process
    assert main(argv) == 0


def _kill_and_resume(argv_for, tmp_path: Path) -> tuple[Path, Path, int]:
    ref, res = tmp_path / "uninterrupted", tmp_path / "resumed"
    _run_seeded_in_process(argv_for(ref))
    assert _state_step(ref) == N
    killed_at = _kill_mid_run(argv_for(res), res)
    assert not (res / "metrics.json").exists()  # the killed run really did not finish
    assert main([*argv_for(res), "--resume"]) == 0
    return ref, res, killed_at


def test_generator_resume_after_sigkill_is_bit_identical(tokenizer_dir, tmp_path):
    def argv(out):
        # var-digits keeps an EMA and drops labels with p = 0.1 (so the RNG state matters)
        return ["train", "generator", "--preset", "var-digits", "--tokenizer", str(tokenizer_dir),
                "--steps", str(N), "--save-every", str(SAVE_EVERY), "--batch-size", "32", "--warmup", "5",
                "--out", str(out), *TINY_GEN, *CPU]

    ref, res, _ = _kill_and_resume(argv, tmp_path)
    cfg = json.loads((ref / "config.json").read_text())
    assert cfg["config"]["label_drop"] > 0 and cfg["meta"]["train_config"]["ema"] > 0
    state = load_file(str(ref / "train_state.safetensors"))
    assert any(k.startswith("s/ema/") for k in state), "no EMA in the training state"
    _assert_same_run(ref, res)


def test_torchrun_resume_after_sigkill_is_bit_identical(tokenizer_dir, tmp_path):
    """kill -9 of a 2-rank DDP run, then --resume under torchrun: the run ends as an uninterrupted one
    (every rank's RNG state is saved, and label dropout, drop-path and dropout are drawn for the global batch)."""
    def argv(out):
        return ["train", "generator", "--preset", "var-digits", "--tokenizer", str(tokenizer_dir),
                "--steps", str(N), "--save-every", str(SAVE_EVERY), "--batch-size", "16", "--warmup", "5",
                "--out", str(out), *TINY_GEN, "--set", "label_drop=0.5", "--set", "drop_path=0.1",
                "--set", "dropout=0.1", *CPU]

    ref, res = tmp_path / "uninterrupted", tmp_path / "resumed"
    run_torchrun(["-m", "argen", *argv(ref)], clean=lambda: shutil.rmtree(ref, ignore_errors=True))
    _kill_mid_run(argv(res), res, launcher=torchrun_cmd())
    killed_at = _state_step(res)
    time.sleep(3)  # a rank that outlived the kill would go on saving checkpoints (every 5 steps)
    assert _state_step(res) == killed_at and not (res / "metrics.json").exists()
    run_torchrun(["-m", "argen", *argv(res), "--resume"])  # a second try resumes the first: the same run
    _assert_same_run(ref, res)


def test_tokenizer_resume_after_sigkill_is_bit_identical(tmp_path):
    def argv(out):
        # restarts every 8 steps (never a multiple of SAVE_EVERY below N, so a resumed run that lost
        # the restart schedule would restart at other steps), with a threshold high enough that some
        # codes are restarted (at the default 0.03 no code dies within 40 steps); the last restart
        # (step 40) is always after the resume point
        return ["train", "tokenizer", "--preset", "msvq-digits", "--steps", str(N), "--save-every", str(SAVE_EVERY),
                "--batch-size", "64", "--out", str(out), *TINY_TOK, "--set", "restart_every=8",
                "--set", "restart_threshold=0.9", *CPU]

    ref, res, killed_at = _kill_and_resume(argv, tmp_path)
    last = _log(ref)[-1]
    assert last["step"] == N and last["restarted"] > 0, f"no dead-code restart at step {N}: {last}"
    assert killed_at < N
    _assert_same_run(ref, res)
    assert json.loads((res / "metrics.json").read_text())["test_psnr"] == \
        json.loads((ref / "metrics.json").read_text())["test_psnr"]


def test_same_seed_same_model(tokenizer_dir, tmp_path):
    """Two runs of the same command give the same weights, whatever the caller's RNG state
    (here the model initialisation must be seeded by --seed, not left to torch's global RNG)."""
    def argv(out):
        return ["train", "generator", "--preset", "var-digits", "--tokenizer", str(tokenizer_dir), "--steps", "1",
                "--batch-size", "8", "--seed", "7", "--out", str(out), *TINY_GEN, *CPU]

    torch.manual_seed(1)
    assert main(argv(tmp_path / "a")) == 0
    torch.manual_seed(2)
    assert main(argv(tmp_path / "b")) == 0
    _assert_same_tensors(tmp_path / "a" / "model.safetensors", tmp_path / "b" / "model.safetensors")
