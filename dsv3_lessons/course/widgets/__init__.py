"""ipywidgets front ends. Each widget calls a pure function (in the concept modules or ``plots.py``)
that notebooks also call directly, so errors surface under nbval instead of inside a callback."""
