"""Every chapter in JupyterLab, as a learner meets it.

- Every chapter, opened as stored: no "Error displaying widget", no error or stderr output, no raw Python repr,
  no progress bar stopped short of 100 %, and nothing marked as changed.
- Every chapter with a course widget (found in the stored notebook): Run All with no error; every control of
  every widget moved (both ends and a middle value), and after each move the page shows the readout the
  widget's own functions give for the values the page shows; screenshots (default and one interesting
  setting) and latencies; then saved, closed, its kernel stopped, reopened: no widget error, nothing dirty.

Known failures live in widget_registry.KNOWN_FAILURES: they are reported as warnings, and a listed failure that
no longer happens fails the test (so the entry is removed when its cause is fixed).
"""
from __future__ import annotations

import json
import re
import warnings
from types import SimpleNamespace

import pytest

import widget_registry as registry
from exercise import WidgetDriver
from labdriver import (ROOT, WIDGET_STATE, WIDGET_VIEW, KernelProbe, NotebookPage, chapters, selected,
                       widget_chapters)

CHAPTERS = selected(chapters(ROOT / "notebooks"))
WIDGET_CHAPTERS = selected(widget_chapters(ROOT / "notebooks"))
OPEN_ONLY = [p for p in CHAPTERS if p not in WIDGET_CHAPTERS]


class KnownFailure(UserWarning):
    """A failure listed in widget_registry.KNOWN_FAILURES, with its cause."""


def judge(failures: dict, checked: set) -> None:
    """Fail on any failure not listed as known, and on a known failure (among ``checked`` keys) that no longer
    happens; report the known ones as warnings."""
    messages = []
    for key, what in failures.items():
        if key in registry.KNOWN_FAILURES:
            warnings.warn(KnownFailure(f"{key}: {what} [known: {registry.KNOWN_FAILURES[key]}]"))
        else:
            messages.append(f"{key}: {what}")
    for key in checked & set(registry.KNOWN_FAILURES) - set(failures):
        messages.append(f"{key} is listed in KNOWN_FAILURES ({registry.KNOWN_FAILURES[key]}) but no longer "
                        "fails: remove the entry")
    if messages:
        pytest.fail("\n".join(messages), pytrace=False)


def check_opened(page: NotebookPage, stem: str, when: str = "open") -> tuple[dict, set]:
    """Open ``page``'s notebook; the failures found (key -> what) and the keys checked."""
    page.open()
    failures = {}
    if page.ever_dirty(3.0):
        failures[(when, stem, "dirty")] = "the tab shows unsaved changes right after opening, before any edit"
    problems = page.problems()
    if problems:
        failures[(when, stem, "outputs")] = "\n  ".join(["learner-visible problems:", *problems])
    return failures, {(when, stem, "dirty"), (when, stem, "outputs")}


@pytest.mark.parametrize("nb", OPEN_ONLY, ids=lambda p: p.stem)
def test_open_chapter(lab, browser, nb):
    page = NotebookPage(browser, lab, nb.name)
    try:
        failures, checked = check_opened(page, nb.stem)
    finally:
        page.close()
        lab.shutdown(nb.name)
    judge(failures, checked)


@pytest.fixture(scope="class", params=WIDGET_CHAPTERS, ids=lambda p: p.stem)
def chapter(request, lab, browser):
    nb = request.param
    state = SimpleNamespace(nb=nb, stem=nb.stem, page=NotebookPage(browser, lab, nb.name), ran=False, probe=None)
    yield state
    if state.probe is not None:
        state.probe.close()
    state.page.close()
    lab.shutdown(nb.name)


class TestWidgetChapter:
    """One chapter with a widget, start to end, in one page (the tests run in this order)."""

    def test_open(self, chapter):
        judge(*check_opened(chapter.page, chapter.stem))

    def test_run_all(self, chapter):
        seconds = chapter.page.run_all()
        print(f"{chapter.stem}: Run All {seconds:.1f} s")
        chapter.ran = True
        problems = chapter.page.problems()
        assert not problems, "after Run All:\n  " + "\n  ".join(problems)

    def test_widgets(self, lab, chapter, latency_log, shots_dir):
        if not chapter.ran:
            pytest.fail("Run All did not complete (see test_run_all)", pytrace=False)
        page = chapter.page
        kernel = lab.session(chapter.nb.name)["kernel"]["id"]
        chapter.probe = probe = KernelProbe(lab.connection_file(kernel))
        specs = {s["model_id"]: s for s in probe.call("widgets", registry.REPORT_WIDGET)}
        views = page.report_views()
        assert views, "no course widget is shown after Run All"
        missing = [v for v in views if v not in specs]
        assert not missing, f"widgets shown in the page but unknown to the kernel: {missing}"
        failures, checked = {}, set()
        for model_id in views:
            spec = specs[model_id]
            cls = spec["cls"]
            view = page.report(model_id)
            view.screenshot(path=str(shots_dir / f"{chapter.stem}_{cls}_default.png"))
            driver = WidgetDriver(page, probe, chapter.stem, spec)
            try:
                driver.exercise()
                for name, value in registry.INTERESTING.get(cls, []):
                    driver.set(name, value)
                view.screenshot(path=str(shots_dir / f"{chapter.stem}_{cls}_setting.png"))
            except Exception as exc:  # a control the suite could not drive: report it with the rest
                failures[("driver", cls)] = f"{type(exc).__name__}: {str(exc)[:500]}"
            finally:
                latency_log.extend(m.record() for m in driver.moves)
            for name in driver.controls:
                checked.add(("control", cls, name))
            for m in driver.moves:
                if m.problem:
                    key = ("control", cls, m.control)
                    failures[key] = failures.get(key, "") + f"\n  {m.action}: {m.problem}"
            untouched = [n for n in driver.controls if not any(m.control == n and m.changed for m in driver.moves)]
            if untouched:
                failures[("untouched", cls)] = f"no move changed these controls: {untouched}"
        judge(failures, checked)

    def test_reopen_after_save(self, lab, chapter, shots_dir):
        """Run, save, close, kernel stopped, reopen (a returning learner): no widget error, nothing dirty, and
        the saved file's widget views all have their saved state."""
        if not chapter.ran:
            pytest.fail("Run All did not complete (see test_run_all)", pytrace=False)
        if chapter.probe is not None:
            chapter.probe.close()
            chapter.probe = None
        chapter.page.save()
        chapter.page.close()
        lab.shutdown(chapter.nb.name)
        saved = json.loads((lab.root / chapter.nb.name).read_text())
        state = saved["metadata"].get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
        dangling = [o["data"][WIDGET_VIEW]["model_id"] for c in saved["cells"] for o in c.get("outputs", [])
                    if WIDGET_VIEW in o.get("data", {}) and o["data"][WIDGET_VIEW]["model_id"] not in state]
        chapter.page = NotebookPage(chapter.page.page.context.browser, lab, chapter.nb.name)
        failures, checked = check_opened(chapter.page, chapter.stem, when="reopen")
        if dangling:
            failures[("reopen", chapter.stem, "saved")] = f"saved widget views without saved state: {dangling}"
        checked.add(("reopen", chapter.stem, "saved"))
        note = chapter.page.page.locator(".jp-OutputArea-output",
                                         has_text=re.compile(registry.REPORT_NOTE[1:-1])).first
        if note.count():
            note.scroll_into_view_if_needed()
            chapter.page.page.wait_for_timeout(500)
            note.screenshot(path=str(shots_dir / f"{chapter.stem}_reopened.png"))
        judge(failures, checked)
