"""Test configuration shared by the unit and integration suites.

The real-Tango fixtures (``tango_database``, ``device_server_factory``,
``event_source``) come from :mod:`ska_tango_scheduler.testing.pytest_plugin`.
Tests under ``tests/integration`` are marked ``integration``; when any such
test is selected, the Tango database is started before every other fixture,
so ``TANGO_HOST`` is set before the first Tango client call of the session.

``make_scheduler`` and ``sched`` give every suite schedulers that are shut
down after the test, their threads checked gone.

A suite started in the background by a shell without job control (``make
test &`` in a script, ``nohup``) inherits SIGINT ignored, and so would every
process a test starts: a test sending Ctrl-C to ``ska-tango-scheduler-top``
would then wait for nothing. :func:`pytest_configure` gives the session
Python's own SIGINT handler, so that the processes it starts begin with the
default (as from a terminal).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tango

from ska_tango_scheduler import CallbackScheduler
from ska_tango_scheduler.testing import DB_PYTHON_ENV

pytest_plugins = ["ska_tango_scheduler.testing.pytest_plugin"]

_INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_configure(config: pytest.Config) -> None:
    """Undo an inherited "ignore SIGINT", for the session and the processes it starts."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_report_header(config: pytest.Config) -> str:
    """Name the PyTango under test and the interpreter of the test database."""
    db_python = os.environ.get(DB_PYTHON_ENV) or "this interpreter"
    return f"pytango {tango.__version__}; Tango database runs on: {db_python}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under ``tests/integration`` as ``integration``."""
    for item in items:
        if _INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def _tango_host_first(request: pytest.FixtureRequest) -> None:
    """Start the Tango database first when integration tests were selected."""
    if any(item.get_closest_marker("integration") for item in request.session.items):
        request.getfixturevalue("tango_database")


@pytest.fixture
def make_scheduler() -> Iterator[Callable[..., CallbackScheduler]]:
    """Make schedulers (``make_scheduler(**kwargs)``); each is shut down after the test.

    After the shutdown, none of its threads may still be alive.
    """
    made: list[CallbackScheduler] = []

    def make(**kwargs: Any) -> CallbackScheduler:
        scheduler = CallbackScheduler(**kwargs)
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.shutdown(timeout=30)
        alive = [t.name for t in scheduler.threads if t.is_alive()]
        assert not alive, f"threads of the scheduler still alive after its shutdown: {alive}"


@pytest.fixture
def sched(
    make_scheduler: Callable[..., CallbackScheduler], request: pytest.FixtureRequest
) -> CallbackScheduler:
    """A scheduler with default settings, named after the test module."""
    return make_scheduler(name=request.module.__name__.removeprefix("test_"))
