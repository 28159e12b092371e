"""The connector thread: ordered jobs, delays, cancellation, closing."""

from __future__ import annotations

import logging
import threading
import time

from ska_tango_scheduler._executor import SerialExecutor

LOG = logging.getLogger("test.executor")


def test_jobs_run_in_order_on_one_thread() -> None:
    ex = SerialExecutor("ex", LOG)
    seen: list[tuple[int, str]] = []
    done = threading.Event()
    for i in range(50):
        ex.submit(lambda i=i: seen.append((i, threading.current_thread().name)))
    ex.submit(done.set)
    assert done.wait(30)
    assert [i for i, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"ex"}
    assert ex.close([], 30)


def test_delayed_and_cancelled_jobs() -> None:
    ex = SerialExecutor("ex", LOG)
    seen: list[str] = []
    done = threading.Event()
    ex.call_later(0.2, lambda: seen.append("late"))
    ex.call_later(0.2, done.set)
    handle = ex.call_later(0.1, lambda: seen.append("cancelled"))
    ex.submit(lambda: seen.append("now"))
    handle.cancel()
    assert done.wait(30)
    assert seen == ["now", "late"]
    assert ex.close([], 30)


def test_a_failing_job_does_not_stop_the_thread(caplog) -> None:
    ex = SerialExecutor("ex", LOG)
    done = threading.Event()

    def bad() -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="test.executor"):
        ex.submit(bad)
        ex.submit(done.set)
        assert done.wait(30)
    assert any("failed" in r.getMessage() for r in caplog.records)
    assert ex.close([], 30)


def test_close_runs_due_jobs_then_final_jobs_and_cancels_later_ones() -> None:
    ex = SerialExecutor("ex", LOG)
    seen: list[str] = []
    gate = threading.Event()
    ex.submit(lambda: gate.wait(30))  # hold the thread so the next jobs stay pending
    ex.submit(lambda: seen.append("due"))
    ex.call_later(60, lambda: seen.append("never"))
    start = time.monotonic()
    closer = threading.Thread(
        target=lambda: seen.append(str(ex.close([lambda: seen.append("final")], 30)))
    )
    closer.start()
    time.sleep(0.1)
    gate.set()
    closer.join(30)
    assert seen == ["due", "final", "True"]
    assert time.monotonic() - start < 30
    assert not ex.thread.is_alive()
    assert ex.submit(lambda: seen.append("after")).cancelled


def test_close_from_the_executor_thread() -> None:
    ex = SerialExecutor("ex", LOG)
    result: list[object] = []

    def closer() -> None:
        result.append(ex.close([lambda: result.append("final")], 30))

    ex.submit(closer)
    ex.thread.join(30)
    assert result == [True, "final"] and not ex.thread.is_alive()
