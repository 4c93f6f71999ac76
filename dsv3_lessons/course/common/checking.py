"""The exercise-checker pattern every chapter uses: never raise, say one of three things.

A chapter's exercise cell holds a placeholder, ``___``, that the learner replaces::

    answer = ___                      # your expression here
    check_kv_bytes_per_token(answer)

and the checker prints exactly one line (a :class:`Result`):

* ``… not attempted yet`` plus a nudge (what to think about, never the formula or the answer), while the
  placeholder is still there (or the learner's function raises ``NotImplementedError``);
* ``✗ …`` and a precise diagnosis for a wrong answer (what is off, where to look), plus a pointer to
  :func:`hint` when the exercise has further hints;
* ``✓ …`` for a right one.

Hints come in steps. The nudge is all that Run All shows. Further hints, written by the checker's author as a
ladder (``more=[...]``), are shown one per call of ``hint("5.1")``, which the ✗ line points to. No hint states
the formula: the formula and the reasoning live in the worked solutions (``notebooks/solutions/``).

It never raises, so *Run All* always reaches the end of a chapter. Answers may be Python, numpy or 0-d torch
numbers and bools (:func:`as_number`, :func:`as_bool`); a function the learner wrote may be passed too, and an
exception inside it becomes a ✗ with the exception's message.

Writing a checker::

    @checker("1.1", hint="what does one layer keep per token, and how many layers are there?",
             more=["count keys and values separately", "..."])
    def check_kv_bytes_per_token(answer):
        x = as_number(answer, "the answer (bytes)")       # raises Wrong with a readable message
        if x == right:
            return "70,272 bytes per token: ..."          # a str (or None) means right
        if x == right / 2:
            raise Wrong("that is half of it: count both keys AND values")
        raise Wrong("...")

The grader raises :class:`Wrong` for a wrong answer and returns the ✓ message (or None) for a right one.
"""
from __future__ import annotations

import functools
import inspect
import math
import numbers
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["___", "Placeholder", "Printed", "Result", "Wrong", "checker", "hint", "revealed", "as_number", "as_bool",
           "is_placeholder", "call_learner", "unchanged_source", "NOT_ATTEMPTED", "WRONG", "RIGHT", "close"]

NOT_ATTEMPTED, WRONG, RIGHT = "not attempted", "wrong", "right"


class Placeholder:
    """The value of ``___``: what an exercise holds until the learner replaces it."""

    def __repr__(self) -> str:
        return "___"

    def __bool__(self) -> bool:  # `if ___:` must not silently count as an answer
        raise TypeError("___ is the exercise placeholder: replace it with your answer")


#: The placeholder learners replace in exercise cells.
___ = Placeholder()


class Wrong(Exception):
    """Raised by a grader (or by :func:`as_number`/:func:`as_bool`) with the diagnosis for a wrong answer."""


#: printed lines are wrapped at this many characters (a notebook's output area breaks longer lines anywhere,
#: even inside a word or a number)
WIDTH = 100


def _wrap(text: str) -> str:
    """``text`` wrapped at :data:`WIDTH` on spaces, continuation lines indented by two; its own line breaks kept."""
    return "\n".join(textwrap.fill(line, WIDTH, subsequent_indent="  ", break_long_words=False,
                                   break_on_hyphens=False) if len(line) > WIDTH else line
                     for line in text.split("\n"))


@dataclass(frozen=True)
class Result:
    """What a checker returns (and prints): ``exercise`` number, ``status`` (one of ``NOT_ATTEMPTED``,
    ``WRONG``, ``RIGHT``) and the ``message`` shown to the learner."""

    exercise: str
    status: str
    message: str
    more_hints: bool = False

    @property
    def ok(self) -> bool:
        return self.status == RIGHT

    def __str__(self) -> str:
        if self.status == RIGHT:
            return _wrap(f"✓ Exercise {self.exercise}: {self.message}")
        if self.status == WRONG:
            tail = f'\n  Stuck? hint("{self.exercise}") gives a hint.' if self.more_hints else ""
            return _wrap(f"✗ Exercise {self.exercise}: {self.message}") + tail
        return _wrap(f"Exercise {self.exercise}: not attempted yet. Hint: {self.message}")

    def _ipython_display_(self) -> None:
        """Nothing: the checker has printed the line already (no duplicate when it ends a cell)."""


#: exercise id -> the hint ladder after the nudge (see :func:`checker`), and how many steps were shown
_LADDERS: dict[str, list[str]] = {}
_SHOWN: dict[str, int] = {}


