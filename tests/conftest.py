"""Shared test settings: one torch thread (tiny tensors), fixed seeds, a CI-friendly hypothesis profile."""
import random

import pytest
import torch
from hypothesis import HealthCheck, settings

# Tiny tensors: one thread is fastest and avoids oversubscription when other work shares the cores.
torch.set_num_threads(1)

settings.register_profile("course", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("course")


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    torch.manual_seed(0)
    yield
