"""The course's JupyterLab set-up without a browser: the save hook in notebooks/.jupyter/jupyter_lab_config.py, the settings
it ships, notebooks/.jupyter/normalize_notebooks.py, and ReportWidget.readout_for (the hook the browser suite checks
readouts with). The browser suite (tests/browser) shows the same things in a real page."""
import copy
import json
import re
import runpy
from html import unescape
from pathlib import Path

import pytest
from traitlets.config import Config

ROOT = Path(__file__).resolve().parents[1]
VIEW = "application/vnd.jupyter.widget-view+json"
STATE = "application/vnd.jupyter.widget-state+json"


@pytest.fixture(scope="module")
def lab_config():
    return runpy.run_path(str(ROOT / "notebooks" / ".jupyter" / "jupyter_lab_config.py"), init_globals={"get_config": Config})


def _view(model_id, text):
    return {"output_type": "display_data", "metadata": {},
            "data": {"text/plain": [text], VIEW: {"model_id": model_id, "version_major": 2, "version_minor": 0}}}


def _model(name, **state):
    return {"model_module": "@jupyter-widgets/controls", "model_module_version": "2.0.0", "model_name": name,
            "state": state}


def _notebook(outputs, state=None):
    nb = {"cells": [{"cell_type": "code", "id": "c1", "metadata": {}, "source": "w", "execution_count": 1,
                     "outputs": outputs}],
          "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
          "nbformat": 4, "nbformat_minor": 5}
    if state is not None:
        nb["metadata"]["widgets"] = {STATE: {"state": state, "version_major": 2, "version_minor": 0}}
    return nb


def test_hook_drops_views_whose_state_is_not_saved(lab_config):
    hook = lab_config["drop_unsaved_widget_views"]
    box = _model("VBoxModel", children=["IPY_MODEL_s1", "IPY_MODEL_h1"], layout="IPY_MODEL_l1")
    state = {"b1": box, "s1": _model("IntSliderModel", value=3, layout="IPY_MODEL_l2"),
             "h1": _model("HTMLModel", value="x"), "l1": _model("LayoutModel"), "l2": _model("LayoutModel"),
             "stale": _model("IntSliderModel", value=9)}
    nb = _notebook([_view("b1", "[W: run this cell to use the widget]"), _view("live", "bar: 100%|###| 5/5")],
                   state)
    model = {"type": "notebook", "content": nb}
    hook(model=model, path="x.ipynb", contents_manager=None)
    outs = model["content"]["cells"][0]["outputs"]
    assert VIEW in outs[0]["data"]                                   # its state is saved: kept
    assert outs[1]["data"] == {"text/plain": ["bar: 100%|###| 5/5"]}  # not saved: only the text is left
    kept = model["content"]["metadata"]["widgets"][STATE]["state"]
    assert set(kept) == {"b1", "s1", "h1", "l1", "l2"}                # reachable from the view; "stale" pruned


def test_hook_removes_widget_metadata_when_no_view_is_left(lab_config):
    hook = lab_config["drop_unsaved_widget_views"]
    nb = _notebook([_view("live", "[W: run this cell to use the widget]")], {"old": _model("IntSliderModel")})
    model = {"type": "notebook", "content": nb}
    hook(model=model, path="x.ipynb")
    assert "widgets" not in model["content"]["metadata"]
    assert model["content"]["cells"][0]["outputs"][0]["data"] == {"text/plain": ["[W: run this cell to use the widget]"]}
    text = {"type": "file", "content": "hello"}
    hook(model=text, path="x.txt")                                   # other files untouched
    assert text == {"type": "file", "content": "hello"}


def test_config_and_settings(lab_config):
    c = lab_config["c"]
    manager = c.ServerApp.contents_manager_class()
    assert manager._pre_save_hooks == [lab_config["drop_unsaved_widget_views"]]
    settings_dir = Path(c.LabApp.app_settings_dir)
    overrides = json.loads((settings_dir / "overrides.json").read_text())
    assert overrides["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"
    assert overrides["@jupyter-widgets/jupyterlab-manager:plugin"]["saveState"] is False


def test_normalize_notebooks(tmp_path):
    norm = runpy.run_path(str(ROOT / "notebooks" / ".jupyter" / "normalize_notebooks.py"))
    spec = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb = _notebook([_view("b1", "[W: run this cell to use the widget]")], {"b1": _model("VBoxModel")})
    before = copy.deepcopy(nb)
    out = norm["normalize"](nb, spec)
    assert nb == before                                              # input not modified
    assert out["metadata"] == {"kernelspec": spec}
    assert out["cells"][0]["outputs"][0]["data"] == {"text/plain": ["[W: run this cell to use the widget]"]}
    assert norm["normalize"](out, spec) == out                       # idempotent
    path = tmp_path / "n.ipynb"
    path.write_text(norm["dump"](nb))
    installed = norm["installed_kernelspec"]()
    assert norm["main"](["--check", str(path)]) == 1
    assert norm["main"]([str(path)]) == 0
    assert json.loads(path.read_text())["metadata"]["kernelspec"] == installed
    assert norm["main"](["--check", str(path)]) == 0


def _shown(w) -> str:
    """The readout's text as the page shows it (its textContent)."""
    return unescape(re.sub(r"<[^>]*>", "", w.readout.value))


def test_readout_for_matches_the_readout_after_moving_the_controls():
    from dsv3_lessons.course.ch01_kv_cache.kv_cache import kv_cache_report
    from dsv3_lessons.course.ch01_kv_cache.widget import kv_cache_widget

    w = kv_cache_widget()
    before, image = w.readout.value, w.image.value
    settings = {"model": "LLaMA-3.1-405B", "context": 1024, "batch": 8, "dtype": "fp8", "kv_lora_rank": 64}
    text = w.readout_for(**settings)
    assert (w.readout.value, w.image.value) == (before, image)      # the displayed widget is untouched
    assert text != _shown(w)
    for name, value in settings.items():
        setattr(getattr(w, name), "value", value)
    assert _shown(w) == text                                        # the same text the widget then shows
    with pytest.raises(ValueError) as rejected:                     # the plain function's own error
        kv_cache_report("LLaMA-3.1-405B", 1024, 0, "fp8", 64, 64, w.budget_gb, w.configs)
    assert w.readout_for(batch=0) == f"error: {rejected.value}"
    with pytest.raises(ValueError, match="unknown control"):
        w.readout_for(colour="red")


def test_controls_are_named_and_tagged_for_the_page():
    from dsv3_lessons.course.ch09_fp8.widget import fp8_widget

    w = fp8_widget()
    assert list(w.controls) == ["outlier", "granularity", "fmt"]
    assert "dsv3-report" in w._dom_classes and f"dsv3-model-{w.model_id}" in w._dom_classes
    assert w.outlier._dom_classes == ("dsv3-control-outlier",)
    assert "dsv3-readout" in w.readout._dom_classes and "dsv3-figure" in w.image._dom_classes
