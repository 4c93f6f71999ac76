"""Everything the browser suite knows about particular widgets, in one file (import paths, settings to show,
readout parts that depend on the machine, known failures). The suite finds chapters and widgets by itself;
nothing here is needed for a new widget to be tested.
"""
from __future__ import annotations

#: the base class every course widget derives from (``module:Class``); the kernel probe imports it
REPORT_WIDGET = "dsv3_lessons.course.common.widget:ReportWidget"

#: text the base class stores beside a widget view (its ``__repr__``): marks a widget output in a stored
#: notebook whose widget views were stripped
REPORT_NOTE = r"^\[(\w+): run this cell to use the widget\]$"

#: parts of a readout that are measured, not computed, and so differ between two computations with the same
#: settings: widget class -> regexes; each match is replaced by "<measured>" before readouts are compared
VOLATILE = {
    "SpeculativeWidget": [r"plain \d+ tokens/s, speculative \d+ tokens/s: \d+\.\d+x"],
}

#: values tried in free-text boxes (there are no ends to drag to): (widget class, control) -> values; the
#: original value is restored afterwards. A text box not named here gets its value with the last character
#: removed.
TEXT_VALUES = {
    ("SpeculativeWidget", "prompt"): ["KING. "],
}

#: "one interesting setting" per widget for the second screenshot: widget class -> [(control, label as shown
#: in the page)], applied in order. A widget not named here is shot after every control has been moved.
INTERESTING = {
    "KVCacheWidget": [("model", "LLaMA-3.1-405B"), ("batch", "32")],
    "MLARankWidget": [("kv_lora_rank", "256")],
    "RopeWidget": [("query_pos", "300"), ("yarn_factor", "1")],
    "RoutingExplorer": [("bias", "+1.00")],
    "ExpertLoadWidget": [("step", "20")],
    "SpeculativeWidget": [("k", "4")],
    "FP8Widget": [("outlier", "100000"), ("granularity", "1×128 tiles")],
}

#: failures known today, each with its cause: the test that meets one is marked xfail(strict=True), so it
#: turns into a failure as soon as the cause is fixed and the entry must be removed. Keys:
#: ("open", chapter stem) for the opened-notebook checks, ("control", widget class, control) for a control.
KNOWN_FAILURES: dict[tuple, str] = {}
