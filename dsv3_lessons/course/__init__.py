"""The course apparatus, one package per chapter, named like its notebook.

* ``common/`` -- what several chapters share: the checker pattern, figure style, diagram primitives, the widget
  base and shared plots. It imports no chapter.
* ``ch00_tour/`` … ``ch09_fp8/`` -- one chapter each: its helpers, ``figures.py``, ``exercises.py`` and
  ``widget.py`` where the chapter has them. Each package's ``__init__`` exports what its notebook uses, so a
  notebook imports from one place, e.g. ``from dsv3_lessons.course.ch05_routing import route_token, routing_explorer``.

Imports run one way: ``course -> tools -> model``. A chapter may import an earlier chapter's package (chapter 4
builds on chapter 2), never a later one.
"""
