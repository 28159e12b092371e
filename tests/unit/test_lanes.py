"""The lanes service: jobs in order per lane, lanes in parallel, delays, closing."""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
import types
from collections.abc import Callable
from typing import Any

import pytest

from ska_tango_scheduler import _lanes as lanes_module
from ska_tango_scheduler._lanes import ConnectorPool
from ska_tango_scheduler.testing import WaitTimeoutError, wait_for

LOG = logging.getLogger("test.lanes")


def test_jobs_of_one_lane_run_in_order_one_at_a_time() -> None:
    ex = ConnectorPool("ex", LOG, max_threads=4)
    seen: list[int] = []
    running = [0]
    overlap: list[int] = []
    done = threading.Event()

    def job(i: int) -> None:
        running[0] += 1
        overlap.append(running[0])
        time.sleep(0.001)
        seen.append(i)
        running[0] -= 1

    for i in range(50):
        ex.submit("a", lambda i=i: job(i))
    ex.submit("a", done.set)
    assert done.wait(30)
    assert seen == list(range(50))
    assert max(overlap) == 1
    assert all(t.name.startswith(("ex-", "ex.")) for t in ex.threads)
    assert ex.close([], 30)


def test_a_blocked_lane_does_not_hold_up_the_others() -> None:
    ex = ConnectorPool("ex", LOG, max_threads=4)
    gate = threading.Event()
    done = threading.Event()
    ex.submit("hung", lambda: gate.wait(30))
    ex.submit("hung", lambda: None)
    ex.submit("other", done.set)
    assert done.wait(30)
    gate.set()
    assert ex.close([], 30)


def test_delayed_and_cancelled_jobs() -> None:
    ex = ConnectorPool("ex", LOG)
    seen: list[str] = []
    done = threading.Event()
    ex.call_later(0.2, "a", lambda: seen.append("late"))
    ex.call_later(0.3, "a", done.set)
    handle = ex.call_later(0.1, "a", lambda: seen.append("cancelled"))
    ex.submit("a", lambda: seen.append("now"))
    handle.cancel()
    assert done.wait(30)
    assert seen == ["now", "late"]
    assert ex.close([], 30)


def test_a_failing_job_does_not_stop_the_thread(caplog) -> None:
    ex = ConnectorPool("ex", LOG, max_threads=1)
    done = threading.Event()

    def bad() -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="test.lanes"):
        ex.submit("a", bad)
        ex.submit("a", done.set)
        assert done.wait(30)
    assert any("failed" in r.getMessage() for r in caplog.records)
    assert ex.close([], 30)


def test_close_runs_queued_jobs_then_final_jobs_and_cancels_later_ones() -> None:
    ex = ConnectorPool("ex", LOG)
    seen: list[str] = []
    gate = threading.Event()
    ex.submit("a", lambda: gate.wait(30))  # hold the lane so the next jobs stay pending
    ex.submit("a", lambda: seen.append("due"))
    ex.call_later(60, "a", lambda: seen.append("never"))
    start = time.monotonic()
    closer = threading.Thread(
        target=lambda: seen.append(str(ex.close([("a", lambda: seen.append("final"))], 30)))
    )
    closer.start()
    time.sleep(0.1)
    gate.set()
    closer.join(30)
    assert seen == ["due", "final", "True"]
    assert time.monotonic() - start < 30
    assert not any(t.is_alive() for t in ex.threads)
    assert ex.submit("a", lambda: seen.append("after")).cancelled


def test_close_from_a_pool_thread() -> None:
    ex = ConnectorPool("ex", LOG)
    result: list[object] = []
    done = threading.Event()

    def closer() -> None:
        result.append(ex.close([("a", lambda: (result.append("final"), done.set()))], 30))

    ex.submit("a", closer)
    assert done.wait(30)
    for thread in ex.threads:
        thread.join(30)
    assert result == [True, "final"]


def test_run_here_keeps_the_lane_serialised() -> None:
    ex = ConnectorPool("ex", LOG)
    gate = threading.Event()
    order: list[str] = []
    started = threading.Event()
    ex.submit("a", lambda: (started.set(), gate.wait(30), order.append("pool")))
    assert started.wait(30)
    assert not ex.run_here("a", lambda: order.append("early"), timeout=0.1)
    gate.set()
    assert ex.run_here("a", lambda: order.append("here"), timeout=30)
    assert order == ["pool", "here"]
    assert ex.run_here("b", lambda: order.append(threading.current_thread().name), None)
    assert order[-1] == threading.current_thread().name
    assert ex.close([], 30)


