"""Exercise checkers: ``check_…(answer)`` grades a learner's answer and explains what is off.

Every checker returns ``True`` when the answer is right and raises :class:`ExerciseError` with a
hint otherwise, so a wrong answer stops the notebook cell with a readable message.
"""
from __future__ import annotations

__all__ = ["ExerciseError"]


class ExerciseError(AssertionError):
    """The learner's answer is not right yet; the message says what to look at."""
