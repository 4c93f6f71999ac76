"""`make lab` starts JupyterLab on notebooks/: check the same server answers GET /lab with 200, serves the
chapters, and saves notebooks through the course's hook (the Makefile's flags and notebooks/.jupyter/jupyter_lab_config.py, a
temp copy of the notebooks so nothing is autosaved)."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_lab_serves_notebooks(tmp_path):
    served = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", served)
    port, token = _free_port(), "course-test-token"
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"))
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--port={port}",
           f"--ServerApp.root_dir={served}", f"--IdentityProvider.token={token}", "--allow-root",
           f"--config={ROOT / 'notebooks' / '.jupyter' / 'jupyter_lab_config.py'}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        status = None
        deadline = time.time() + 90
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited early: {proc.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/lab?token={token}", timeout=5) as r:
                    status = r.status
                    page = r.read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert status == 200, "GET /lab never answered 200"
        assert "JupyterLab" in page
        with urllib.request.urlopen(f"{base}/api/contents?token={token}", timeout=10) as r:
            names = {item["name"] for item in json.loads(r.read())["content"]}
        assert "00_tour.ipynb" in names
        assert {p.name for p in (ROOT / "notebooks").glob("*.ipynb")} <= names
        # a save whose widget view has no saved state keeps only the view's text (no "model not found" later)
        view = {"output_type": "display_data", "metadata": {},
                "data": {"text/plain": ["[W: run this cell to use the widget]"],
                         "application/vnd.jupyter.widget-view+json": {"model_id": "0" * 32, "version_major": 2,
                                                                      "version_minor": 0}}}
        nb = {"cells": [{"cell_type": "code", "id": "a1", "metadata": {}, "source": "w", "execution_count": 1,
                         "outputs": [view]}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
        req = urllib.request.Request(f"{base}/api/contents/saved.ipynb?token={token}", method="PUT",
                                     data=json.dumps({"type": "notebook", "format": "json", "content": nb}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status in (200, 201)
        saved = json.loads((served / "saved.ipynb").read_text())
        assert saved["cells"][0]["outputs"][0]["data"] == {"text/plain": ["[W: run this cell to use the widget]"]}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