class Printed(str):
    """A string that has been printed already: ending a notebook cell with it shows nothing more (no repr)."""

    def _ipython_display_(self) -> None:
        """Nothing: the text is on the screen already."""


def hint(exercise: str) -> Printed:
    """Print (and return) the next hint of ``exercise`` ("5.1"): one step further each call.

    The first call gives the first step of the ladder the checker was declared with, the next call the second,
    and so on; after the last step it says where the worked solution is. Never raises: an unknown id prints the
    ids that have hints.
    """
    key = str(exercise).strip()
    ladder = _LADDERS.get(key)
    if ladder is None:
        known = ", ".join(sorted(_LADDERS, key=lambda k: [int(x) if x.isdigit() else x for x in k.split(".")]))
        text = (f"No hints for exercise {key!r}. Exercises with hints (of the chapters imported so far): "
                f"{known or 'none'}")
    elif _SHOWN.get(key, 0) < len(ladder):
        i = _SHOWN.get(key, 0)
        _SHOWN[key] = i + 1
        text = f"Hint {i + 1}/{len(ladder)} for exercise {key}: {ladder[i]}"
    else:
        text = (f"That was the last hint for exercise {key}. The worked solution, with the reasoning, is in "
                f"{_solutions_path(key)}.")
    text = _wrap(text)
    print(text)
    return Printed(text)


def _solutions_path(exercise: str) -> str:
    """``notebooks/solutions/NN_<name>_solutions.ipynb`` of the exercise's chapter, named as it is on disk when
    the course's notebooks sit beside the package (a pattern with ``*`` otherwise)."""
    chapter = exercise.split(".")[0].zfill(2)
    folder = Path(__file__).resolve().parents[3] / "notebooks" / "solutions"
    found = sorted(folder.glob(f"{chapter}_*_solutions.ipynb"))
    return f"notebooks/solutions/{found[0].name if found else chapter + '_*_solutions.ipynb'}"


def revealed(exercise: str, prediction: Any) -> bool:
    """For a *predict, then run* exercise: may the experiment cell show its result yet?

    False while ``prediction`` is still the placeholder ``___``: then one line says the result stays hidden until
    the prediction for ``exercise`` is written, so a stored notebook (and *Run All* before the learner has
    predicted) does not give the answer away. True once a prediction is there. The experiment cell computes as
    usual and shows its numbers or figure under ``if revealed("4.1", prediction): ...``.
    """
    if is_placeholder(prediction):
        print(_wrap(f"(Hidden until you predict: write your answer to exercise {exercise} in the cell above, run it, "
                    f"then run this cell.)"))
        return False
    return True


def is_placeholder(value: Any) -> bool:
    """True for ``___`` (also inside a tuple/list/dict of answers) and for ``...``."""
    if isinstance(value, Placeholder) or value is Ellipsis:
        return True
    if isinstance(value, (tuple, list)):
        return any(is_placeholder(v) for v in value)
    if isinstance(value, dict):
        return any(is_placeholder(v) for v in value.values())
    return False


def _mentions_placeholder(fn: Callable[..., Any]) -> bool:
    """True when the body of ``fn`` (or of a function, lambda or comprehension nested in it) still names ``___``."""
    stack = [getattr(fn, "__code__", None)]
    while stack:
        code = stack.pop()
        if code is None:
            continue
        if "___" in code.co_names:
            return True
        stack += [c for c in code.co_consts if hasattr(c, "co_names")]
    return False


