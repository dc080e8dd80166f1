"""The hostile-input harness: each case is a real `argen` process; it must exit 2 with one line and change nothing.

A driver process imports argen once and forks one child per case: a real process with its own
exit code and stderr, so a crash, a segfault or a hang in one case cannot take the others with it
(a hang is killed after the case's timeout). A case may cap the size of any file the child writes
(``max_file_bytes``, RLIMIT_FSIZE), which makes a write fail as on a full disk.

    Case("lr-inf", ["train", "tokenizer", "--preset", "msvq-digits", "--lr", "inf", "--out", "{tmp}/x"],
         words=("--lr", "finite"), unchanged=("{tok}",))

``{name}`` in ``argv`` and ``unchanged`` is replaced by the workspace path ``name`` (tests/test_hostile.py
builds the workspace; ``{tmp}`` is a folder of the case's own).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Case:
    id: str
    argv: list[str]                       # argen's arguments ("{name}" = a workspace path)
    words: tuple[str, ...] = ()           # case-insensitive regexes the one stderr line must contain
    unchanged: tuple[str, ...] = ()       # files or folders whose bytes must not change
    absent: tuple[str, ...] = ()          # paths that must not exist afterwards (nothing half-written)
    rc: int = 2                           # the expected exit code (0: a correct result instead of an error)
    timeout: float = 120.0                # seconds before the child is killed (a hang is a failure)
    max_file_bytes: int | None = None     # RLIMIT_FSIZE of the child: writes past it fail as on a full disk
    stdin: str | None = None
    env: dict = field(default_factory=dict)


DRIVER = r"""
import json, os, resource, runpy, signal, sys, time, traceback
# import once what the commands import lazily; each case then runs in a forked child
import torch  # noqa: F401
import argen.checkpoint, argen.cli, argen.data, argen.models, argen.pipeline, argen.training.run  # noqa: E401,F401

results = {}
for case in json.loads(sys.argv[1]):
    pid = os.fork()
    if pid == 0:
        os.environ.update(case["env"])
        if case["max_file_bytes"] is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (case["max_file_bytes"], case["max_file_bytes"]))
        os.chdir(case["cwd"])
        out = os.open(os.devnull, os.O_WRONLY)
        err = os.open(case["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(out, 1)
        os.dup2(err, 2)
        sys.argv = ["argen", *case["argv"]]
        code = 0
        try:
            runpy.run_module("argen", run_name="__main__", alter_sys=True)  # = python -m argen
        except SystemExit as e:  # what the interpreter does with it
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    t0 = time.time()
    deadline = t0 + case["timeout"]
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            results[case["id"]] = os.waitstatus_to_exitcode(status)
            print(f"{case['id']}\t{time.time() - t0:.2f}", file=sys.stderr)
            break
        if time.time() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            results[case["id"]] = "timeout"
            break
        time.sleep(0.02)
print(json.dumps(results))
"""


def expand(text: str, ws: dict[str, Path]) -> str:
    return text.format(**{k: str(v) for k, v in ws.items()})


def fingerprint(path: Path) -> str | None:
    """The bytes of a file, or of every file under a folder (with their names): None when absent."""
    if not path.exists() and not path.is_symlink():
        return None
    h = hashlib.sha256()
    files = [path] if not path.is_dir() else sorted(p for p in path.rglob("*") if not p.is_dir())
    for f in files:
        h.update(str(f.relative_to(path) if f != path else "").encode() + b"\0")
        h.update(f.read_bytes() if f.is_file() else os.readlink(f).encode())
    return h.hexdigest()


def run_cases(cases: list[Case], ws: dict[str, Path], root: Path) -> dict[str, tuple[int | str, str]]:
    """Run every case (each in a fresh folder ``{tmp}`` under ``root``): id -> (exit code or "timeout", stderr)."""
    spec = []
    for c in cases:
        tmp = root / c.id
        tmp.mkdir(parents=True, exist_ok=True)
        w = {**ws, "tmp": tmp}
        spec.append({"id": c.id, "argv": [expand(a, w) for a in c.argv], "cwd": str(tmp), "env": c.env,
                     "stderr": str(root / f"{c.id}.stderr"), "timeout": c.timeout,
                     "max_file_bytes": c.max_file_bytes})
    driver = root / "driver.py"
    driver.write_text(DRIVER)
    r = subprocess.run([sys.executable, str(driver), json.dumps(spec)], check=False, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=60 + sum(c.timeout for c in cases))
    assert r.returncode == 0, r.stderr[-3000:]
    (root / "seconds.tsv").write_text(r.stderr)  # each case's wall time, for finding slow cases
    codes = json.loads(r.stdout.strip().splitlines()[-1])
    return {c.id: (codes[c.id], (root / f"{c.id}.stderr").read_text(errors="replace")) for c in cases}
