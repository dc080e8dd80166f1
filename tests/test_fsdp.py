"""FSDP2 (``--strategy fsdp``, ``argen.training.fsdp``): sharded training, sharded train state, export.

The library pieces run in 2 gloo processes on loopback (one torchrun launch for the module): a tiny
multi-scale VQ tokenizer (resnet blocks and, inside its quantizer, phi convolutions as FSDP units; its codebook kept whole on every rank) is
sharded, trained a few steps with an EMA, saved with DCP, loaded into a fresh sharded copy and trained
on; the test compares what the ranks wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from helpers import child_pids, pid_alive, run_torchrun, torchrun_cmd
from safetensors.torch import load_file

import argen
from argen.cli import main
from argen.errors import ArgenError
from argen.training import fsdp

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available")

TINY_AE = {"ch": 8, "z_channels": 4, "groups": 2, "codebook_size": 16}

# Rank r trains on rows [4r, 4r + 4) of seeded global batches of 8, as the trainer does (``shard``).
_WORKER = r"""
import json, sys
from pathlib import Path

import torch
import torch.distributed as tdist
from safetensors.torch import save_file

import argen.checkpoint as ckpt
from argen.models import build
from argen.nn import shard
from argen.training import dist, fsdp

out = Path(sys.argv[1])
tiny = json.loads(sys.argv[2])
tdist.init_process_group("gloo")
rank, world = dist.rank(), dist.world_size()
cpu = torch.device("cpu")


def make():
    torch.manual_seed(0)
    model = build("msvq-digits", **tiny)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    fsdp.shard_model(model, cpu)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    return model, opt, init


def batch(i):
    images = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(i)) * 2 - 1
    return images[rank * 4:(rank + 1) * 4], torch.zeros(4, dtype=torch.long)


def step(model, opt, ema, i):
    torch.manual_seed(100 + i)
    with shard.shard_of(rank, world):
        if i == 0:
            model.begin_training(batch(0))  # k-means on the gathered global batch
        loss, _ = model.loss(batch(i))
    opt.zero_grad()
    loss.backward()
    norm = fsdp.clip_grad_norm_(list(model.parameters()), 0.05)
    opt.step()
    model.end_step()
    with torch.no_grad():
        for k, v in model.state_dict().items():
            ema[k].lerp_(v, 0.5) if v.is_floating_point() else ema[k].copy_(v)
    return float(loss), float(norm)


def local_state(model, opt, ema):
    sd = {f"model/{k}": fsdp.local(v) for k, v in model.state_dict().items()}
    sd |= {f"ema/{k}": fsdp.local(v) for k, v in ema.items()}
    for p, s in zip(model.parameters(), [opt.state[p] for p in model.parameters()]):
        sd |= {f"optim/{id(p)}/{k}": fsdp.local(v) for k, v in s.items()}
    return sd


def same(a, b):
    return [k for k in a if not torch.equal(a[k], b[k])] if a.keys() == b.keys() else ["<keys differ>"]


model, opt, init = make()
report = {"rank": rank, "params": sum(fsdp.local(p).numel() for p in model.parameters()),
          "sharded": sum(isinstance(p, torch.distributed.tensor.DTensor) for p in model.parameters()),
          "replicated": sum(not isinstance(p, torch.distributed.tensor.DTensor) for p in model.parameters())}
full0 = fsdp.full_tensors(model.state_dict())
if rank == 0:
    report["sharding_lost"] = same(init, full0)
    ckpt.write_record(out, fsdp.record_of(model, preset="msvq-digits", meta={"note": "test"}))
ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
trace = [step(model, opt, ema, i) for i in range(3)]
torch.manual_seed(7 + rank)  # a distinct RNG state per rank, each to come back to its rank
rng = [None] * world
tdist.all_gather_object(rng, {"cpu": torch.get_rng_state()})
fsdp.save_train_state(out, model, opt, ema=ema, rng=rng, step=3, extra={"note": "x"})
saved = {k: v.clone() for k, v in local_state(model, opt, ema).items()}
full = fsdp.full_tensors(model.state_dict())
full_ema = fsdp.full_tensors(ema)
if rank == 0:
    save_file(full, str(out / "full.safetensors"))
    save_file(full_ema, str(out / "full_ema.safetensors"))
