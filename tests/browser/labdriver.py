"""Driving the course in JupyterLab: a Lab server over a temporary copy of notebooks/, a notebook page in
Chromium (Playwright), and a second client on the page's kernel that asks the course widgets what they show.

Nothing here is about a particular chapter or widget: widget_registry.py holds that.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import widget_registry as registry

ROOT = Path(__file__).resolve().parents[2]
LAB_CONFIG = ROOT / "notebooks" / ".jupyter" / "jupyter_lab_config.py"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
TQDM_TEXT = re.compile(r"\d+%\|.*\|\s*[\d.]+[kMG]?/[\d.]+[kMG]?")


# ---- the notebooks ----------------------------------------------------------------------------------------
def chapters(nb_dir: Path) -> list[Path]:
    """The chapter notebooks (``NN_*.ipynb`` at the top of ``nb_dir``), in order."""
    return sorted(p for p in nb_dir.glob("*.ipynb") if re.match(r"\d\d_", p.name))


def widget_outputs(nb: dict) -> list[str]:
    """The course widgets a stored notebook displays (class names, or "widget" when only the view is left):
    outputs with a widget view that is not a progress bar, or with the base class's one-line note."""
    found = []
    for cell in nb.get("cells", []):
        for out in cell.get("outputs") or []:
            data = out.get("data") or {}
            text = "".join(data.get("text/plain", ""))
            note = re.match(registry.REPORT_NOTE, text.strip())
            if note:
                found.append(note.group(1))
            elif WIDGET_VIEW in data and not TQDM_TEXT.search(text):
                found.append("widget")
    return found


def widget_chapters(nb_dir: Path) -> list[Path]:
    return [p for p in chapters(nb_dir) if widget_outputs(json.loads(p.read_text()))]


def selected(paths: list[Path]) -> list[Path]:
    """``paths`` limited to the chapters named in DSV3_BROWSER_CHAPTERS (comma-separated prefixes), if set."""
    only = [p.strip() for p in os.environ.get("DSV3_BROWSER_CHAPTERS", "").split(",") if p.strip()]
    return [p for p in paths if not only or any(p.name.startswith(o) for o in only)]


# ---- the server -------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """JupyterLab as ``make lab`` starts it (``notebooks/.jupyter/jupyter_lab_config.py``, notebooks trusted with
    ``jupyter trust``), over ``workdir/notebooks`` (a copy of ``src``), with every Jupyter directory in
    ``workdir`` and a free localhost port. The server's environment (PYTHONPATH included) is this process's,
    so its kernels import the same package."""

    def __init__(self, src: Path, workdir: Path, startup_timeout: float = 180.0):
        self.workdir = workdir
        self.root = workdir / "notebooks"
        shutil.copytree(src, self.root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        self.runtime = workdir / "runtime"
        self.env = dict(os.environ, JUPYTER_CONFIG_DIR=str(workdir / "config"), JUPYTER_DATA_DIR=str(workdir / "data"),
                        JUPYTER_RUNTIME_DIR=str(self.runtime), JUPYTERLAB_SETTINGS_DIR=str(workdir / "settings"),
                        JUPYTERLAB_WORKSPACES_DIR=str(workdir / "workspaces"))
        self.notebooks = sorted(self.root.rglob("*.ipynb"))
        subprocess.run([sys.executable, "-m", "jupyter", "trust", *map(str, self.notebooks)], env=self.env,
                       check=True, capture_output=True)
        self.port, self.token = _free_port(), "dsv3-browser-test"
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "lab.log"
        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--port={self.port}",
               f"--ServerApp.root_dir={self.root}", f"--IdentityProvider.token={self.token}",
               f"--config={LAB_CONFIG}"]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.time() + startup_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited early:\n{self.log()[-3000:]}")
            try:
                self.api("GET", "/api/status")
                break
            except OSError:
                if time.time() > deadline:
                    self.stop()
                    raise RuntimeError(f"jupyter lab did not answer in {startup_timeout:.0f} s:\n{self.log()[-3000:]}")
                time.sleep(0.5)

    def api(self, method: str, path: str, body: dict | None = None, timeout: float = 30.0):
        sep = "&" if "?" in path else "?"
        req = urllib.request.Request(f"{self.base}{path}{sep}token={self.token}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def url(self, nb_name: str) -> str:
        return f"{self.base}/lab/tree/{urllib.parse.quote(nb_name)}?reset&token={self.token}"

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def session(self, nb_name: str) -> dict | None:
        for s in self.api("GET", "/api/sessions"):
            if s.get("path") == nb_name:
                return s
        return None

    def shutdown(self, nb_name: str) -> None:
        """Stop the kernel of ``nb_name``'s session (as a learner's closed laptop would)."""
        s = self.session(nb_name)
        if s is not None:
            self.api("DELETE", f"/api/sessions/{s['id']}")

    def connection_file(self, kernel_id: str) -> Path:
        return self.runtime / f"kernel-{kernel_id}.json"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# ---- the page ---------------------------------------------------------------------------------------------
#: installed in every page before Lab loads: the times of release events and of changes to the course
#: widgets' figures, readouts and control readouts (performance.now(), ms)
INSTRUMENT = r"""
window.__dsv3 = {release: [], mut: []};
for (const ev of ['pointerup', 'keydown', 'change', 'click'])
  document.addEventListener(ev, () => window.__dsv3.release.push({ev, t: performance.now()}), true);
