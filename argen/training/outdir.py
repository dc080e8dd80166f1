"""The output folder of a training run: refuse what would lose work or write outside it, and lock it.

``argen train`` checks ``--out`` before anything is built (``check_run_folder``), removes an old run
only with ``--overwrite`` and only once it holds the folder's lock (``lock_folder``, ``clear_run``).
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
from pathlib import Path

from argen.checkpoint import CONFIG, LOG, METRICS, TOKENIZER_DIR, TRAIN_STATE, WEIGHTS
from argen.errors import CheckpointError

LOCK = ".lock"
RUN_FILES = (CONFIG, WEIGHTS, TRAIN_STATE, "train_state_dcp", LOG, METRICS, TOKENIZER_DIR)  # what one training
# run writes ("train_state_dcp": an FSDP run's sharded train state, argen.training.fsdp.STATE_DIR)


def check_run_folder(out: str | Path, *, resume: bool, overwrite: bool) -> list[Path]:
    """Refuse to train into ``out`` when that would lose work or write outside it; returns the files of
    the old run that ``overwrite`` will remove (``clear_run``, once the folder is locked).

    A file of the run that is a symlink leading out of ``out`` would be written through (the log is
    appended to, the tokenizer copy fills the folder it points to). A folder that holds another run
    needs ``resume`` (continue it) or ``overwrite`` (replace it). Reads only."""
    out = Path(out)
    if resume and overwrite:
        raise CheckpointError("--resume and --overwrite exclude each other: continue the run or replace it")
    if not out.exists() and not out.is_symlink():
        return []
    if not out.is_dir():
        raise CheckpointError(f"--out {out}: not a folder")
    root = out.resolve()
    found = [out / n for n in RUN_FILES if (out / n).exists() or (out / n).is_symlink()]
    for p in found + [p for p in (out / TOKENIZER_DIR).glob("*") if p.is_symlink()]:
        if p.is_symlink() and not p.resolve().is_relative_to(root):
            raise CheckpointError(f"--out {out}: {p.relative_to(out)} is a symlink to {p.resolve()}, outside the "
                                  "output folder; refusing to write through it")
    if found and not (resume or overwrite):
        raise CheckpointError(f"--out {out} already holds a training run ({found[0].name}); pass --resume to "
                              "continue it or --overwrite to replace it")
    return [] if resume else found


def clear_run(files: list[Path]) -> None:
    """``--overwrite``: remove the old run's files (never anything else of the folder), symlinks themselves."""
    for p in files:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


@contextlib.contextmanager
def lock_folder(out: str | Path):
    """Hold ``out/.lock`` (an exclusive flock) while training: a second training into ``out`` fails at once.

    The lock goes with the process (killed or not), so a stale lock file never blocks a later run."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CheckpointError(f"--out {out}: another training is writing to this folder "
                                  f"(it holds {out / LOCK})") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