after = [step(model, opt, ema, i) for i in range(3, 5)]

model2, opt2, _ = make()
ema2 = {k: v.detach().clone() for k, v in model2.state_dict().items()}
info = fsdp.load_train_state(out, model2, opt2, ema=ema2)
loaded = local_state(model2, opt2, ema2)
# the optimizer's state is keyed by parameter object: its tensors are compared in parameter order
report["round_trip_differ"] = same({k: v for k, v in saved.items() if not k.startswith("optim/")},
                                   {k: v for k, v in loaded.items() if not k.startswith("optim/")})
report["optim_differ"] = [i for i, (a, b) in enumerate(zip(
    [v for k, v in saved.items() if k.startswith("optim/")], [v for k, v in loaded.items() if k.startswith("optim/")]))
    if not torch.equal(a, b)]
report["optim_tensors"] = sum(k.startswith("optim/") for k in loaded)
report["lr"] = [g["lr"] for g in opt2.param_groups]
report["step"], report["note"] = info["step"], info["note"]
report["rng_differ"] = [r for r in range(world) if not torch.equal(info["rng"][r]["cpu"], rng[r]["cpu"])]
report["continued"] = [step(model2, opt2, ema2, i) for i in range(3, 5)]
report["uninterrupted"] = after
report["trace"] = trace
(out / f"report{rank}.json").write_text(json.dumps(report))
tdist.destroy_process_group()
"""


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("fsdp")
    script = root / "worker.py"
    script.write_text(_WORKER)
    run = root / "run"
    run.mkdir()
    run_torchrun([str(script), str(run), json.dumps(TINY_AE)], clean=lambda: (shutil.rmtree(run), run.mkdir()))
    return run, [json.loads((run / f"report{i}.json").read_text()) for i in range(2)]


def test_units_and_replicated_parameters():
    """Every ModuleList element with parameters is a unit, innermost first; a codebook's codes stay whole."""
    model = argen.build("msvq-digits", **TINY_AE)
    found = fsdp.units(model)
    assert found and all(any(True for _ in u.parameters()) for u in found)
    # innermost first: a unit that contains another comes after it
    for i, u in enumerate(found):
        assert not any(v is not u and any(m is v for m in u.modules()) for v in found[i + 1:])
    assert {type(u).__name__ for u in found} >= {"ResnetBlock", "Phi"}
    assert [tuple(p.shape) for p in fsdp.replicated(model)] == [(TINY_AE["codebook_size"], TINY_AE["z_channels"])]
    gen = argen.build("var-digits", depth=3, width=32, heads=2)
    assert [type(u).__name__ for u in fsdp.units(gen)] == ["AdaLNBlock"] * 3 and not fsdp.replicated(gen)
    text = argen.build("var-shapes", depth=2, width=32, heads=2)  # its text encoder runs before loss: whole
    assert [type(u).__name__ for u in fsdp.units(text)] == ["AdaLNBlock"] * 2
    assert fsdp.replicated(text) == set(text.text.parameters()) and len(fsdp.replicated(text)) > 2


