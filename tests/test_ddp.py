"""DDP: ``torchrun --nproc_per_node 2 -m argen train ...`` gives the weights one process gives.

``--batch-size`` is the global batch: each of the 2 ranks takes half of every global batch, DDP averages
the gradients, and every random draw (label dropout, masks, dropout, diffusion noise and times, a KL
posterior's noise) is made for the global batch (``argen.nn.shard``). A tokenizer's k-means initialisation,
usage statistics and dead-code restarts see the whole global batch too. So the same command gives the same
weights up to float summation order, with label dropout, dropout and masking on; and so does one process
with ``--grad-accum 2`` (two micro-batches per step).

All commands of a mode run through one small launcher process (``python -m argen`` per command, plus a
hook that saves each model's initial weights), so the torch start-up is paid once per mode.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from helpers import free_port, run_torchrun
from safetensors.torch import load_file

from argen.checkpoint import load_train_state
from argen.cli import main

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available")

CPU = ["--threads", "1", "--quiet", "--device", "cpu"]
# groups=2: with one channel per GroupNorm group a conv bias before the norm has a gradient of exactly 0,
# whose float rounding (1e-9, the size of AdamW's eps) AdamW would amplify into lr-sized steps of noise
TINY_AE = ["--set", "ch=8", "--set", "z_channels=4", "--set", "groups=2"]
TINY_GEN = ["--set", "depth=1", "--set", "width=32", "--set", "heads=2"]
STEPS = 8
TRAIN = ["--batch-size", "8", "--steps", str(STEPS), "--ema", "0", "--warmup", "0", "--train-set", "log_every=1", *CPU]

TOKENIZERS = {  # name: (preset, --set values); restarts every 2 steps with a high threshold, so some happen
    "msvq": ("msvq-digits", [*TINY_AE, "--set", "codebook_size=16", "--set", "restart_every=2",
                             "--set", "restart_threshold=0.9"]),
    "vq": ("vq-digits", [*TINY_AE, "--set", "codebook_size=16", "--set", "restart_every=2",
                         "--set", "restart_threshold=0.9"]),
    "kl": ("kl-digits", TINY_AE),
}
HEAD = ["--set", "head_width=32", "--set", "head_depth=1"]
GENERATORS = {  # family: (preset, tokenizer, --set values with dropout and label dropout on)
    "raster": ("raster-digits", "vq", [*TINY_GEN, "--set", "label_drop=0.5"]),
    "var": ("var-digits", "msvq", [*TINY_GEN, "--set", "label_drop=0.5", "--set", "dropout=0.1",
                                   "--set", "drop_path=0.1"]),
    "maskgit": ("maskgit-digits", "vq", [*TINY_GEN, "--set", "label_drop=0.5"]),
    "mar": ("mar-digits", "kl", [*TINY_GEN, *HEAD, "--set", "label_drop=0.5"]),
    "nar": ("nar-digits", "vq", [*TINY_GEN, "--set", "label_drop=0.5"]),
    "hmar": ("hmar-digits", "msvq", [*TINY_GEN, "--set", "label_drop=0.5", "--set", "drop_path=0.1"]),
    "xar": ("xar-digits", "kl", [*TINY_GEN, *HEAD, "--set", "label_drop=0.5"]),
}

ON_NODES = ["tokenizer-msvq", "var", "mar"]

_LAUNCHER = r"""
import json, os, sys

import torch.distributed

import argen.training.dist as argen_dist
import argen.training.run as run
from argen.cli import main
from safetensors.torch import save_file

# One process group for all commands: re-creating it in one process races (a fast rank can meet the
# other rank's old store entries), so the CLI's per-command shutdown is skipped here.
if "RANK" in os.environ:
    torch.distributed.init_process_group("gloo")
argen_dist.shutdown = lambda: None

_train = run.train
init_out = None


def train(model, *args, **kwargs):
    if int(os.environ.get("RANK", "0")) == 0:
        save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, init_out)
    return _train(model, *args, **kwargs)


run.train = train
for command in json.loads(open(sys.argv[1]).read()):
    init_out = command["init"]
    code = main(command["argv"])
    if code != 0:
        sys.exit(f"{command['argv']} exited with {code}")