const __dsv3_start = () => {
  new MutationObserver(records => {
    const t = performance.now();
    for (const r of records) {
      const el = r.target.nodeType === 1 ? r.target : r.target.parentElement;
      const rep = el && el.closest('.dsv3-report');
      if (!rep) continue;
      let kind = null, control = null;
      if (r.type === 'attributes' && el.classList.contains('dsv3-figure')) kind = 'figure';
      else if (el.closest('.dsv3-readout')) kind = 'readout';
      else if (el.closest('.widget-readout')) {
        kind = 'control';
        const c = [...el.closest('[class*="dsv3-control-"]').classList].find(x => x.startsWith('dsv3-control-'));
        control = c && c.slice('dsv3-control-'.length);
      }
      if (kind) window.__dsv3.mut.push({kind, control, t,
        model: [...rep.classList].find(c => c.startsWith('dsv3-model-')).slice('dsv3-model-'.length)});
    }
  }).observe(document.documentElement, {subtree: true, attributes: true, attributeFilter: ['src'],
                                         childList: true, characterData: true});
};
if (document.documentElement) __dsv3_start(); else document.addEventListener('DOMContentLoaded', __dsv3_start);
"""

#: every output area's outputs: cell index, MIME type and text
OUTPUTS_JS = r"""() => [...document.querySelectorAll('.jp-Notebook .jp-Cell')].flatMap((cell, i) =>
  [...cell.querySelectorAll('.jp-OutputArea-output')].map(o => ({cell: i, mime: o.getAttribute('data-mime-type'),
    text: o.textContent, widget: !!o.querySelector('.jupyter-widgets'),
    bars: [...o.querySelectorAll('.widget-progress .progress-bar')].map(b => b.style.width)})))"""

#: the label a control's view shows (what a learner reads), by the control's kind
LABEL_JS = r"""el => {
  const c = el.classList;
  if (c.contains('widget-slider')) return el.querySelector('.widget-readout').textContent.trim();
  if (c.contains('widget-dropdown')) { const s = el.querySelector('select');
    return s.selectedIndex >= 0 ? s.options[s.selectedIndex].value : null; }
  if (c.contains('widget-toggle-buttons')) { const b = el.querySelector('button.mod-active');
    return b ? b.textContent.trim() : null; }
  if (c.contains('widget-checkbox')) return el.querySelector('input').checked;
  if (c.contains('widget-text') || c.contains('widget-textarea')) return el.querySelector('input, textarea').value;
  return null;
}"""

DISABLED_JS = r"""el => !!el.querySelector('.slider[disabled], select:disabled, button:disabled, input:disabled, textarea:disabled')"""

RAW_REPR = [re.compile(p, re.M) for p in (
    r"<[\w.]+ object at 0x[0-9a-fA-F]+>",
    r"^\s*(VBox|HBox|Box|GridBox|Tab|Accordion|IntSlider|FloatSlider|FloatLogSlider|SelectionSlider|Dropdown|"
    r"ToggleButtons|Output|Image|HTML|Label|Text|BoundedIntText|IntText|Play|Button|Checkbox|FloatProgress|"
    r"IntProgress)\(",
    r"<Figure size [\d.]+x[\d.]+ with \d+ Axes>",
    r"^\s*(True|False)\s*$",
)]


def _tqdm_frozen(text: str) -> bool:
    m = re.search(r"(\d+)%\|.*\|\s*([\d.]+)[kMG]?/([\d.]+)[kMG]?", text)
    return bool(m) and (int(m.group(1)) < 100 or float(m.group(2)) < float(m.group(3)))


class NotebookPage:
    """One notebook open in its own browser page (1400×1000, as the browser review used)."""

    def __init__(self, browser, server: LabServer, nb_name: str):
        self.server, self.name = server, nb_name
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.page.add_init_script(INSTRUMENT)
        self.console_errors: list[str] = []
        self.page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)

    # -- opening, running, saving --
    def open(self, timeout: float = 120.0) -> float:
        """Open the notebook and wait until its kernel is idle and widgets have settled; returns seconds."""
        t0 = time.time()
        self.page.goto(self.server.url(self.name))
        self.page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=timeout * 1000)
        self.wait_kernel_idle(timeout)
        self.settle()
        return time.time() - t0

    def wait_kernel_idle(self, timeout: float = 120.0) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            s = self.server.session(self.name)
            status = self.page.evaluate("""() => { const e = document.querySelector(
                '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator');
                return e ? e.getAttribute('data-status') : null }""")
            if s and s.get("kernel", {}).get("execution_state") == "idle" and status == "idle":
                return s["kernel"]["id"]
            time.sleep(0.25)
        raise TimeoutError(f"{self.name}: kernel not idle after {timeout:.0f} s")

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until no output reads "Loading widget..." (views still being restored), then 1 s more."""
        deadline = time.time() + timeout
        while time.time() < deadline and self.page.locator(".jp-OutputArea-output", has_text="Loading widget").count():
            time.sleep(0.25)
        time.sleep(1.0)

    def dirty(self) -> bool:
        return self.page.locator(".lm-TabBar-tab.jp-mod-dirty").count() > 0

    def ever_dirty(self, seconds: float) -> bool:
        """Watch the unsaved-changes marker for ``seconds``; True if it showed at any moment."""
        end = time.time() + seconds
        while time.time() < end:
            if self.dirty():
                return True
            time.sleep(0.1)
        return False

    def run_all(self, timeout: float = 600.0) -> float:
        """Run ▸ Run All Cells, then wait until no cell is queued or running; returns seconds."""
        menu = self.page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$"))
        menu.click()
        self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        t0 = time.time()
        prompts = "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent)"
        seen_busy = False
        while time.time() - t0 < timeout:
            busy = any("*" in p for p in self.page.evaluate(prompts))
            seen_busy = seen_busy or busy
            if seen_busy and not busy:
                break
            if not seen_busy and time.time() - t0 > 20:
                raise AssertionError(f"{self.name}: Run All Cells started no cell in 20 s")
            time.sleep(0.25)
        else:
            raise TimeoutError(f"{self.name}: Run All did not finish in {timeout:.0f} s")
        elapsed = time.time() - t0
        self.wait_kernel_idle()
        self.settle()
        return elapsed

    def save(self, timeout: float = 30.0) -> None:
        """Ctrl+S, then wait until the unsaved-changes marker is gone."""
        self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").first.focus()
        self.page.keyboard.press("Control+s")
        deadline = time.time() + timeout
        time.sleep(0.5)
        while self.dirty():
            if time.time() > deadline:
                raise TimeoutError(f"{self.name}: still marked unsaved {timeout:.0f} s after Ctrl+S")
            time.sleep(0.25)
        time.sleep(1.0)

    def close(self) -> None:
        self.page.close()

    # -- what the learner sees --
    def outputs(self) -> list[dict]:
        return self.page.evaluate(OUTPUTS_JS)

    def problems(self, stderr_allowed: bool = False) -> list[str]:
        """Learner-visible problems in the outputs: widget errors, error outputs, stderr, raw Python reprs,
        progress bars that stopped short of 100 %."""
        found = []
        for o in self.outputs():
            text, where = o["text"], f"cell {o['cell']}"
            if "Error displaying widget" in text or "model not found" in text:
                found.append(f"{where}: {text.strip()[:200]!r}")
            if o["mime"] == "application/vnd.jupyter.error":
                found.append(f"{where}: error output {text.strip()[-300:]!r}")
            if o["mime"] == "application/vnd.jupyter.stderr" and not stderr_allowed:
                found.append(f"{where}: stderr {text.strip()[:300]!r}")
            if "Loading widget" in text:
                found.append(f"{where}: widget still loading")
            if not o["widget"]:
                for pattern in RAW_REPR:
                    m = pattern.search(text)
                    if m:
                        found.append(f"{where}: raw Python repr {m.group(0).strip()!r}")
                if _tqdm_frozen(text):
                    found.append(f"{where}: progress bar stopped short: {text.strip()[:120]!r}")
            for width in o["bars"]:
                if width and width.strip() != "100%":
                    found.append(f"{where}: progress bar widget at {width}")
        return found

    def report_views(self) -> list[str]:
        """Model ids of the course widgets shown in the page, in page order."""
        ids = self.page.evaluate("""() => [...document.querySelectorAll('.dsv3-report')].map(e =>
            [...e.classList].find(c => c.startsWith('dsv3-model-')).slice('dsv3-model-'.length))""")
        return list(dict.fromkeys(ids))  # a widget displayed twice is driven once

    def report(self, model_id: str):
        return self.page.locator(f".dsv3-model-{model_id}").first

    def control(self, model_id: str, name: str):
        return self.report(model_id).locator(f".dsv3-control-{name}").first

    def labels(self, model_id: str, names: list[str]) -> dict:
        return {n: self.control(model_id, n).evaluate(LABEL_JS) for n in names}

    def readout(self, model_id: str) -> str:
        return self.report(model_id).locator(".dsv3-readout .widget-html-content").first.evaluate("e => e.textContent")

    def disabled(self, model_id: str, name: str) -> bool:
        return self.control(model_id, name).evaluate(DISABLED_JS)

    def now(self) -> float:
        return self.page.evaluate("() => performance.now()")

    def events_since(self, mark: float) -> tuple[list, list]:
        return self.page.evaluate("m => [window.__dsv3.release.filter(e => e.t > m), window.__dsv3.mut.filter(e => e.t > m)]",
                                  mark)