def test_whole_parameters_get_optimizer_groups_of_their_own():
    """torch's foreach AdamW (its default on GPUs) refuses a group that mixes sharded and whole (codebook)
    parameters; split_param_groups gives the whole ones groups of their own with the same settings."""
    from argen.training import dist as argen_dist
    from argen.training.trainer import _param_groups

    torch.manual_seed(0)
    model = argen.build("msvq-digits", **TINY_AE)
    try:
        fsdp.shard_model(model, torch.device("cpu"))  # a process group of one process
        groups = _param_groups(model, 0.1)
        split = fsdp.split_param_groups(groups)
        assert [len(g["params"]) for g in split] == [len(groups[0]["params"]) - 1, len(groups[1]["params"]), 1]
        assert split[-1]["weight_decay"] == 0.1 and split[-1]["params"][0] is model.quantize.embedding.weight

        def step(param_groups):
            opt = torch.optim.AdamW(param_groups, lr=1e-2, foreach=True)
            loss, _ = model.loss((torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1, None))
            loss.backward()
            opt.step()

        with pytest.raises(RuntimeError, match="mixed torch.Tensor and DTensor"):
            step(_param_groups(model, 0.1))
        codes = model.quantize.embedding.weight.detach().clone()
        step(split)
        assert not torch.equal(codes, model.quantize.embedding.weight)
    finally:
        argen_dist.shutdown()
    plain = _param_groups(argen.build("var-digits", depth=1, width=32, heads=2), 0.1)  # nothing to split
    kept = fsdp.split_param_groups(plain)
    assert len(kept) == len(plain) and all(a is b for a, b in zip(kept, plain))


def test_parameters_are_sharded_and_sharding_loses_nothing(sharded_run):
    _, reports = sharded_run
    model = argen.build("msvq-digits", **TINY_AE)
    total = sum(p.numel() for p in model.parameters())
    codes = TINY_AE["codebook_size"] * TINY_AE["z_channels"]
    # each rank holds about half of the sharded weights, and the whole codebook
    for rep in reports:
        assert rep["replicated"] == 1 and rep["sharded"] == len(list(model.parameters())) - 1
        assert rep["params"] < (total - codes) * 0.6 + codes
    assert sum(rep["params"] for rep in reports) == total + codes  # the codebook twice, the rest once
    assert reports[0]["sharding_lost"] == []  # all-gathered right after sharding: the unsharded weights


def test_sharded_save_load_round_trip_is_exact(sharded_run):
    """Weights, EMA and AdamW moments of every rank's shards load bit for bit, with the step, the
    optimizer's param groups and the caller's extra; training on from the loaded state gives the losses
    and gradient norms of the uninterrupted run, exactly."""
    run, reports = sharded_run
    for rep in reports:
        assert rep["round_trip_differ"] == [] and rep["optim_differ"] == [] and rep["optim_tensors"] > 0
        assert rep["step"] == 3 and rep["note"] == "x" and rep["rng_differ"] == []
        assert rep["continued"] == rep["uninterrupted"]
        assert len({tuple(t) for t in rep["trace"]}) == 3  # training moved (the losses change)
    # each rank's loss is its shard's; the gradient norm is the global one, the same on both ranks
    assert [n for _, n in reports[0]["uninterrupted"]] == [n for _, n in reports[1]["uninterrupted"]]
    files = sorted(p.name for p in (run / fsdp.STATE_DIR).iterdir())
    assert fsdp.STATE_JSON in files and sum(f.endswith(".safetensors") for f in files) == 2  # one per rank
    assert not (run / f".{fsdp.STATE_DIR}.tmp").exists() and not (run / f".{fsdp.STATE_DIR}.old").exists()


def test_export_equals_the_gathered_weights(sharded_run, tmp_path):
    """Consolidation by DCP in one process (no process group) equals the weights all-gathered by the ranks;
    the exported folder loads with argen.load and holds the EMA weights (as a DDP run's folder does)."""
    run, _ = sharded_run
    out = tmp_path / "exported"
    meta = fsdp.export(run, out)
    assert meta["step"] == 3 and meta["note"] == "test"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    exported = load_file(str(out / "model.safetensors"))
    gathered, raw = load_file(str(run / "full_ema.safetensors")), load_file(str(run / "full.safetensors"))
    assert exported.keys() == gathered.keys()
    assert [k for k in gathered if not torch.equal(exported[k], gathered[k])] == []
    assert any(not torch.equal(gathered[k], raw[k]) for k in raw)  # the EMA is not the raw weights
    model = argen.load(str(out))
    assert all(torch.equal(v, gathered[k]) for k, v in model.state_dict().items())


