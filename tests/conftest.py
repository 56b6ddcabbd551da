"""Shared test setup: fixed seeds, and markers."""

import os
import random
import zlib

import numpy as np
import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU")
    config.addinivalue_line("markers", "dali: needs NVIDIA DALI")
    config.addinivalue_line("markers", "slow: takes more than ~30 s on 2 CPU cores")


_CASE_SEED = 0


def case_seed() -> int:
    """The current test case's seed (crc32 of its node id): the same on every run and machine, different per
    case. Use it for every generator a test makes, e.g. ``np.random.default_rng(case_seed())``; a failing case
    prints it (see pytest_runtest_makereport)."""
    return _CASE_SEED


@pytest.fixture(autouse=True)
def _seed(request):
    global _CASE_SEED
    _CASE_SEED = zlib.crc32(request.node.nodeid.encode())
    # the global generators keep their fixed seed 0 (what the existing tolerances were checked with)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        seed = zlib.crc32(item.nodeid.encode())
        report.sections.append(("seed", f"case_seed() = {seed}; global torch/numpy/random seeds = 0"))


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
