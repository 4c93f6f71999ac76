"""What several chapters share: the checker pattern, the figure style, diagram primitives, the widget base, shared plots.

* ``checking`` -- the exercise-checker pattern (``___`` placeholder; "not attempted yet" + a hint, ✗ + a diagnosis,
  or ✓; never raises);
* ``style`` -- one figure width, dpi and font set for every figure;
* ``draw`` -- diagram primitives (boxes for tensors, weights, caches and operations; labelled arrows);
* ``widget`` -- :class:`ReportWidget`, the base of every chapter's widget (controls, readout, figure);
* ``plots`` -- plots used by more than one chapter (training curves).

Nothing here imports a chapter package.
"""
