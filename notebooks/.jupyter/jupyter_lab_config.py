"""JupyterLab configuration for the course: ``make lab`` and the browser tests start Lab with
``--config=notebooks/.jupyter/jupyter_lab_config.py``.

- Settings defaults come from ``notebooks/.jupyter/settings/overrides.json``: no news toast, and widget state is not saved
  into notebooks (``saveState: false``, Lab's default, kept explicit). Saving it looks like the fix for a
  returning learner's "Error displaying widget: model not found", but in JupyterLab 4 / ipywidgets 8 it
  (1) marks every notebook with stored widget state as changed as soon as it opens (each restored model
  sets the dirty flag), and (2) saves only widgets alive in the kernel, so a notebook reopened and saved
  again without re-running loses the state its outputs point to (ipywidgets issue 3888).
- :func:`drop_unsaved_widget_views` runs before every save (through the contents manager below): a widget view whose model state is not saved
  in the notebook would read "Error displaying widget: model not found" when the notebook is reopened, so
  its widget-view entry is dropped and the output keeps the text the kernel sent with it (a course
  widget's one-line "run this cell" note, a progress bar's final line). State no view refers to is pruned.
"""
from __future__ import annotations

from pathlib import Path

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def _references(value, found: set) -> None:
    """Model ids a widget state refers to ("IPY_MODEL_<id>" strings, nested anywhere)."""
    if isinstance(value, str):
        if value.startswith("IPY_MODEL_"):
            found.add(value[len("IPY_MODEL_"):])
    elif isinstance(value, dict):
        for v in value.values():
            _references(v, found)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _references(v, found)


def drop_unsaved_widget_views(model: dict, path: str = "", contents_manager=None, **kwargs) -> None:
    """Jupyter server pre-save hook (``ContentsManager.pre_save_hook``): edits ``model["content"]`` in place.

    For a notebook: removes the widget-view entry of every output whose model id is not in the notebook's
    saved widget state (``metadata.widgets``), keeping the output's other entries (``text/plain``), then
    keeps only the saved state reachable from the remaining views (drops ``metadata.widgets`` when none is).
    Other files are left alone.
    """
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    nb = model["content"]
    meta = nb.setdefault("metadata", {})
    state = meta.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    roots = set()
    for cell in nb.get("cells", []):
        for out in cell.get("outputs") or []:
            data = out.get("data")
            if not isinstance(data, dict) or WIDGET_VIEW not in data:
                continue
            model_id = (data[WIDGET_VIEW] or {}).get("model_id")
            if model_id in state:
                roots.add(model_id)
            else:
                del data[WIDGET_VIEW]
    if "widgets" not in meta:
        return
    keep, todo = set(), list(roots)
    while todo:
        model_id = todo.pop()
        if model_id in keep or model_id not in state:
            continue
        keep.add(model_id)
        refs: set = set()
        _references(state[model_id], refs)
        todo.extend(refs)
    if keep:
        meta["widgets"][WIDGET_STATE]["state"] = {k: v for k, v in state.items() if k in keep}
    else:
        del meta["widgets"]


def _contents_manager_class():
    from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager

    class CourseContentsManager(AsyncLargeFileManager):
        """Jupyter server's default contents manager, running :func:`drop_unsaved_widget_views` before saves.
        (Registered here rather than as ``ContentsManager.pre_save_hook``: Lab applies its configuration
        twice, and setting that trait twice logs a warning.)"""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.register_pre_save_hook(drop_unsaved_widget_views)

    return CourseContentsManager


c = get_config()  # noqa: F821 (provided by the config loader)
c.ServerApp.contents_manager_class = _contents_manager_class()
c.LabApp.app_settings_dir = str(Path(__file__).resolve().parent / "settings")
