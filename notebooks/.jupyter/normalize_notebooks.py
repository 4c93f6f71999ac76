"""Put stored notebooks in the form JupyterLab keeps them in, so that opening one marks nothing as changed and
no widget view points at a widget the notebook cannot show.

    python notebooks/.jupyter/normalize_notebooks.py [--check] [NOTEBOOK ...]     (default: notebooks/**/*.ipynb)

What it changes (only these; outputs, cell ids and everything else stay as they are):

- ``metadata.kernelspec`` becomes the installed ``python3`` kernel's (name, display_name, language). When
  the kernel starts, Lab writes that spec into the notebook; a stored "Python 3" where the kernel says
  "Python 3 (ipykernel)" showed the unsaved-changes dot about 2 s after every open.
- Widget views and widget state are dropped: each output keeps the text the kernel sent beside the view (a
  course widget's one-line "run this cell" note, a progress bar's final line), and ``metadata.widgets`` goes.
  That is what a notebook saved from ``make lab`` holds (``notebooks/.jupyter/jupyter_lab_config.py``), so a stored chapter
  and a learner's saved one look the same; the stored state also showed, in a trusted notebook, controls
  that do nothing until the cell runs.

``language_info`` is left as the kernel reported it; Lab rewrites it too, so a learner whose Python differs
(3.12 vs the stored 3.11.7) still sees the dot after opening: nothing a stored file can avoid.

``--check`` changes nothing and exits 1 if a notebook would change (naming it). Run after re-executing the
notebooks (``make notebooks`` does).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def installed_kernelspec(name: str = "python3") -> dict:
    """The kernelspec metadata Lab writes for kernel ``name``: ``{"display_name", "language", "name"}``.

    Raises jupyter_client.kernelspec.NoSuchKernel if no such kernel is installed."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(name)
    return {"display_name": spec.display_name, "language": spec.language, "name": name}


def normalize(nb: dict, kernelspec: dict) -> dict:
    """``nb`` (a notebook as JSON) in normal form; ``nb`` itself is not modified."""
    nb = json.loads(json.dumps(nb))
    nb.setdefault("metadata", {})["kernelspec"] = dict(kernelspec)
    nb["metadata"].pop("widgets", None)
    for cell in nb.get("cells", []):
        for out in cell.get("outputs") or []:
            data = out.get("data")
            if isinstance(data, dict):
                data.pop(WIDGET_VIEW, None)
    return nb


def dump(nb: dict) -> str:
    """The notebook as Jupyter writes it (nbformat: one-space indent, keys sorted, non-ASCII kept)."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/**/*.ipynb")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook would change")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").rglob("*.ipynb"))
    paths = [p for p in paths if ".ipynb_checkpoints" not in p.parts]
    spec = installed_kernelspec()
    changed = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        new = dump(normalize(json.loads(text), spec))
        if new != text:
            changed.append(path)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    verb = "would change" if args.check else "normalized"
    for path in changed:
        print(f"{verb}: {path}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