def test_an_interrupted_save_leaves_the_last_state_loadable(sharded_run, tmp_path):
    """A crash mid-save leaves a partial temporary folder (ignored); a crash between the two renames
    leaves the previous state under its .old name, which is then the last complete state."""
    run, _ = sharded_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    partial = copy / f".{fsdp.STATE_DIR}.tmp"
    partial.mkdir()
    (partial / "shard-00001-model-00001-of-00001.safetensors").write_bytes(b"half")
    assert fsdp.state_dir(copy) == copy / fsdp.STATE_DIR
    (copy / fsdp.STATE_DIR).rename(copy / f".{fsdp.STATE_DIR}.old")
    assert fsdp.state_dir(copy) == copy / f".{fsdp.STATE_DIR}.old"
    out = tmp_path / "exported"
    fsdp.export(copy, out)
    gathered = load_file(str(run / "full_ema.safetensors"))
    assert all(torch.equal(v, gathered[k]) for k, v in load_file(str(out / "model.safetensors")).items())
    (copy / f".{fsdp.STATE_DIR}.old" / fsdp.STATE_JSON).unlink()  # no complete state at all
    assert fsdp.state_dir(copy) is None


def test_export_refusals_are_one_line(sharded_run, tmp_path):
    run, _ = sharded_run
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(ArgenError, match="not an empty folder") as e:
        fsdp.export(run, busy)
    assert len(str(e.value).splitlines()) == 1
    with pytest.raises(ArgenError, match="no sharded training state"):
        fsdp.export(tmp_path, tmp_path / "out")


# ---- the trainer and the CLI: --strategy fsdp ------------------------------------------------------

CPU = ["--threads", "1", "--quiet", "--device", "cpu"]
TINY_TOK = ["--set", "ch=8", "--set", "z_channels=4", "--set", "groups=2", "--set", "codebook_size=16"]
TINY_GEN = ["--set", "depth=2", "--set", "width=32", "--set", "heads=2"]
# dropout, drop path and label dropout on; restarts every 2 steps with a high threshold, so some happen
RANDOM_GEN = [*TINY_GEN, "--set", "label_drop=0.5", "--set", "dropout=0.1", "--set", "drop_path=0.1"]
RESTARTS = ["--set", "restart_every=2", "--set", "restart_threshold=0.9"]
STEPS = 6
TRAIN = ["--batch-size", "8", "--steps", str(STEPS), "--ema", "0", "--warmup", "0", "--train-set", "log_every=1", *CPU]

