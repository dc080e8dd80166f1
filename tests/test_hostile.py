"""Hostile input, one table: every case of tests/hostile_cases/ runs as a real `argen` process (tests/hostile.py).

A case passes when the process exits with the expected code (2 for bad input: one stderr line that
names the problem, no traceback), and every file it names as ``unchanged`` has the same bytes as
before and every path it names as ``absent`` does not exist: nothing clobbered, nothing half-written.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hostile import expand, fingerprint, run_cases
from hostile_cases import CASES, SETUPS

from argen.cli import main

CPU = ["--threads", "1", "--quiet", "--device", "cpu"]
TINY_TOK = ["--set", "ch=8", "--set", "z_channels=4", "--set", "codebook_size=16"]
TINY_GEN = ["--set", "depth=1", "--set", "width=32", "--set", "heads=2"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    """A trained tiny tokenizer and VAR (checkpoints, train state, logs), then each area's own files."""
    root = tmp_path_factory.mktemp("hostile")
    ws = {"root": root, "tok": root / "tok", "gen": root / "gen"}
    assert main(["train", "tokenizer", "--preset", "msvq-digits", "--steps", "4", "--batch-size", "16",
                 "--out", str(ws["tok"]), *TINY_TOK, *CPU]) == 0
    assert main(["train", "generator", "--preset", "var-digits", "--tokenizer", str(ws["tok"]), "--steps", "4",
                 "--batch-size", "16", "--out", str(ws["gen"]), *TINY_GEN, *CPU]) == 0
    for setup in SETUPS:
        setup(ws)
    return ws


@pytest.fixture(scope="module")
def results(workspace) -> dict[str, tuple]:
    runs = workspace["root"] / "runs"
    before = {c.id: {p: fingerprint(Path(expand(p, {**workspace, "tmp": runs / c.id}))) for p in c.unchanged}
              for c in CASES}
    ran = run_cases(CASES, workspace, runs)
    return {c.id: (*ran[c.id], before[c.id]) for c in CASES}


def test_the_table_is_whole():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    assert len(ids) >= 50 or "HOSTILE_AREA" in os.environ


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case, results, workspace):
    rc, err, before = results[case.id]
    assert "Traceback" not in err, f"traceback on stderr:\n{err}"
    assert rc == case.rc, f"exit code {rc}, expected {case.rc}; stderr: {err}"
    if case.rc == 2:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].strip(), f"stderr is not exactly one line:\n{err}"
        for w in case.words:
            assert re.search(w, lines[0], re.IGNORECASE), f"{w!r} not in {lines[0]!r}"
    tmp = workspace["root"] / "runs" / case.id
    for p in case.unchanged:
        assert fingerprint(Path(expand(p, {**workspace, "tmp": tmp}))) == before[p], f"{p} changed"
    for p in case.absent:
        assert not Path(expand(p, {**workspace, "tmp": tmp})).exists(), f"{p} exists"
