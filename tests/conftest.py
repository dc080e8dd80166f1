"""Shared test setup: one torch thread per xdist worker, two otherwise.

In-process CLI calls set torch's thread count (``argen ... --threads``, default all cores): each
test gets the worker's count back afterwards, or two workers with two threads each would
oversubscribe two cores and run 3-10x slower.
"""

import os

import pytest
import torch
from helpers import TINY_TEXT_GEN, TINY_TEXT_TOK

THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu",
                     help="accelerator for tests/test_device.py, e.g. cuda (default cpu: those tests skip; the rest "
                          "of the suite runs on the CPU either way)")
torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    yield
    if torch.get_num_threads() != THREADS:
        torch.set_num_threads(THREADS)


@pytest.fixture
def one_thread():
    """One torch thread for this test (restored after it): results that must not depend on the thread count
    (pinned images), or maps too small to gain from a second thread."""
    torch.set_num_threads(1)


CPU = ["--threads", "1", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="session")
def shapes_raster(tmp_path_factory):
    """raster-shapes, tiny, trained 3 steps on the shapes captions through the CLI: ``root/gen`` (with its
    tokenizer ``root/tok``)."""
    from argen.cli import main

    root = tmp_path_factory.mktemp("t2i")
    assert main(["train", "tokenizer", "--preset", "vq-shapes", "--out", str(root / "tok"), "--steps", "2",
                 "--batch-size", "8", *TINY_TEXT_TOK, *CPU]) == 0
    assert main(["train", "generator", "--preset", "raster-shapes", "--tokenizer", str(root / "tok"),
                 "--out", str(root / "gen"), "--steps", "3", "--batch-size", "8", *TINY_TEXT_GEN, *CPU]) == 0
    torch.set_num_threads(THREADS)
    return root