# Every command of the comparison in one torchrun launch (the torch start-up is paid once; one process
# group for all of them, so the CLI's per-command shutdown is skipped).
# A hook saves each model's initial weights (OUT.init), to show that training moved them.
_LAUNCHER = r"""
import json, os, sys

import torch.distributed
from safetensors.torch import save_file

import argen.training.dist as argen_dist
import argen.training.run as run
from argen.cli import main

torch.distributed.init_process_group("gloo")
argen_dist.shutdown = lambda: None
_train = run.train


def train(model, dataset, cfg, out, **kwargs):
    if torch.distributed.get_rank() == 0:
        save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, f"{out}.init")
    return _train(model, dataset, cfg, out, **kwargs)


run.train = train
for argv in json.loads(open(sys.argv[1]).read()):
    code = main(argv)
    if code != 0:
        sys.exit(f"{argv} exited with {code}")
torch.distributed.destroy_process_group()
"""


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    tok = tmp_path_factory.mktemp("fsdp-tok") / "tok"
    assert main(["train", "tokenizer", "--preset", "msvq-digits", "--steps", "5", "--batch-size", "32",
                           "--out", str(tok), *TINY_TOK, *CPU]) == 0
    return tok


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory, tokenizer_dir) -> Path:
    """A tokenizer, a generator and a text-to-image generator (its text encoder runs before ``loss``)
    trained by the same command with DDP and with FSDP on 2 ranks (the generator also with --grad-accum 2,
    with activation checkpointing and with --bf16 under FSDP), and FSDP in one process without torchrun."""
    root = tmp_path_factory.mktemp("fsdp-cli")
    shapes_tok = root / "shapes-tok"
    assert main(["train", "tokenizer", "--preset", "msvq-shapes", "--steps", "2", "--batch-size", "16",
                 "--out", str(shapes_tok), *TINY_TOK, *CPU]) == 0
    tok = ["train", "tokenizer", "--preset", "msvq-digits", *TINY_TOK, *RESTARTS, *TRAIN]
    gen = ["train", "generator", "--preset", "var-digits", "--tokenizer", str(tokenizer_dir), *RANDOM_GEN, *TRAIN]
    text = ["train", "generator", "--preset", "var-shapes", "--tokenizer", str(shapes_tok), *TINY_GEN, *TRAIN]
    fsdp_ = ["--strategy", "fsdp"]
    commands = [[*tok, "--out", str(root / "tok-ddp")], [*tok, "--out", str(root / "tok-fsdp"), *fsdp_],
                [*gen, "--out", str(root / "gen-ddp")], [*gen, "--out", str(root / "gen-fsdp"), *fsdp_],
                [*text, "--out", str(root / "text-ddp")], [*text, "--out", str(root / "text-fsdp"), *fsdp_],
                [*gen, "--out", str(root / "gen-fsdp-accum"), *fsdp_, "--grad-accum", "2"],
                [*gen, "--out", str(root / "gen-fsdp-ac"), *fsdp_, "--activation-checkpointing"],
                [*gen, "--out", str(root / "bf16-ddp"), "--bf16"], [*gen, "--out", str(root / "bf16-fsdp"), *fsdp_, "--bf16"]]
    (root / "launcher.py").write_text(_LAUNCHER)
    (root / "commands.json").write_text(json.dumps(commands))
    def clean():  # what a first try wrote: the runs and their .init weights
        for path in root.iterdir():
            if path.name.startswith(("tok-", "gen-", "text-", "bf16-")):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    run_torchrun([str(root / "launcher.py"), str(root / "commands.json")], clean=clean)
    assert main([*gen, "--out", str(root / "gen-fsdp-one"), *fsdp_]) == 0  # no torchrun
    assert not dist.is_initialized()  # the one-process group ended with the command
    return root


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("name", ["tok", "gen", "text"])
def test_fsdp_equals_ddp(cli_runs, name):
    """The same command with --strategy fsdp and with DDP on 2 ranks: the same weights (max abs difference
    <= 1e-5 after 6 steps, with label dropout, dropout, drop path, codebook restarts, a text encoder)."""
    ddp, sharded = cli_runs / f"{name}-ddp", cli_runs / f"{name}-fsdp"
    assert (sharded / fsdp.STATE_DIR / fsdp.STATE_JSON).is_file() and not (sharded / "train_state.safetensors").exists()
    assert json.loads((sharded / "config.json").read_text())["meta"]["train_config"]["strategy"] == "fsdp"
    init = load_file(f"{ddp}.init")
    assert _max_diff(init, load_file(f"{sharded}.init")) == 0  # the same initial weights
    assert _max_diff(init, _weights(ddp)) > 1e-3, "training hardly moved the weights: the comparison says nothing"
    assert _max_diff(_weights(ddp), _weights(sharded)) <= 1e-5
    if name == "tok":
        rows = [json.loads(x) for x in (sharded / "log.jsonl").read_text().splitlines()]
        assert sum(r.get("restarted", 0) for r in rows) > 0  # the restart path ran on the whole codebook
    if name == "text":  # the text encoder trained, and the same way
        text = [k for k in init if k.startswith("text.")]
        assert text and _max_diff({k: init[k] for k in text}, {k: _weights(sharded)[k] for k in text}) > 1e-4


