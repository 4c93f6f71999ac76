"""Browser suite: the course in JupyterLab, driven in Chromium with Playwright (``make test-browser``).

Not part of ``pytest tests`` (tests/conftest.py leaves this folder out unless it is named): it needs Chromium,
Playwright (the ``browser`` extra) and a few minutes. Settings, by environment variable:

- ``DSV3_CHROMIUM``: the Chromium binary (default ``/usr/bin/chromium``, else ``chromium`` on PATH);
- ``DSV3_BROWSER_SHOTS``: folder for the widget screenshots (default ``build/browser-shots``);
- ``DSV3_WIDGET_LATENCY``: the latency JSON (default ``build/widget_latency.json``), printed by
  ``bench/widget_latency.py``;
- ``DSV3_BROWSER_CHAPTERS``: only these chapters (comma-separated prefixes, e.g. ``01,05``), for a quick run.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path

import pytest

from labdriver import ROOT, LabServer

CHROMIUM_HELP = ("the browser tests need Chromium: on Debian/Ubuntu `apt-get install -y chromium` (as root), or "
                 "point DSV3_CHROMIUM at a Chromium/Chrome binary")


def chromium_path() -> str | None:
    explicit = os.environ.get("DSV3_CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def pytest_configure(config):
    if chromium_path() is None:
        where = os.environ.get("DSV3_CHROMIUM") or "/usr/bin/chromium"
        raise pytest.UsageError(f"Chromium not found at {where} or on PATH: {CHROMIUM_HELP}")
    try:
        import playwright  # noqa: F401
    except ImportError as exc:
        raise pytest.UsageError("the browser tests need Playwright: pip install -e '.[browser]' "
                                "(make test-browser does it)") from exc


def out_path(var: str, default: str) -> Path:
    p = Path(os.environ.get(var, ROOT / default))
    return p if p.is_absolute() else ROOT / p


@pytest.fixture(scope="session")
def shots_dir() -> Path:
    d = out_path("DSV3_BROWSER_SHOTS", "build/browser-shots")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    server = LabServer(ROOT / "notebooks", tmp_path_factory.mktemp("lab"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    b = pw.chromium.launch(executable_path=chromium_path(), headless=True,
                           args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                 "--disable-dev-shm-usage"])
    yield b
    b.close()
    pw.stop()


@pytest.fixture(scope="session")
def latency_log(browser):
    """Collects every widget move; written to the latency JSON when the session ends (also on failures)."""
    moves: list[dict] = []
    t0 = time.time()
    yield moves
    path = out_path("DSV3_WIDGET_LATENCY", "build/widget_latency.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    import jupyterlab
    import ipywidgets
    meta = {"measured": time.strftime("%Y-%m-%d %H:%M:%S"), "cores": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version(), "chromium": browser.version, "jupyterlab": jupyterlab.__version__,
            "ipywidgets": ipywidgets.__version__, "suite_seconds": round(time.time() - t0, 1),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
            "what": "release event (pointerup/keydown/change/click) -> the widget's <img> src changes, ms"}
    path.write_text(json.dumps({"meta": meta, "moves": moves}, indent=1, ensure_ascii=False) + "\n")