if torch.distributed.is_initialized():
    torch.distributed.destroy_process_group()
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Every model trained three ways: one process; torchrun with 2 processes; one process, --grad-accum 2;
    and three of them on two "nodes" of one process each (two torchrun agents meeting on loopback)."""
    root = tmp_path_factory.mktemp("ddp")
    toks = {}
    for name, (preset, sets) in TOKENIZERS.items():  # the generators' frozen tokenizers
        toks[name] = root / f"tok-{name}"
        assert main(["train", "tokenizer", "--preset", preset, "--steps", "5", "--batch-size", "32",
                     "--out", str(toks[name]), *sets, *CPU]) == 0
    launcher = root / "launcher.py"
    launcher.write_text(_LAUNCHER)
    modes = {"single": [], "ddp": [], "accum": ["--grad-accum", "2"], "nodes": []}
    for mode, extra in modes.items():
        commands = []
        for name, (preset, sets) in TOKENIZERS.items():
            if mode == "nodes" and f"tokenizer-{name}" not in ON_NODES:
                continue
            out = root / mode / f"tokenizer-{name}"
            commands.append({"init": str(out) + ".init", "argv": ["train", "tokenizer", "--preset", preset,
                                                                  "--out", str(out), *sets, *TRAIN, *extra]})
        for family, (preset, tok, sets) in GENERATORS.items():
            if mode == "nodes" and family not in ON_NODES:
                continue
            out = root / mode / family
            commands.append({"init": str(out) + ".init", "argv": ["train", "generator", "--preset", preset,
                                                                  "--tokenizer", str(toks[tok]), "--out", str(out),
                                                                  *sets, *TRAIN, *extra]})
        (root / mode).mkdir()
        spec = root / f"{mode}.json"
        spec.write_text(json.dumps(commands))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        torchrun = [sys.executable, "-m", "torch.distributed.run"]
        if mode == "nodes":  # what the README shows for two machines, with 127.0.0.1 as the first one
            endpoint = f"127.0.0.1:{free_port()}"
            procs = [subprocess.Popen([*torchrun, "--nnodes", "2", "--node-rank", str(node), "--nproc_per_node", "1",
                                       "--rdzv-endpoint", endpoint, str(launcher), str(spec)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                     for node in (0, 1)]
            for node, proc in enumerate(procs):
                out, _ = proc.communicate(timeout=600)
                assert proc.returncode == 0, f"node {node}: exit code {proc.returncode}\n{out[-3000:]}"
            continue
        if mode == "ddp":
            run_torchrun([str(launcher), str(spec)], timeout=600,
                         clean=lambda out=root / mode: (shutil.rmtree(out), out.mkdir()))
            continue
        cmd = [sys.executable, str(launcher), str(spec)]
        r = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{' '.join(cmd)}\nexit code {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return root


def _load(root: Path, mode: str, name: str):
    out = root / mode / name
    return (load_file(str(out) + ".init"), load_file(str(out / "model.safetensors")),
            load_file(str(out / "train_state.safetensors")), int(load_train_state(out)["step"]))


def _check_same(one, other, what: str) -> None:
    (init_1, final_1, state_1, step_1), (init_2, final_2, state_2, step_2) = one, other
    assert sorted(final_1) == sorted(final_2) == sorted(init_1)
    differ = [k for k in init_1 if not torch.equal(init_1[k], init_2[k])]
    assert not differ, (f"{what}: the runs of the same command start from different weights "
                        f"({len(differ)} tensors, e.g. {differ[:3]}): the model initialisation is not seeded")
    moved = max((final_1[k].double() - init_1[k].double()).abs().max().item() for k in final_1
                if final_1[k].is_floating_point())
    assert moved > 1e-3, f"{what}: training hardly moved the weights (max change {moved:g}): the test says nothing"
    for k in final_1:
        torch.testing.assert_close(final_2[k], final_1[k], atol=1e-5, rtol=0, msg=lambda m, k=k: f"{what} {k}: {m}")
    for k in state_1:  # AdamW moments too (what the gradient averaging feeds)
        if "/optimizer/state/" in k and k.endswith(("exp_avg", "exp_avg_sq")):
            torch.testing.assert_close(state_2[k], state_1[k], atol=1e-6, rtol=1e-4,
                                       msg=lambda m, k=k: f"{what} {k}: {m}")
    assert step_1 == step_2 == STEPS


NAMES = [f"tokenizer-{t}" for t in TOKENIZERS] + list(GENERATORS)


@pytest.mark.parametrize("name", NAMES)
def test_torchrun_2_processes_equals_one_process(runs, name):
    """The same command with torchrun (2 ranks) and without: the same initial weights, final weights and
    AdamW moments (max abs weight difference <= 1e-5 after 8 steps)."""
    _check_same(_load(runs, "single", name), _load(runs, "ddp", name), f"{name} ddp")


@pytest.mark.parametrize("name", NAMES)
def test_grad_accum_equals_one_batch(runs, name):
    """``--grad-accum 2``: two micro-batches per step give the weights of the whole batch at once."""
    _check_same(_load(runs, "single", name), _load(runs, "accum", name), f"{name} --grad-accum 2")


@pytest.mark.parametrize("name", ON_NODES)
def test_two_loopback_nodes_equal_one_process(runs, name):
    """torchrun --nnodes 2 --node-rank 0|1 --rdzv-endpoint: two agents of one process each, the same weights."""
    _check_same(_load(runs, "single", name), _load(runs, "nodes", name), f"{name} on 2 nodes")


def test_every_rank_random_state_is_saved(runs):
    state = load_file(str(runs / "ddp" / "var" / "train_state.safetensors"))
    assert {k for k in state if k.startswith("s/rng/")} >= {"s/rng/0/cpu", "s/rng/1/cpu"}
    # draws are made for the global batch, so the ranks' streams stay in step
    assert torch.equal(state["s/rng/0/cpu"], state["s/rng/1/cpu"])


def test_tokenizer_restarts_happened(runs):
    """The restart path ran in the compared runs (else their equality would not cover it)."""
    for name in ("msvq", "vq"):
        rows = [json.loads(x) for x in (runs / "ddp" / f"tokenizer-{name}" / "log.jsonl").read_text().splitlines()]
        assert len(rows) == STEPS and sum(r.get("restarted", 0) for r in rows) > 0, rows


def test_batch_not_divisible_by_shards_is_one_line(tmp_path, capsys):
    code = main(["train", "tokenizer", "--preset", "vq-digits", "--out", str(tmp_path / "t"), "--batch-size", "6",
                 "--grad-accum", "4", "--steps", "1", *CPU])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--batch-size 6" in err and "--grad-accum (4)" in err and len(err.splitlines()) == 1
