"""A real-Tango test bed: a database, device server processes, an event source.

Everything here runs real Tango processes on 127.0.0.1, so that tests see
the same event system as production code:

* :class:`TangoDatabase` runs PyTango's sqlite Database device server.
* :class:`DeviceServerProcess` runs a device server as a child process,
  registered in that database, and can stop, kill and restart it.
* ``python -m ska_tango_scheduler.testing.event_source`` runs ``EventSource``
  devices that push numbered change and archive events on command (see
  :mod:`ska_tango_scheduler.testing.event_source`).
* :class:`SilentHost` accepts TCP connections and never answers, like a
  hung Tango host; :class:`HalfAnsweringHost` answers a GIOP ping and no
  request, like a stuck database server.
* :func:`wait_for` polls a condition with a deadline.
* :class:`SubscriptionCallCounter` counts the Tango subscribe and
  unsubscribe calls made through a proxy.

Pytest fixtures built on these live in
:mod:`ska_tango_scheduler.testing.pytest_plugin`; enable them in a
``conftest.py`` with ``pytest_plugins = ["ska_tango_scheduler.testing.pytest_plugin"]``.

Nothing in the runtime package imports this one.
"""

from ._calls import SubscriptionCallCounter
from ._database import DB_PYTHON_ENV, TangoDatabase, database_python
from ._process import ManagedProcess, free_port, kill_child_processes, kill_started_processes
from ._servers import (
    EVENT_SOURCE_ATTRIBUTES,
    EVENT_SOURCE_CLASS,
    EVENT_SOURCE_MODULE,
    LOOPBACK_ORB_ARGS,
    DeviceServerProcess,
    event_source_process,
)
from ._silent import HalfAnsweringHost, SilentHost
from ._wait import WaitTimeoutError, wait_for

__all__ = [
    "DB_PYTHON_ENV",
    "EVENT_SOURCE_ATTRIBUTES",
    "EVENT_SOURCE_CLASS",
    "EVENT_SOURCE_MODULE",
    "LOOPBACK_ORB_ARGS",
    "DeviceServerProcess",
    "HalfAnsweringHost",
    "ManagedProcess",
    "SilentHost",
    "SubscriptionCallCounter",
    "TangoDatabase",
    "WaitTimeoutError",
    "database_python",
    "event_source_process",
    "free_port",
    "kill_child_processes",
    "kill_started_processes",
    "wait_for",
]
