"""Per-batch seeds: image i depends on the seed, the batch size and i only, so ``torchrun --nproc_per_node 2
-m argen sample ...`` writes, image for image, the files that one process writes.

The torchrun commands run through one small launcher (``python -m argen`` per command, plus a hook that
records which batches each rank sampled), so the two processes start torch once. It joins one process
group for all of them: a default group destroyed and made again in the same process gets the same
store keys, and a rank that is quicker to make it can read the other's address of the old one."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.distributed as dist
from helpers import run_torchrun, tiny_msvq, tiny_var

from argen.cli import main
from argen.errors import ArgenError
from argen.pipeline import Pipeline, batch_seed

CPU = ["--threads", "1", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def pipe():
    return Pipeline(tiny_msvq(), tiny_var(), {"cfg": 0.5})  # full sampling (no top-k): the draws matter


def test_image_i_depends_on_seed_batch_size_and_i_only(pipe):
    labels = [0, 1, 0, 1, 2, 0, 1]  # batches of 2: [0, 1] [0, 1] [2, 0] [1]
    full = pipe(labels, seed=3, batch_size=2)
    # a prefix of the labels: the same first images (they do not depend on what comes after)
    assert torch.equal(pipe(labels[:4], seed=3, batch_size=2), full[:4])
    # any batches in any order: the images of the whole call (what each torchrun rank does)
    b3, b1 = pipe.sample_batches(labels, seed=3, batch_size=2, batches=[3, 1])
    assert torch.equal(b3, full[6:]) and torch.equal(b1, full[2:4])
    assert pipe.sample_batches(labels, seed=3, batch_size=2, batches=[]) == []
    # batch 1 has batch 0's labels but its own seed: other images (batches are not copies of each other) ...
    assert not torch.equal(full[:2], full[2:4])
    # ... and not those of the neighbouring seed's batch 0 (seed + index would give exactly those)
    assert not torch.equal(full[2:4], pipe([0, 1], seed=4, batch_size=2))
    # the seed and the batch size matter
    assert not torch.equal(full, pipe(labels, seed=4, batch_size=2))
    assert not torch.equal(full[2:], pipe(labels, seed=3, batch_size=7)[2:])


def test_batch_0_keeps_the_one_stream_seeding(pipe):
    """Batch 0 is seeded with ``manual_seed(seed)`` as before, so pinned one-batch outputs stay."""
    assert batch_seed(5, 0) == 5 and batch_seed(5, 1) not in (5, 6) and batch_seed(5, 1) == batch_seed(5, 1)
    assert 0 <= batch_seed(2**63 - 1, 7) < 2**63  # a valid torch seed, whatever the call's seed
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        tokens = pipe.sampler.sample(pipe.generator, pipe.tokenizer, torch.tensor([0, 1, 2]), pipe.settings, gen)
        want = pipe.tokenizer.decode(tokens)
    assert torch.equal(pipe([0, 1, 2], seed=5, batch_size=3)[:3], want)
    assert torch.equal(pipe([0, 1, 2, 0], seed=5, batch_size=3)[:3], want)


def test_bad_batch_indices_are_one_line_errors(pipe):
    for bad in (4, -1, 1.0, True):
        with pytest.raises(ArgenError, match=r"^batches: .* \(0\.\.3\)$"):
            pipe.sample_batches([0] * 7, seed=0, batch_size=2, batches=[bad])


_LAUNCHER = r"""
import json, os, sys

import torch.distributed

import argen.pipeline as pipeline
import argen.training.dist
from argen.cli import main

torch.distributed.init_process_group("gloo")
argen.training.dist.shutdown = lambda: None  # one group for every command (see the module docstring)

_sample_batches = pipeline.Pipeline.sample_batches
log = None


def sample_batches(self, labels, seed=0, batch_size=256, batches=None, *args, **kwargs):
    batches = list(batches)
    with open(log, "a") as f:
        f.write(json.dumps({"rank": int(os.environ["RANK"]), "world": int(os.environ["WORLD_SIZE"]),
                            "batches": batches}) + "\n")
    return _sample_batches(self, labels, seed, batch_size, batches, *args, **kwargs)


pipeline.Pipeline.sample_batches = sample_batches
for command in json.loads(open(sys.argv[1]).read()):
    log = command["log"]
    code = main(command["argv"])
    if code != 0:
        sys.exit(f"{command['argv']} exited with {code}")
"""


# name: the `argen sample` arguments of one case (the checkpoint and --out added)
CASES = {
    "argen": ["--per-label", "5", "--batch-size", "2", "--seed", "5"],  # 3 classes: 15 images, 8 batches
    "adm": ["--per-label", "5", "--batch-size", "2", "--seed", "5", "--format", "adm"],
    "uneven": ["--labels", "1,2", "--per-label", "5", "--batch-size", "3", "--seed", "2"],  # 10 images: batches of 3, 3, 3, 1
    "one-batch": ["--labels", "2", "--per-label", "2", "--batch-size", "4", "--seed", "7"],  # rank 1 has none
}


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                    reason="torch.distributed with the gloo backend is not available")
def test_torchrun_2_processes_write_what_one_process_writes(pipe, tmp_path):
    ckpt = tmp_path / "gen"
    pipe.save_pretrained(ckpt)
    for name, extra in CASES.items():  # one process, in this one
        assert main(["sample", "--checkpoint", str(ckpt), *extra, "--out", str(tmp_path / "one" / name), *CPU]) == 0
    (tmp_path / "two").mkdir()
    commands = [{"log": str(tmp_path / f"{name}.log"),
                 "argv": ["sample", "--checkpoint", str(ckpt), *extra, "--out", str(tmp_path / "two" / name), *CPU]}
                for name, extra in CASES.items()]
    (tmp_path / "commands.json").write_text(json.dumps(commands))
    (tmp_path / "launcher.py").write_text(_LAUNCHER)
    run_torchrun([str(tmp_path / "launcher.py"), str(tmp_path / "commands.json")], timeout=180,
                 clean=lambda: (shutil.rmtree(tmp_path / "two"), (tmp_path / "two").mkdir()))

    for name in CASES:  # the npz (every array, meta included) and the PNG grid, byte for byte
        with np.load(tmp_path / "one" / f"{name}.npz") as one, np.load(tmp_path / "two" / f"{name}.npz") as two:
            assert sorted(one) == sorted(two)
            for key in one:
                assert np.array_equal(one[key], two[key]), f"{name}: {key} differs"
        assert (tmp_path / "one" / f"{name}.png").read_bytes() == (tmp_path / "two" / f"{name}.png").read_bytes()
    # only rank 0 wrote: the two files per case and nothing else (no temporary or per-rank files)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(f"{n}.{e}" for n in CASES
                                                                         for e in ("npz", "png"))
    with np.load(tmp_path / "two" / "adm.npz") as z:
        assert z["arr_0"].shape == (15, 8, 8, 3) and z["arr_1"].tolist() == [c for c in range(3) for _ in range(5)]
        assert json.loads(str(z["meta"]))["batch_size"] == 2
    # and the work was split: rank r sampled batches r, r + 2, ...
    want = {"argen": [[0, 2, 4, 6], [1, 3, 5, 7]], "adm": [[0, 2, 4, 6], [1, 3, 5, 7]], "uneven": [[0, 2], [1, 3]], "one-batch": [[0], []]}
    for name, per_rank in want.items():
        rows = [json.loads(x) for x in (tmp_path / f"{name}.log").read_text().splitlines()]
        assert sorted((row["rank"], row["world"], row["batches"]) for row in rows) == [
            (rank, 2, b) for rank, b in enumerate(per_rank)]
