"""Benchmarks of ska-tango-scheduler against plain PyTango, in one run.

Run ``python -m benchmarks`` (or ``make bench``) from the repository root for
the full run, which writes ``docs/benchmarks.md``, ``docs/benchmarks.json``
and plots under ``docs/benchmarks/``; ``python -m benchmarks --quick`` (or
``make bench-quick``) is a short smoke run that writes under
``build/bench-quick/``.

Every Tango benchmark starts one test database and one ``EventSource``
device server (from :mod:`ska_tango_scheduler.testing`) and runs each side,
plain PyTango and the scheduler, as a separate client process against that
same server, so each side gets a fresh event system and its own resident
memory figure. This package is a tool: nothing in ``ska_tango_scheduler``
imports it.
"""

from pathlib import Path


def package_origin(package_dir: Path) -> str:
    """Say which package a side ran, without a machine path.

    Args:
        package_dir: The folder of the ``ska_tango_scheduler`` that ran.

    Returns:
        Its path relative to this repository (``src/ska_tango_scheduler``),
        or ``"baseline"`` for a package outside it (``--baseline``).
    """
    here = Path(__file__).resolve().parent.parent
    try:
        return str(package_dir.resolve().relative_to(here))
    except ValueError:
        return "baseline"
