"""Matplotlib figures as pure functions: data in, ``Figure`` out (testable without widgets).

Each chapter's section is marked by a comment header. Figures are created with
``matplotlib.figure.Figure`` via ``plt.subplots`` and returned; callers decide whether to show them.
"""
from __future__ import annotations

import matplotlib.pyplot as plt

__all__: list[str] = []
