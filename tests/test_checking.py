"""The checker pattern (dsv3_lessons.course.common.checking): three outcomes, never raises, hints in steps."""
from dsv3_lessons.course.common import checking as ck
from dsv3_lessons.course.common.checking import NOT_ATTEMPTED, RIGHT, WRONG, Wrong, ___, as_number, checker, hint


@checker("99.1", hint="think about what doubles", more=["first step", "second step"])
def check_double(x):
    if as_number(x) == 4:
        return "4 is 2 doubled."
    raise Wrong(f"{x} is not 2 doubled")


@checker("99.2", hint="no ladder here")
def check_plain(x):
    raise Wrong("always wrong")


def test_three_outcomes_and_the_nudge(capsys):
    assert check_double(___).status == NOT_ATTEMPTED
    assert "not attempted yet. Hint: think about what doubles" in capsys.readouterr().out
    assert check_double(4).status == RIGHT
    assert capsys.readouterr().out.startswith("✓ Exercise 99.1: 4 is 2 doubled.")
    r = check_double(5)
    assert r.status == WRONG
    out = capsys.readouterr().out
    assert out.startswith("✗ Exercise 99.1: 5 is not 2 doubled")
    assert 'hint("99.1")' in out          # a wrong answer points to the ladder


def test_no_pointer_without_a_ladder(capsys):
    check_plain(1)
    out = capsys.readouterr().out
    assert out.startswith("✗ Exercise 99.2: always wrong") and "hint(" not in out


def test_learner_exception_is_a_cross_not_a_crash(capsys):
    def boom(_):
        raise ZeroDivisionError("division by zero")

    @checker("99.3", hint="h")
    def check_fn(fn):
        return fn(1)

    r = check_fn(boom)
    assert r.status == WRONG and "ZeroDivisionError" in r.message


def test_hint_ladder_steps_then_points_to_the_solution(capsys):
    ck._SHOWN.pop("99.1", None)
    assert hint("99.1") == "Hint 1/2 for exercise 99.1: first step"
    assert hint("99.1") == "Hint 2/2 for exercise 99.1: second step"
    last = hint("99.1")
    assert "last hint" in last and "notebooks/solutions/99_" in last
    assert hint(" 99.1 ").startswith("That was the last hint")   # stays at the end, never raises


def test_unknown_exercise_lists_known_ones(capsys):
    text = hint("0.42")
    assert "No hints for exercise '0.42'" in text and "99.1" in text and "99.2" not in text


def test_long_lines_wrap_on_spaces_never_inside_a_word(capsys):
    @checker("99.4", hint="h")
    def check_long(x):
        raise Wrong(" ".join(f"word{i:03d}" for i in range(60)))

    out = capsys.readouterr() and str(check_long(1))
    lines = out.split("\n")
    assert len(lines) > 3 and all(len(line) <= ck.WIDTH for line in lines)
    assert all(line.startswith("  ") for line in lines[1:])
    words = " ".join(line.strip() for line in lines).split(" ")
    assert words[:3] == ["✗", "Exercise", "99.4:"] and words[3:] == [f"word{i:03d}" for i in range(60)]


def test_hint_ends_a_cell_without_a_second_copy():
    text = hint("no.such")
    assert isinstance(text, ck.Printed) and text._ipython_display_() is None


def test_revealed_hides_until_a_prediction_is_written(capsys):
    assert ck.revealed("4.1", ___) is False
    assert "Hidden until you predict" in capsys.readouterr().out and True
    assert ck.revealed("4.1", 240) is True and capsys.readouterr().out == ""
    assert ck.revealed("4.1", (___, 3)) is False      # a half-written pair is not a prediction yet


# ---- call_learner: a half-filled body is "not attempted", a real bug propagates ----------------------------
def _method_on_placeholder(t):
    x = ___
    return x.log() + t


def _attribute_of_placeholder(t):
    return ___.T @ t


def _placeholder_by_default(t, w=___):      # the placeholder reaches the body without its name in it
    return w.T @ t


def _real_attribute_bug(t):
    return t.no_such_method()


def test_call_learner_treats_attribute_use_of_the_placeholder_as_not_attempted():
    import pytest
    import torch

    from dsv3_lessons.course.common.checking import call_learner

    t = torch.ones(2, 2)
    for fn in (_method_on_placeholder, _attribute_of_placeholder, _placeholder_by_default):
        with pytest.raises(AttributeError):
            fn(t)                                       # what the half-filled body itself raises
        with pytest.raises(NotImplementedError):
            call_learner(fn, t)
    with pytest.raises(AttributeError, match="no_such_method"):
        call_learner(_real_attribute_bug, t)            # not about the placeholder: the checker shows it as ✗


def test_a_checker_reports_attribute_use_of_the_placeholder_as_not_attempted(capsys):
    from dsv3_lessons.course.common.checking import call_learner

    @checker("99.5", hint="h")
    def check_fn(fn):
        call_learner(fn, 2.0)

    assert check_fn(_method_on_placeholder).status == NOT_ATTEMPTED
    assert check_fn(_placeholder_by_default).status == NOT_ATTEMPTED
    r = check_fn(_real_attribute_bug)
    assert r.status == WRONG and "AttributeError" in r.message


_GIVEN = '''def halve(x):
    return x / 3          # the bug
'''


def test_unchanged_source_tells_the_code_as_given_from_an_edit(tmp_path):
    def define(source, name):
        path = tmp_path / f"{name}.py"
        path.write_text(source)
        scope = {}
        exec(compile(source, str(path), "exec"), scope)
        return scope["halve"]

    assert ck.unchanged_source(define(_GIVEN + "\n\n", "given_blank_lines"), _GIVEN)          # blank edges aside
    assert ck.unchanged_source(define(_GIVEN.replace("bug\n", "bug   \n"), "trailing"), _GIVEN)
    assert not ck.unchanged_source(define(_GIVEN.replace("/ 3", "/ 2"), "fixed"), _GIVEN)
    assert not ck.unchanged_source(lambda x: x / 3, _GIVEN)
    assert not ck.unchanged_source(len, _GIVEN)                       # no source to read: judged by behaviour
