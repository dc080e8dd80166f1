"""Shared test setup: one torch thread per xdist worker, two otherwise."""

import os

import torch

torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)