# ---- the kernel -------------------------------------------------------------------------------------------
class KernelProbe:
    """A second client on a notebook's kernel. It runs ``kernel_probe.py`` there (silently: no execution
    count, nothing shown in the notebook) and watches the kernel's status messages."""

    def __init__(self, connection_file: Path):
        from jupyter_client import BlockingKernelClient

        self.kc = BlockingKernelClient()
        self.kc.load_connection_file(str(connection_file))
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        source = (Path(__file__).with_name("kernel_probe.py")).read_text()
        self._execute("import sys as _s, types as _t\n_m = _t.ModuleType('_dsv3_probe')\n"
                      f"exec(compile({source!r}, 'kernel_probe.py', 'exec'), _m.__dict__)\n"
                      "_s.modules['_dsv3_probe'] = _m\ndel _s, _t, _m")

    def _execute(self, code: str, expr: str | None = None, timeout: float = 180.0):
        msg_id = self.kc.execute(code, silent=True, store_history=False,
                                 user_expressions={"r": expr} if expr else None)
        deadline = time.time() + timeout
        while True:
            reply = self.kc.get_shell_msg(timeout=max(0.1, deadline - time.time()))
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        content = reply["content"]
        if content["status"] != "ok":
            raise RuntimeError(f"kernel probe failed: {content.get('ename')}: {content.get('evalue')}\n"
                               + "\n".join(content.get("traceback", [])))
        if expr is None:
            return None
        r = content["user_expressions"]["r"]
        if r.get("status") != "ok":
            raise RuntimeError(f"kernel probe failed: {r.get('ename')}: {r.get('evalue')}\n"
                               + re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(r.get("traceback", []))))
        return json.loads(ast.literal_eval(r["data"]["text/plain"]))

    def call(self, name: str, *args, timeout: float = 180.0):
        return self._execute("", f"__import__('sys').modules['_dsv3_probe'].run({name!r}, *{args!r})", timeout)

    def drain(self) -> None:
        while True:
            try:
                self.kc.get_iopub_msg(timeout=0.05)
            except Exception:  # queue.Empty
                return

    def wait_comm_idle(self, timeout: float) -> bool:
        """Wait until the kernel has handled a message from the page's widgets (a comm message: status busy,
        then idle). False if none came within ``timeout`` s."""
        deadline, busy = time.time() + timeout, False
        while time.time() < deadline:
            try:
                msg = self.kc.get_iopub_msg(timeout=max(0.05, deadline - time.time()))
            except Exception:
                return False
            if msg["msg_type"] == "status" and msg["parent_header"].get("msg_type") == "comm_msg":
                state = msg["content"]["execution_state"]
                busy = busy or state == "busy"
                if busy and state == "idle":
                    return True
        return False

    def wait_quiet(self, timeout: float, quiet: float = 0.5) -> bool:
        """Wait for the kernel to handle the page's next message (``timeout``), then for any that follow it
        within ``quiet`` s (a text box sends "submit" and then its value). False if none came."""
        if not self.wait_comm_idle(timeout):
            return False
        while self.wait_comm_idle(quiet):
            pass
        return True

    def close(self) -> None:
        self.kc.stop_channels()
