"""Shared test settings: fixed threads and seeds, a CI-friendly hypothesis profile."""
import os
import random

import pytest
import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

settings.register_profile("course", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("course")


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    torch.manual_seed(0)
    yield
