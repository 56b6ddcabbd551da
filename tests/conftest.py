"""Shared test setup: fixed seeds, and markers."""

import os
import random

import numpy as np
import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU")
    config.addinivalue_line("markers", "dali: needs NVIDIA DALI")
    config.addinivalue_line("markers", "slow: takes more than ~30 s on 2 CPU cores")


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