def test_notify_runs_off_the_pool_threads() -> None:
    ex = ConnectorPool("ex", LOG)
    names: list[str] = []
    done = threading.Event()
    ex.submit(
        "a", lambda: ex.notify(lambda: (names.append(threading.current_thread().name), done.set()))
    )
    assert done.wait(30)
    assert names == ["ex.futures"]
    assert ex.close([], 30)


def test_close_after_abandon_runs_the_final_jobs_on_the_caller() -> None:
    """At interpreter exit the pool is abandoned first; a later close still unsubscribes."""
    pool = ConnectorPool("abandoned", LOG)
    started = threading.Event()
    pool.submit("a", started.set)
    assert started.wait(10)
    pool.abandon()
    ran: list[tuple[str, threading.Thread]] = []
    assert pool.close(
        [
            ("a", lambda: ran.append(("a", threading.current_thread()))),
            ("b", lambda: ran.append(("b", threading.current_thread()))),
        ],
        timeout=10,
    )
    assert ran == [("a", threading.current_thread()), ("b", threading.current_thread())]
    assert not any(t.is_alive() for t in pool.threads)


class _ReleaseNeedsSubmit:
    """Held by a job; its release waits for another thread's ``submit`` to get through.

    It stands for a Tango event (and its ``DeviceProxy``) captured by a job: cppTango's
    proxy destructor waits for Tango's event thread, which may be waiting in ``submit``.
    """

    def __init__(self, pool: ConnectorPool, done: list[bool]) -> None:
        self.pool, self.done = pool, done

    def __del__(self) -> None:
        other = threading.Thread(target=self.pool.submit, args=("other", lambda: None), daemon=True)
        other.start()
        other.join(5)
        self.done.append(not other.is_alive())


def _holding(held: object) -> Callable[[], None]:
    def job() -> None:
        assert held is not None

    return job


def _wait_for_release(done: list[bool]) -> list[bool]:
    """Wait for the job's release (its destructor); what it reported, ``[]`` if none came."""
    try:
        wait_for(lambda: done, timeout=30, interval=0.01, message="the job's release")
    except WaitTimeoutError:
        pass
    return list(done)


def test_a_job_is_never_released_under_the_pool_lock() -> None:
    """A job that has run is released with the lock free, however its lane goes on."""
    ex = ConnectorPool("ex", LOG, max_threads=1)
    done: list[bool] = []
    ex.submit("lane", _holding(_ReleaseNeedsSubmit(ex, done)))
    ex.submit("lane", lambda: None)
    seen = _wait_for_release(done)
    ex.close([], timeout=10)
    assert seen == [True], f"the submit inside the release waited for the pool lock: {seen}"


def test_a_cancelled_timer_job_is_released_with_the_lock_free() -> None:
    ex = ConnectorPool("ex", LOG, max_threads=1)
    done: list[bool] = []
    ex.call_later(0.05, "lane", _holding(_ReleaseNeedsSubmit(ex, done))).cancel()
    ex.call_later(0.2, "lane", lambda: None)  # the timer thread takes the next one
    seen = _wait_for_release(done)
    ex.close([], timeout=10)
    assert seen == [True], f"the submit inside the release waited for the pool lock: {seen}"


# -- the rule: no collection while a thread holds a lock of the service ----------------------

_held = threading.local()
_RealLock = threading.Lock


class _TrackingLock:
    """A lock that counts, per thread, how many tracking locks the thread holds."""

    def __init__(self, reentrant: bool = False) -> None:
        self._lock = threading.RLock() if reentrant else _RealLock()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        _held.taken = getattr(_held, "taken", 0) + 1
        got = self._lock.acquire(blocking, timeout)
        if got:
            _held.count = getattr(_held, "count", 0) + 1
        return got

    def release(self) -> None:
        _held.count -= 1
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked() if hasattr(self._lock, "locked") else False

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _tracking_threading() -> types.SimpleNamespace:
    """The threading module, with every lock and condition made of tracking locks."""
    shim = types.SimpleNamespace(**vars(threading))
    shim.Lock = _TrackingLock
    shim.RLock = lambda: _TrackingLock(reentrant=True)
    shim.Condition = lambda lock=None: threading.Condition(
        lock if lock is not None else _TrackingLock(reentrant=True)
    )
    return shim


