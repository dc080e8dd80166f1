"""Shared test setup: one torch thread per xdist worker, two otherwise.

In-process CLI calls set torch's thread count (``argen ... --threads``, default all cores): each
test gets the worker's count back afterwards, or two workers with two threads each would
oversubscribe two cores and run 3-10x slower.
"""

import os

import pytest
import torch

THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    yield
    if torch.get_num_threads() != THREADS:
        torch.set_num_threads(THREADS)


@pytest.fixture
def one_thread():
    """One torch thread for this test (restored after it): results that must not depend on the thread count
    (pinned hashes), or maps too small to gain from a second thread."""
    torch.set_num_threads(1)