@pytest.mark.parametrize("variant", ["accum", "ac", "one"])
def test_fsdp_variants_equal_ddp(cli_runs, variant):
    """--grad-accum 2, --activation-checkpointing, and one process without torchrun: the same weights."""
    assert _max_diff(_weights(cli_runs / "gen-ddp"), _weights(cli_runs / f"gen-fsdp-{variant}")) <= 1e-5


def _losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "log.jsonl").read_text().splitlines()]


def test_fsdp_bf16_follows_ddp_bf16(cli_runs):
    """--bf16 with FSDP (bf16 gathers and compute, float32 gradient reduction and weights) against DDP's
    bf16 autocast: float32 weights, and the same losses up to bf16 rounding at every step (AdamW turns
    rounding into weight differences of the order of lr, so the losses are compared, not the weights)."""
    sharded = _weights(cli_runs / "bf16-fsdp")
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in sharded.values() if v.is_floating_point())
    bf16_ddp, bf16_fsdp, fp32_fsdp = (_losses(cli_runs / n) for n in ("bf16-ddp", "bf16-fsdp", "gen-fsdp"))
    assert len(bf16_fsdp) == STEPS and max(abs(a - b) for a, b in zip(bf16_ddp, bf16_fsdp)) <= 5e-4
    assert bf16_fsdp != fp32_fsdp  # bf16 was on


