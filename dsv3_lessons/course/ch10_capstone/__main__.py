"""``python -m dsv3_lessons.course.ch10_capstone``: train the tiny DeepSeek-V3, its dense twin and the nanoGPT
recipe on one CPU budget (≥ 3 seeds) and store the curves in ``data/capstone_runs/``.
See :func:`dsv3_lessons.course.ch10_capstone.runs.main`."""
import sys

from dsv3_lessons.course.ch10_capstone.runs import main

if __name__ == "__main__":
    sys.exit(main())
