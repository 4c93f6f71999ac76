"""``python -m dsv3_lessons.course.ch06_balancing``: train the four balancing methods and store their histories
(and chapter 5's routing snapshot) in ``data/moe_runs/``. See :func:`dsv3_lessons.course.ch06_balancing.runs.main`."""
import sys

from dsv3_lessons.course.ch06_balancing.runs import main

sys.exit(main())