def test_export_of_a_finished_run_loads_and_equals_the_trained_weights(cli_runs, tmp_path):
    run, out = cli_runs / "gen-fsdp", tmp_path / "exported"
    assert main(["export", "--checkpoint", str(run), "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "tokenizer"]
    exported = _weights(out)
    assert _max_diff(exported, _weights(run)) == 0
    assert _max_diff(exported, _weights(cli_runs / "gen-ddp")) <= 1e-5
    pipe = argen.Pipeline.from_pretrained(str(out))  # generator and tokenizer load as any checkpoint folder
    assert all(torch.equal(v, exported[k]) for k, v in pipe.generator.state_dict().items())
    assert json.loads((out / "config.json").read_text())["class"] == "VAR"


def test_cli_refusals_are_one_line(cli_runs, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "tokenizer", "--preset", "vq-digits", "--out", str(tmp_path / "t"), "--strategy", "zero"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "--strategy: invalid choice: 'zero'" in err and len(err.splitlines()) == 1, err
    cases = [
        (["train", "generator", "--preset", "var-digits", "--tokenizer", str(cli_runs / "gen-fsdp" / "tokenizer"),
          "--out", str(cli_runs / "gen-fsdp"), "--resume", *TINY_GEN, *CPU], "resume with --strategy fsdp"),
        (["export", "--checkpoint", str(cli_runs / "gen-ddp"), "--out", str(tmp_path / "e")],
         "a --strategy ddp run folder is a checkpoint already"),
        (["export", "--checkpoint", str(cli_runs / "gen-fsdp"), "--out", str(cli_runs / "gen-ddp")],
         "not an empty folder"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


N = 30          # steps of the kill-and-resume runs
SAVE_EVERY = 4
KILL_AFTER = 8  # kill once a sharded state at step >= KILL_AFTER (and < N) is on disk


def _saved_step(out: Path) -> int | None:
    d = fsdp.state_dir(out)
    try:
        return None if d is None else int(json.loads((d / fsdp.STATE_JSON).read_text())["step"])
    except (OSError, ValueError):  # renamed away between the two reads
        return None


def _kill_mid_run(argv: list[str], out: Path, timeout: float = 180.0) -> int:
    """Start ``torchrun -m argen argv``, SIGKILL both ranks and the launcher at once (as a crash would)
    once ``out`` holds a sharded state at step >= KILL_AFTER; returns the step left on disk."""
    proc = subprocess.Popen([*torchrun_cmd(), "-m", "argen", *argv], env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    t0 = time.monotonic()
    try:
        while (step := _saved_step(out)) is None or step < KILL_AFTER:
            if proc.poll() is not None:
                pytest.fail(f"the run ended (exit code {proc.returncode}) before it could be killed; "
                            f"stderr: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() - t0 > timeout:
                pytest.fail(f"no sharded state at step >= {KILL_AFTER} after {timeout} s")
            time.sleep(0.01)
        ranks = child_pids(proc.pid)  # torchrun starts each rank in a session of its own: killpg misses them
        assert len(ranks) == 2, f"torchrun's processes: {ranks}"
        for pid in [*ranks, proc.pid]:
            os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
        while any(pid_alive(pid) for pid in ranks):  # (their lock on OUT goes with them)
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    step = _saved_step(out)
    assert KILL_AFTER <= step < N, f"sharded state at step {step}: the kill came too late to test a resume"
    return step


def _dcp_tensors(run: Path) -> dict[str, torch.Tensor]:
    files = sorted((run / fsdp.STATE_DIR).glob("*.safetensors"))
    assert len(files) == 2  # one per rank
    return {f"{f.name}/{k}": v for f in files for k, v in load_file(str(f)).items()}


def test_fsdp_resume_after_sigkill_under_torchrun_is_bit_identical(tokenizer_dir, tmp_path):
    """kill -9 of a 2-rank FSDP run, then --resume under torchrun: the run ends as an uninterrupted one, bit
    for bit (every rank's shards of the weights, EMA and AdamW moments, the consolidated weights, the log).
    The killed run's last state exports to a checkpoint folder that loads."""
    def argv(out):  # var-digits keeps an EMA; label dropout, dropout and drop path draw every step
        return ["train", "generator", "--preset", "var-digits", "--tokenizer", str(tokenizer_dir), "--steps", str(N),
                "--save-every", str(SAVE_EVERY), "--batch-size", "16", "--warmup", "5", "--out", str(out),
                *RANDOM_GEN, "--strategy", "fsdp", *CPU]

    ref, res = tmp_path / "uninterrupted", tmp_path / "resumed"
    run_torchrun(["-m", "argen", *argv(ref)], clean=lambda: shutil.rmtree(ref, ignore_errors=True))
    killed_at = _kill_mid_run(argv(res), res)
    assert not (res / "metrics.json").exists() and not (res / "model.safetensors").exists()
    assert main(["export", "--checkpoint", str(res), "--out", str(tmp_path / "mid"), "--quiet"]) == 0
    mid = argen.load(str(tmp_path / "mid"))
    assert json.loads((tmp_path / "mid" / "config.json").read_text())["meta"]["step"] == killed_at

    run_torchrun(["-m", "argen", *argv(res), "--resume"])  # a second try resumes the first: the same run
    state = json.loads((ref / fsdp.STATE_DIR / fsdp.STATE_JSON).read_text())
    assert state["ema"] and state["step"] == N
    a, b = _dcp_tensors(ref), _dcp_tensors(res)
    assert a.keys() == b.keys() and any(".exp_avg_sq" in k for k in a) and any(k.split("/")[1].startswith("ema.")
                                                                               for k in a)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert _max_diff(_weights(ref), _weights(res)) == 0
    # the export of the killed run held its step's EMA weights, not the final ones
    assert all(torch.equal(v, _weights(tmp_path / "mid")[k]) for k, v in mid.state_dict().items())
    assert _max_diff(_weights(tmp_path / "mid"), _weights(res)) > 0
    drop = {"train_seconds"}
    assert {k: v for k, v in state.items() if k not in drop} == \
        {k: v for k, v in json.loads((res / fsdp.STATE_DIR / fsdp.STATE_JSON).read_text()).items() if k not in drop}
    log = lambda run: [(r["step"], r["loss"]) for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())]
    assert log(res) == log(ref) and len(log(ref)) > 0
