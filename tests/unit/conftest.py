"""Fixtures for the pure-core unit tests."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ska_tango_scheduler._callbacks import CallbackRegistration, RateLimitedLogger, run_callbacks
from ska_tango_scheduler._dispatch import Dispatcher
from ska_tango_scheduler._queues import Counters
from ska_tango_scheduler.testing import wait_for

LOGGER = logging.getLogger("test.core")


class RecordingSink:
    """A sink that runs its callbacks like a stream does."""

    def __init__(self, name: str, limited: RateLimitedLogger, *callbacks: Callable[[Any], None]):
        self.name = name
        self.counters = Counters()
        self._limited = limited
        self.registrations = tuple(CallbackRegistration(i, cb) for i, cb in enumerate(callbacks))

    def deliver(self, payload: Any) -> None:
        run_callbacks(self.registrations, payload, self.counters, self._limited, self.name)


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    """Wait for ``predicate`` with a generous deadline; ``what`` says what for, on failure."""
    wait_for(predicate, timeout=timeout, interval=0.002, message=what or None)


class Gate:
    """A callback that blocks until released, to hold a worker."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, payload: Any) -> None:
        self.entered.set()
        assert self.release.wait(60), "gate never released"


@pytest.fixture
def limited() -> RateLimitedLogger:
    """A rate-limited logger for sinks."""
    return RateLimitedLogger(LOGGER)


@pytest.fixture
def make_dispatcher() -> Iterator[object]:
    """Create started dispatchers and stop them after the test."""
    made: list[Dispatcher] = []

    def make(thread_count: int = 1) -> Dispatcher:
        dispatcher = Dispatcher(thread_count, f"test-{len(made)}", LOGGER)
        dispatcher.start()
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        assert dispatcher.stop(timeout=30), "a worker did not stop"


@pytest.fixture
def sink_class() -> type[RecordingSink]:
    """The recording sink class."""
    return RecordingSink


@pytest.fixture
def gate_class() -> type[Gate]:
    """The gate callback class."""
    return Gate


@pytest.fixture
def wait() -> Callable[..., None]:
    """The condition waiter."""
    return wait_until