def churn_under_gc(module: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[int, list[str]]:
    """Churn a service of ``module`` from several threads, the collector on at every allocation.

    Returns:
        How many collections started, and the names of the threads that started
        one while holding a lock of the service (or the calls of the service
        that took one of its locks at all: submit, call_later and cancel must
        take none, whatever they allocate).
    """
    monkeypatch.setattr(module, "threading", _tracking_threading())
    flagged: list[str] = []
    starts = [0]

    def lock_free(name: str, call: Callable[..., Any], *args: Any) -> Any:
        before = getattr(_held, "taken", 0)
        result = call(*args)
        if getattr(_held, "taken", 0) != before:
            flagged.append(f"{name} took a lock")
        return result

    def hook(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            starts[0] += 1
            if getattr(_held, "count", 0):
                flagged.append(threading.current_thread().name)

    def churn(pool: Any, me: int) -> None:
        for i in range(60):
            lane = f"lane-{me}-{i % 5}"
            lock_free("submit", pool.submit, lane, lambda: [object()])
            handle = lock_free("call_later", pool.call_later, 0.001 * (i % 3), lane, lambda: None)
            lock_free("cancel", handle.cancel)
            lock_free("call_later", pool.call_later, 0.002, lane, lambda: [object()])
            if i % 10 == 0:
                pool.run_here(lane, lambda: [object()], timeout=5)

    threshold = gc.get_threshold()
    gc.callbacks.append(hook)
    gc.set_threshold(1)
    try:
        for round_ in range(3):
            pool = module.ConnectorPool(f"gc-{round_}", LOG, max_threads=3)
            workers = [
                threading.Thread(target=churn, args=(pool, n), name=f"churn-{n}") for n in range(4)
            ]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(60)
            assert pool.close([("final", lambda: [object()])], 30)
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(hook)
    return starts[0], flagged


def test_no_collection_starts_under_a_lock_of_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tango's event thread may wait in submit: nothing may collect under what it waits for.

    A collection can free a ``DeviceProxy`` whose destructor waits for Tango's
    event thread; if that happens under a lock that submit, call_later, cancel or
    run_here waits for, the process deadlocks. (The connector pool this service
    replaced created a lane under its lock: this test fails on it.)
    """
    starts, flagged = churn_under_gc(lanes_module, monkeypatch)
    assert starts > 100, "the collector hardly ran: the test proves nothing"
    assert not flagged, f"collections started under a lock of the service in {set(flagged)}"


def test_run_here_is_reentrant_in_a_job_of_its_lane() -> None:
    ex = ConnectorPool("ex", LOG)
    seen: list[str] = []
    done = threading.Event()

    def outer() -> None:
        assert ex.in_pool()
        assert ex.run_here("a", lambda: seen.append("inner"), timeout=0.1)
        assert ex.run_here("a", lambda: ex.run_here("a", lambda: seen.append("nested"), 0), 0)
        done.set()

    ex.submit("a", outer)
    assert done.wait(30)
    assert seen == ["inner", "nested"]
    assert not ex.in_pool()
    assert ex.close([], 30)


class _LateReply:
    """A grant queue whose wait ends just after the grant came, as a timeout would."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[bool] = queue.SimpleQueue()

    def put(self, granted: bool) -> None:
        self._queue.put(granted)

    def get(self, timeout: float | None = None) -> bool:
        self._queue.get(timeout=30)
        raise queue.Empty


def test_a_grant_that_comes_after_the_timeout_is_handed_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """run_here gives up as the grant comes: the lane is handed back, its jobs still run."""
    ex = ConnectorPool("ex", LOG)
    ran: list[str] = []

    class LateGrant(lanes_module.Grant):
        def __init__(self) -> None:
            super().__init__()
            self.reply = _LateReply()  # type: ignore[assignment]

    monkeypatch.setattr(lanes_module, "Grant", LateGrant)
    assert not ex.run_here("a", lambda: ran.append("here"), timeout=0.1)
    done = threading.Event()
    ex.submit("a", done.set)
    assert done.wait(10), "a grant that came too late kept the lane"
    assert ran == []
    assert ex.close([], 30)
