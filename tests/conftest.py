"""Shared test settings: one torch thread (tiny tensors), fixed seeds, a CI-friendly hypothesis profile."""
import random
from pathlib import Path

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


BROWSER_TESTS = Path(__file__).resolve().parent / "browser"


def pytest_ignore_collect(collection_path, config):
    """Leave tests/browser out of ``pytest tests`` (it needs Chromium and minutes: ``make test-browser``),
    unless that folder or a file in it is named on the command line."""
    if Path(collection_path).resolve() != BROWSER_TESTS:
        return None
    here = config.invocation_params.dir
    named = [(here / str(a).split("::")[0]).resolve() for a in config.args]
    return None if any(p == BROWSER_TESTS or BROWSER_TESTS in p.parents for p in named) else True
