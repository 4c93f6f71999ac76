"""Progress bars (tqdm) that a stored notebook shows in their final state.

In a kernel, ``tqdm.auto`` draws an ipywidgets bar and stores, next to the widget view, a text copy made
when the bar was *created* (``0/150``). A notebook opened before running shows that text, so the bar looks
frozen at zero. :func:`progress` displays the same tqdm widget under a display id and, when the bar closes,
updates that display: the stored text becomes the final ``150/150`` line. Outside a kernel it is plain
``tqdm`` on stderr.
"""
from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm as _auto_tqdm

__all__ = ["progress"]


def _in_kernel() -> bool:
    try:
        from tqdm.notebook import tqdm_notebook
    except ImportError:  # ipywidgets missing
        return False
    return issubclass(_auto_tqdm, tqdm_notebook)


def progress(total: int | None, desc: str, disable: bool = False, **kwargs: Any):
    """A tqdm bar: ``total`` steps, label ``desc``; ``disable`` returns a silent bar.

    Use it like tqdm (``update``, ``set_postfix``, ``close`` or ``with``). In a notebook the bar's stored
    text shows its final state once closed.
    """
    if disable or not _in_kernel():
        return _auto_tqdm(total=total, desc=desc, disable=disable, **kwargs)
    from IPython.display import display
    from tqdm.notebook import tqdm_notebook

    class _FinalStateBar(tqdm_notebook):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, display=False, **kw)
            self._handle = display(self.container, display_id=True)

        def close(self) -> None:
            super().close()
            handle = getattr(self, "_handle", None)
            if handle is not None:
                self._handle = None
                handle.update(self.container)  # re-sends the view with the final text copy

    return _FinalStateBar(total=total, desc=desc, **kwargs)
