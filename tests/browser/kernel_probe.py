"""Code the browser suite runs inside a chapter's live kernel (sent as source by :class:`KernelProbe`).

It lists the course widgets the kernel holds (by the classes the base class puts on their views), describes
their controls so the page can be driven, and, given the labels the page shows for every control, resolves
them to values and asks the widget which readout those values give (``ReportWidget.readout_for``).
"""
from __future__ import annotations

import importlib
import json
import math

import ipywidgets as W
from ipywidgets.widgets.widget import _instances


def _base(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def _kind(c) -> str:
    if isinstance(c, W.Play):
        return "play"
    if isinstance(c, W.SelectionSlider):
        return "selection_slider"
    if isinstance(c, W.ToggleButtons):
        return "toggle_buttons"
    if isinstance(c, (W.Dropdown, W.Select, W.RadioButtons)):
        return "dropdown"
    if isinstance(c, W.FloatLogSlider):
        return "log_slider"
    if isinstance(c, (W.IntSlider, W.FloatSlider)):
        return "slider"
    if isinstance(c, (W.IntText, W.BoundedIntText, W.FloatText, W.BoundedFloatText)):
        return "number_text"
    if isinstance(c, (W.Text, W.Textarea)):
        return "text"
    if isinstance(c, (W.Checkbox, W.ToggleButton)):
        return "checkbox"
    return "unknown:" + type(c).__name__


def _inputs(w) -> dict:
    """Every input of ``w`` by the name its view is tagged with (dsv3-control-<name>)."""
    out = {}
    for value in vars(w).values():
        if isinstance(value, W.Widget):
            for cls in value._dom_classes:
                if cls.startswith("dsv3-control-"):
                    out[cls[len("dsv3-control-"):]] = value
    return out


def _spec(name: str, c, observed: bool) -> dict:
    s = {"name": name, "kind": _kind(c), "type": type(c).__name__, "observed": observed,
         "disabled": bool(getattr(c, "disabled", False))}
    for key in ("min", "max", "step", "base"):
        if hasattr(c, key) and getattr(c, key) is not None:
            s[key] = getattr(c, key)
    if hasattr(c, "_options_labels"):
        s["options"] = list(c._options_labels)
    s["value"] = c.value if isinstance(c.value, (int, float, str, bool)) else repr(c.value)
    return s


def widgets(base_path: str) -> list:
    base = _base(base_path)
    found = []
    for w in list(_instances.values()):
        if isinstance(w, base) and getattr(w, "controls", None) is not None:
            inputs = _inputs(w)
            observed = {id(c) for c in w.controls.values()}
            found.append({"model_id": w.model_id, "cls": type(w).__name__,
                          "controls": [_spec(n, c, id(c) in observed) for n, c in inputs.items()]})
    return found


def _number(label: str) -> float:
    return float(label.strip().replace("\u2212", "-").replace("\u2009", "").replace(",", ""))


def resolve(c, label):
    """The value of control ``c`` that the page's ``label`` stands for (a raw string/bool from the DOM)."""
    kind = _kind(c)
    if kind in ("selection_slider", "toggle_buttons", "dropdown"):
        labels = list(c._options_labels)
        if label not in labels:
            raise ValueError(f"{label!r} is not one of the options {labels}")
        return c._options_values[labels.index(label)]
    if kind == "checkbox":
        return bool(label)
    if kind == "text":
        return label
    if kind == "number_text":
        x = _number(label)
        return int(x) if isinstance(c.value, int) else x
    if kind == "slider":
        x = _number(label)
        k = round((x - c.min) / c.step)
        v = c.min + k * c.step
        return int(v) if isinstance(c.value, int) else v
    if kind == "log_slider":
        x = _number(label)
        k = round((math.log(x, c.base) - c.min) / c.step)
        return c.base ** (c.min + k * c.step)
    raise ValueError(f"no reading for a {type(c).__name__}")


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def check(base_path: str, model_id: str, labels: dict) -> dict:
    """For the labels the page shows (control name -> label): the resolved values, whether the kernel's
    controls hold the same values, and the readout the widget's own functions give for them."""
    w = _instances[model_id]
    inputs = _inputs(w)
    resolved, mismatched = {}, {}
    for name, label in labels.items():
        c = inputs[name]
        try:
            v = resolve(c, label)
        except ValueError as exc:
            mismatched[name] = f"page shows {label!r}: {exc}"
            continue
        if not _same(v, c.value):
            mismatched[name] = f"page shows {label!r} = {v!r}, kernel holds {c.value!r}"
        if name in w.controls:
            resolved[name] = v
    expected = w.readout_for(**resolved)
    return {"resolved": {k: repr(v) for k, v in resolved.items()}, "mismatched": mismatched, "expected": expected}


def run(call: str, *args) -> str:
    return json.dumps(globals()[call](*args))
