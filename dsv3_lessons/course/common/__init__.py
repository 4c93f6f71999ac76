"""What several chapters share: the checker pattern, the figure style, diagram primitives, the widget base and its fast
rendering, shared plots.

* ``checking`` -- the exercise-checker pattern (``___`` placeholder; "not attempted yet" + a hint, ✗ + a diagnosis,
  or ✓; never raises);
* ``style`` -- one figure width, dpi and font set for every figure;
* ``draw`` -- diagram primitives (boxes for tensors, weights, caches and operations; labelled arrows);
* ``widget`` -- :class:`ReportWidget`, the base of every chapter's widget (controls, readout, figure);
* ``blit`` -- :class:`BlitRenderer`, PNGs of a figure updated in place (only the changing artists redrawn over a
  cached background), what a widget's persistent figure is rendered with;
* ``plots`` -- plots used by more than one chapter (training curves).

Nothing here imports a chapter package.
"""
