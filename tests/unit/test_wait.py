"""wait_for says what it waited for, with or without a message."""

from __future__ import annotations

import pytest

from ska_tango_scheduler.testing import WaitTimeoutError, wait_for


def _failure(*args: object, **kwargs: object) -> str:
    with pytest.raises(WaitTimeoutError) as info:
        wait_for(*args, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


def test_a_wait_without_message_quotes_its_lambda() -> None:
    items: list[int] = []
    text = _failure(lambda: len(items) >= 3, timeout=0.05, interval=0.01)
    assert text.startswith("waiting for lambda: len(items) >= 3 (test_wait.py:"), text
    assert "gave up after 0.05 s; last result: False" in text


def test_the_quoted_lambda_ends_where_the_lambda_ends() -> None:
    """Commas and brackets inside the lambda (strings included) do not cut it short."""
    items: list[object] = []
    text = _failure(lambda: ("a, b)", 1) in items or [x for x in items if x], timeout=0)
    assert 'lambda: ("a, b)", 1) in items or [x for x in items if x] (' in text, text
    assert "timeout" not in text


def test_a_lambda_over_several_lines_is_quoted_on_one_without_comments() -> None:
    items: list[int] = []
    text = _failure(
        lambda: (
            len(items)  # the first line of the body
            > 1
        ),
        timeout=0,
    )
    assert text.startswith("waiting for lambda: ( len(items) > 1 ) (test_wait.py:"), text


def test_a_named_predicate_is_named() -> None:
    def nothing_yet() -> bool:
        return False

    text = _failure(nothing_yet, timeout=0)
    assert text.startswith("waiting for nothing_yet() (test_wait.py:"), text


def test_a_callable_object_is_described_by_its_repr() -> None:
    class Never:
        def __call__(self) -> bool:
            return False

        def __repr__(self) -> str:
            return "<never>"

    assert _failure(Never(), timeout=0).startswith("waiting for <never> ("), "repr"


def test_a_message_of_ones_own_wins() -> None:
    assert _failure(lambda: 0, timeout=0, message="the answer").startswith("the answer (")
    assert _failure(lambda: 0, timeout=0, message=lambda: "late").startswith("late (")
