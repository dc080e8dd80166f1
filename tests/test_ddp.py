"""DDP: ``torchrun --nproc_per_node 2 -m argen train ...`` gives the same weights as one process.

``--batch-size`` is the global batch: each of the 2 ranks takes half of every global batch and
DDP averages the gradients, so 3 steps on 2 ranks equal 3 steps in one process up to float
summation order. Label dropout and EMA are off so the comparison is exact up to rounding.

The commands run through a small launcher that is ``python -m argen`` plus one hook: rank 0
saves the model's initial weights (to check that training moved them, and that both runs
started from the same ones).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from argen.cli import main

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available")

CPU = ["--threads", "1", "--quiet", "--device", "cpu"]
TINY_TOK = ["--set", "ch=8", "--set", "z_channels=4", "--set", "codebook_size=16"]
TINY_GEN = ["--set", "depth=1", "--set", "width=32", "--set", "heads=2"]
STEPS = 3

_LAUNCHER = r"""
import os, runpy, sys

import argen.training.run as run
from safetensors.torch import save_file

_train = run.train


def train(model, *args, **kwargs):
    if int(os.environ.get("RANK", "0")) == 0:
        save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
                  os.environ["ARGEN_TEST_INIT_OUT"])
    return _train(model, *args, **kwargs)


run.train = train
sys.argv = ["argen", *sys.argv[1:]]
runpy.run_module("argen", run_name="__main__", alter_sys=True)  # = python -m argen
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ddp")
    tok = root / "tok"
    assert main(["train", "tokenizer", "--preset", "msvq-digits", "--steps", "5", "--batch-size", "32",
                 "--out", str(tok), *TINY_TOK, *CPU]) == 0
    launcher = root / "launcher.py"
    launcher.write_text(_LAUNCHER)
    return tok, launcher


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_argv(tok: Path, out: Path) -> list[str]:
    return ["train", "generator", "--preset", "var-digits", "--tokenizer", str(tok), "--out", str(out),
            "--batch-size", "8", "--steps", str(STEPS), "--set", "label_drop=0", "--ema", "0", "--warmup", "0",
            *TINY_GEN, *CPU]


def _run(cmd: list[str], init_out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ARGEN_TEST_INIT_OUT": str(init_out)}
    r = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{' '.join(cmd)}\nexit code {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"


def _ddp_vs_single(tmp_path: Path, tok: Path, launcher: Path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _run([sys.executable, str(launcher), *_train_argv(tok, single)], tmp_path / "init_single.safetensors")
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
          str(launcher), *_train_argv(tok, ddp)], tmp_path / "init_ddp.safetensors")
    out = {}
    for name in ("single", "ddp"):
        out[name] = (load_file(str(tmp_path / f"init_{name}.safetensors")),
                     load_file(str(tmp_path / name / "model.safetensors")),
                     load_file(str(tmp_path / name / "train_state.safetensors")))
    return out


def _check(runs) -> None:
    (init_1, final_1, state_1), (init_2, final_2, state_2) = runs["single"], runs["ddp"]
    assert sorted(final_1) == sorted(final_2) == sorted(init_1)
    differ = [k for k in init_1 if not torch.equal(init_1[k], init_2[k])]
    assert not differ, (f"the one-process and torchrun runs of the same command start from different weights "
                        f"({len(differ)} tensors, e.g. {differ[:3]}): the model initialisation is not seeded")
    moved = max((final_1[k].double() - init_1[k].double()).abs().max().item() for k in final_1)
    assert moved > 1e-3, f"training hardly moved the weights (max change {moved:g}): the comparison says nothing"
    for k in final_1:
        torch.testing.assert_close(final_2[k], final_1[k], atol=1e-5, rtol=0, msg=lambda m, k=k: f"{k}: {m}")
    # AdamW moments too (these are what DDP's gradient averaging feeds)
    for k in state_1:
        if "/optimizer/state/" in k and k.endswith(("exp_avg", "exp_avg_sq")):
            torch.testing.assert_close(state_2[k], state_1[k], atol=1e-6, rtol=1e-4, msg=lambda m, k=k: f"{k}: {m}")
    assert int(state_1["s/optimizer/state/0/step"]) == int(state_2["s/optimizer/state/0/step"]) == STEPS


def test_torchrun_2_processes_equals_one_process(setup, tmp_path):
    """The same command, once with torchrun and once without: the same initial weights (the CLI seeds the
    model's initialisation), and the same final weights and AdamW moments (DDP's gradient averaging over
    the per-rank halves of each global batch)."""
    tok, launcher = setup
    _check(_ddp_vs_single(tmp_path, tok, launcher))