def call_learner(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a function the learner wrote. A placeholder still in its body (``x = ___`` then arithmetic on it,
    ``targets[:, ___:]``, ``counts = ___`` then ``counts.mean()`` or ``x.log()``, ``___.T``, or ``return ___``)
    raises ``NotImplementedError`` -- "not attempted", not a bug -- whatever exception the half-filled body raised;
    so does a TypeError or AttributeError about the placeholder that reached the body another way (a default
    argument, a helper's global). Other exceptions propagate (the checker reports them as ✗)."""
    try:
        out = fn(*args)
    except Exception as exc:
        if isinstance(exc, NotImplementedError) or _mentions_placeholder(fn) or \
                (isinstance(exc, (TypeError, AttributeError)) and ("Placeholder" in str(exc) or "___" in str(exc))):
            raise NotImplementedError from exc
        raise
    if is_placeholder(out) or (out is None and _mentions_placeholder(fn)):
        raise NotImplementedError
    return out


def unchanged_source(fn: Callable[..., Any], given: str) -> bool:
    """True when ``fn``'s source is a bug hunt's code as given (trailing spaces and blank edges aside), so the
    checker can answer with the symptom only; False when it was edited or its source cannot be read (a lambda
    typed at a prompt, a builtin): then the checker judges by behaviour alone."""
    norm = lambda text: "\n".join(line.rstrip() for line in text.strip().splitlines())  # noqa: E731
    try:
        return norm(inspect.getsource(fn)) == norm(given)
    except (OSError, TypeError):
        return False


def _scalar(answer: Any) -> Any:
    """Unwrap a numpy scalar / 0-d array or a 0-d torch tensor to a Python scalar; leave others alone."""
    item = getattr(answer, "item", None)
    shape = getattr(answer, "shape", None)
    if callable(item) and shape is not None:
        if tuple(shape) != ():
            raise Wrong(f"expected a single number, got an array/tensor of shape {tuple(shape)}; "
                        f"reduce it to one value (e.g. .item())")
        return item()
    return answer


def as_number(answer: Any, what: str = "the answer") -> float:
    """``answer`` as a finite float. Accepts int/float, numpy scalars and 0-d torch tensors.

    Raises:
        Wrong: for a bool, a string, a non-scalar array, NaN or ±inf, naming ``what`` was expected.
    """
    value = _scalar(answer)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise Wrong(f"{what} must be a number, got {answer!r} ({type(answer).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise Wrong(f"{what} must be a finite number, got {value}")
    return value


def as_bool(answer: Any, what: str = "the answer") -> bool:
    """``answer`` as a bool. Accepts bool, numpy bools and 0-d torch bool tensors (not 0/1 or strings)."""
    value = _scalar(answer)
    if isinstance(value, bool):
        return value
    if type(value).__name__ in ("bool_", "bool8"):
        return bool(value)
    raise Wrong(f"{what} must be True or False, got {answer!r} ({type(answer).__name__})")


def close(x: float, right: float, rel: float = 1e-6, abs_tol: float = 0.0) -> bool:
    """``math.isclose`` with a relative tolerance suited to printed-and-retyped numbers."""
    return math.isclose(x, right, rel_tol=rel, abs_tol=abs_tol)


def checker(exercise: str, hint: str, more: Sequence[str] = ()) -> Callable[[Callable[..., str | None]],
                                                                        Callable[..., Result]]:
    """Decorator turning a grader into a never-raising checker that prints and returns a :class:`Result`.

    Args:
        exercise: the exercise number shown to the learner ("2.1").
        hint: the nudge printed while the placeholder ``___`` is still in any argument: what to think about,
            never the formula or the answer (Run All prints it before the learner has tried anything).
        more: the hint ladder, shown one step per call of :func:`hint` (the ✗ line points to it); also never
            the formula, which belongs in the worked solution.
    The grader receives the learner's arguments unchanged; it returns the ✓ message (or None) and raises
    :class:`Wrong` with a diagnosis otherwise. ``NotImplementedError`` from it (or from a learner's function
    it calls) counts as not attempted; any other exception becomes a ✗ naming the exception.
    """
    ladder = [str(m) for m in more]
    if ladder:
        _LADDERS[str(exercise)] = ladder

    def decorate(grade: Callable[..., str | None]) -> Callable[..., Result]:
        @functools.wraps(grade)
        def check(*args: Any, **kwargs: Any) -> Result:
            if is_placeholder(args) or is_placeholder(kwargs):
                result = Result(exercise, NOT_ATTEMPTED, hint)
            else:
                try:
                    message = grade(*args, **kwargs)
                    result = Result(exercise, RIGHT, message or "right.")
                except Wrong as exc:
                    result = Result(exercise, WRONG, str(exc), more_hints=bool(ladder))
                except NotImplementedError:
                    result = Result(exercise, NOT_ATTEMPTED, hint)
                except Exception as exc:  # the learner's code failed: report it, never stop Run All
                    result = Result(exercise, WRONG, f"your answer raised {type(exc).__name__}: {exc}",
                                    more_hints=bool(ladder))
            print(result)
            return result

        check.exercise = exercise  # type: ignore[attr-defined]
        check.hint = hint          # type: ignore[attr-defined]
        check.more = tuple(ladder)  # type: ignore[attr-defined]
        return check

    return decorate
