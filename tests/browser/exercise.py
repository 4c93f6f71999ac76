"""Moving every control of a course widget in the page, as a learner would, and checking each result.

For each control: both ends and a middle value, the end it is not at first (sliders and selection sliders:
Home, End, a tap at the middle of the track; dropdowns and toggle buttons: first, last and middle option;
number boxes: min, max, middle typed; text boxes: values from the registry, then the original; checkboxes: clicked twice; Play: played for a
few frames). After each move the page's control labels are read back, the kernel resolves them to values and
the widget's ``readout_for`` gives the readout those values must show; the page's readout must come to show
it (parts the registry marks as measured are masked). Each move that changed the figure gives one latency:
release event -> the figure's ``src`` changes (a MutationObserver in the page).
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field

import widget_registry as registry
from labdriver import KernelProbe, NotebookPage

#: seconds to wait for the kernel to finish handling a change (the slowest widget takes ~2 s on 2 cores)
KERNEL_TIMEOUT = 90.0
#: seconds to wait, after the kernel is done, for the page to show the new figure / readout (generous: on a
#: loaded machine the page can lag the kernel by seconds)
PAGE_TIMEOUT = 10.0


@dataclass
class Move:
    chapter: str
    widget: str
    control: str
    action: str
    before: object = None
    after: object = None
    changed: bool = False
    latency_ms: float | None = None      # release -> new figure
    readout_ms: float | None = None      # release -> new readout text
    problem: str | None = None
    frames: list = field(default_factory=list)  # Play: per-frame latencies (ms)

    def record(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, [])}


def mask(widget: str, text: str) -> str:
    for pattern in registry.VOLATILE.get(widget, []):
        text = re.sub(pattern, "<measured>", text)
    return text.strip()


class WidgetDriver:
    """Drives one course widget (``model_id``) in ``page``; ``spec`` is the kernel's description of it."""

    def __init__(self, page: NotebookPage, probe: KernelProbe, chapter: str, spec: dict):
        self.page, self.probe, self.chapter = page, probe, chapter
        self.model_id, self.cls = spec["model_id"], spec["cls"]
        self.controls = {c["name"]: c for c in spec["controls"]}
        self.labelled = [n for n, c in self.controls.items() if c["kind"] != "play"]
        self.moves: list[Move] = []

    # -- one move --
    def _act(self, name: str, action: str, do) -> Move:
        move = Move(self.chapter, self.cls, name, action)
        move.before = self.page.labels(self.model_id, [name])[name] if name in self.labelled else None
        self.probe.drain()
        mark = self.page.now()
        do()
        if name in self.labelled:
            deadline = time.time() + 3.0
            while True:
                move.after = self.page.labels(self.model_id, [name])[name]
                if move.after != move.before or time.time() > deadline:
                    break
                time.sleep(0.1)
            move.changed = move.after != move.before
        if move.changed and not self.probe.wait_quiet(KERNEL_TIMEOUT):
            move.problem = f"the kernel handled no change within {KERNEL_TIMEOUT:.0f} s"
        self._timings(move, mark)
        self._check(move)
        if move.changed and move.latency_ms is None:
            self._timings(move, mark, wait=False)  # a loaded machine: the figure came while the readout was checked
        if move.changed and move.latency_ms is None and move.readout_ms is None and not move.problem:
            move.problem = "the page shows the new value, but neither the figure nor the readout changed"
        self.moves.append(move)
        return move

    def _timings(self, move: Move, mark: float, wait: bool = True) -> None:
        fig_seen = time.time()
        deadline = time.time() + (PAGE_TIMEOUT if move.changed and wait else 0.0)
        while True:  # the figure, and the readout that follows it by a few ms (if either changes)
            releases, muts = self.page.events_since(mark)
            mine = [m for m in muts if m["model"] == self.model_id]
            fig = next((m for m in mine if m["kind"] == "figure"), None)
            out = next((m for m in mine if m["kind"] == "readout"), None)
            if (fig is not None and (out is not None or time.time() > min(deadline, fig_seen + 1.0))) \
                    or time.time() > deadline:
                break
            fig_seen = time.time() if fig is None else fig_seen
            time.sleep(0.1)
        rel = [r["t"] for r in releases]
        if fig is not None and rel:
            move.latency_ms = round(fig["t"] - max([t for t in rel if t <= fig["t"]], default=rel[0]), 1)
        if out is not None and rel:
            move.readout_ms = round(out["t"] - max([t for t in rel if t <= out["t"]], default=rel[0]), 1)

    def _check(self, move: Move) -> None:
        """The page's control labels are the kernel's values, and the page's readout is what the widget's own
        functions give for them."""
        labels = self.page.labels(self.model_id, self.labelled)
        result = self.probe.call("check", registry.REPORT_WIDGET, self.model_id, labels)
        problems = [f"{n}: {why}" for n, why in result["mismatched"].items()]
        expected = mask(self.cls, result["expected"])
        deadline = time.time() + PAGE_TIMEOUT
        while True:
            shown = mask(self.cls, self.page.readout(self.model_id))
            if shown == expected or time.time() > deadline:
                break
            time.sleep(0.1)
        if shown != expected:
            problems.append(f"readout shows {shown!r}, the widget's functions give {expected!r} for {labels}")
        if problems:
            move.problem = "; ".join(filter(None, [move.problem, *problems]))

    # -- the actions, by kind of control --
    def _slider_actions(self, name: str):
        el = self.page.control(self.model_id, name)
        handle = el.locator(".noUi-handle").first
        track = el.locator(".noUi-base").first

        def key(k):
            return lambda: (handle.focus(), handle.press(k))

        def tap():
            box = track.bounding_box()
            self.page.page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        spec = self.controls[name]
        label = self.page.labels(self.model_id, [name])[name]  # now: other controls may have moved it
        if "options" in spec:  # a selection slider: its label is an option's
            at_min = label == spec["options"][0]
        else:
            low = spec["base"] ** spec["min"] if spec["kind"] == "log_slider" else spec["min"]
            try:
                at_min = math.isclose(float(label.replace("\u2212", "-")), low, rel_tol=1e-3, abs_tol=1e-9)
            except ValueError:
                at_min = False
        ends = [("max (End)", key("End")), ("min (Home)", key("Home"))]
        return [*(ends if at_min else ends[::-1]), ("middle (tap)", tap)]

    def _option_actions(self, name: str, n: int, how):
        at_first = self.page.labels(self.model_id, [name])[name] == self.controls[name]["options"][0]
        order = ((n - 1, "last"), (0, "first"), (n // 2, "middle"))
        picks = {}
        for i, what in (order if at_first else (order[1], order[0], order[2])):
            picks.setdefault(i, what)
        return [(f"{what} option", (lambda i=i: how(i))) for i, what in picks.items()]

    def actions(self, name: str) -> list:
        spec = self.controls[name]
        el = self.page.control(self.model_id, name)
        kind = spec["kind"]
        if kind in ("slider", "log_slider", "selection_slider"):
            return self._slider_actions(name)
        if kind == "dropdown":
            return self._option_actions(name, len(spec["options"]),
                                        lambda i: el.locator("select").select_option(index=i))
        if kind == "toggle_buttons":
            return self._option_actions(name, len(spec["options"]),
                                        lambda i: el.locator("button").nth(i).click())
        if kind == "number_text":
            box = el.locator("input").first
            lo, hi = spec.get("min"), spec.get("max")
            if lo is None or hi is None:
                lo, hi = spec["value"] - 1, spec["value"] + 1
            mid = (lo + hi) // 2 if isinstance(lo, int) and isinstance(hi, int) else (lo + hi) / 2
            values = (hi, lo, mid) if spec["value"] == lo else (lo, hi, mid)  # each end reached by a change
            return [(f"type {v}", (lambda v=v: (box.fill(str(v)), box.press("Enter")))) for v in values]
        if kind == "text":
            box = el.locator("input, textarea").first
            values = registry.TEXT_VALUES.get((self.cls, name)) or [spec["value"][:-1]]
            return [(f"type {v!r}", (lambda v=v: (box.fill(v), box.press("Enter")))) for v in [*values, spec["value"]]]
        if kind == "checkbox":
            box = el.locator("input").first
            return [("click", box.click), ("click again", box.click)]
        raise AssertionError(f"{self.cls}.{name}: no way to drive a {spec['type']} ({kind}); add one to exercise.py")

    def play(self, name: str, seconds: float = 4.5) -> Move:
        """Press Play, let it run ``seconds``, press it again (pause); latency per frame: the linked slider's
        readout changes -> the figure changes."""
        move = Move(self.chapter, self.cls, name, f"play {seconds:g} s")
        button = self.page.control(self.model_id, name).locator("button").first
        self.probe.drain()
        mark = self.page.now()
        button.click()
        time.sleep(seconds)
        button.click()
        while self.probe.wait_comm_idle(3.0):  # until the kernel has handled every frame
            pass
        time.sleep(0.5)
        _, muts = self.page.events_since(mark)
        mine = [m for m in muts if m["model"] == self.model_id]
        previous = mark
        for fig in (m for m in mine if m["kind"] == "figure"):
            steps = [m["t"] for m in mine if m["kind"] == "control" and previous < m["t"] <= fig["t"]]
            if steps:  # frame: the slider's first change since the last figure -> this figure
                move.frames.append(round(fig["t"] - min(steps), 1))
            previous = fig["t"]
        move.changed = bool(move.frames)
        if not move.frames:
            move.problem = "Play changed no figure"
        self._check(move)
        self.moves.append(move)
        return move

    # -- everything --
    def exercise(self) -> list[Move]:
        deferred = []
        for name, spec in self.controls.items():
            if self.page.disabled(self.model_id, name):
                deferred.append(name)
                continue
            self._exercise_one(name)
        for name in deferred:  # enabled only by another control's value, e.g. a method that uses it
            if self.page.disabled(self.model_id, name) and not self._enable(name):
                self.moves.append(Move(self.chapter, self.cls, name, "any",
                                       problem="disabled whatever option the other controls take"))
            else:
                self._exercise_one(name)
        return self.moves

    def _enable(self, name: str) -> bool:
        """Try every option of the other option controls until ``name`` is enabled."""
        for other, spec in self.controls.items():
            if other == name or spec["kind"] not in ("dropdown", "toggle_buttons"):
                continue
            el = self.page.control(self.model_id, other)
            for i, label in enumerate(spec["options"]):
                if spec["kind"] == "dropdown":
                    do = (lambda i=i: el.locator("select").select_option(index=i))
                else:
                    do = (lambda i=i: el.locator("button").nth(i).click())
                self._act(other, f"option {label!r} (to enable {name})", do)
                if not self.page.disabled(self.model_id, name):
                    return True
        return False

    def _exercise_one(self, name: str) -> None:
        if self.controls[name]["kind"] == "play":
            self.play(name)
            return
        for action, do in self.actions(name):
            self._act(name, action, do)

    def set(self, name: str, value: str) -> Move:
        """Set one control to ``value`` as shown in the page (an option's label, or a number typed into a
        slider's readout), for the registry's interesting settings."""
        spec, el = self.controls[name], self.page.control(self.model_id, name)
        kind = spec["kind"]

        def do():
            if kind == "dropdown":
                el.locator("select").select_option(value=value)
            elif kind == "toggle_buttons":
                el.locator("button", has_text=re.compile(f"^\\s*{re.escape(value)}\\s*$")).click()
            elif kind in ("slider", "log_slider"):
                readout = el.locator(".widget-readout")
                readout.click()
                self.page.page.keyboard.press("Control+a")
                self.page.page.keyboard.type(value)
                self.page.page.keyboard.press("Enter")
            elif kind == "selection_slider":
                handle = el.locator(".noUi-handle").first
                handle.focus()
                handle.press("Home")
                for _ in spec["options"]:
                    if el.evaluate("e => e.querySelector('.widget-readout').textContent.trim()") == value:
                        break
                    handle.press("ArrowRight")
            elif kind in ("number_text", "text"):
                box = el.locator("input, textarea").first
                box.fill(value)
                box.press("Enter")
            else:
                raise AssertionError(f"{self.cls}.{name}: cannot set a {spec['type']} to {value!r}")
        return self._act(name, f"set {value}", do)
