"""Command line of ``python -m ska_tango_scheduler.demo``."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TextIO

from .. import CallbackScheduler, __version__
from ._environment import DemoEnvironment, DemoError, parse_tango_host
from ._runs import Recorder, RunSettings, run_plain, run_scheduled
from ._view import (
    LiveView,
    LogTail,
    plain_progress_lines,
    render_report,
    scheduler_lines,
    short_name,
)

__all__ = ["TANGO_HOST_ENV", "build_parser", "main"]

#: Environment variable with a default for ``--tango-host``.
TANGO_HOST_ENV = "SKA_TANGO_SCHEDULER_DEMO_TANGO_HOST"

# Exit statuses: like a shell, 128 + the signal number when interrupted.
_EXIT_OK = 0
_EXIT_ERROR = 1


class _Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; unwinding to clean up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # From now on, further signals must not cut the clean-up short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Interrupted(signum)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _tango_host(text: str) -> str:
    try:
        parse_tango_host(text)
    except DemoError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text.strip()


def build_parser() -> argparse.ArgumentParser:
    """Return the demo's argument parser."""
    defaults = RunSettings()
    parser = argparse.ArgumentParser(
        prog="python -m ska_tango_scheduler.demo",
        description=(
            "Show what the CallbackScheduler changes: a flooding attribute with a slow "
            "callback next to a quiet attribute, first with plain PyTango subscriptions, "
            "then through a scheduler, with a live view of the scheduler's diagnostics."
        ),
        epilog=(
            "By default the demo starts its own Tango database and device servers on "
            "127.0.0.1 and ends them when it exits, Ctrl-C included."
        ),
    )
    where = parser.add_argument_group("where to run")
    where.add_argument(
        "--tango-host",
        metavar="HOST:PORT",
        type=_tango_host,
        default=os.environ.get(TANGO_HOST_ENV) or None,
        help=(
            "use this running Tango database and start only the demo's device servers in it "
            f"(they are removed afterwards); default: ${TANGO_HOST_ENV}, else start a "
            "private database"
        ),
    )
    where.add_argument(
        "--device",
        metavar="TRL",
        help=(
            "use this running EventSource device (for example one deployed by the Helm "
            "chart) and start nothing; skips the late device"
        ),
    )
    where.add_argument(
        "--log-dir",
        type=Path,
        help="keep the servers' logs here (default: a temporary directory, removed on success)",
    )
    run = parser.add_argument_group("what to run")
    run.add_argument(
        "--seconds",
        type=_positive,
        default=defaults.seconds,
        help="seconds of pushing in each run (default %(default)s)",
    )
    run.add_argument(
        "--drain",
        type=_non_negative,
        default=defaults.drain,
        help="seconds for callbacks to catch up after pushing stops (default %(default)s)",
    )
    run.add_argument(
        "--flood-rate",
        type=_positive,
        default=defaults.flood_rate,
        help="events per second of the flooding attribute (default %(default)s)",
    )
    run.add_argument(
        "--quiet-rate",
        type=_positive,
        default=defaults.quiet_rate,
        help="events per second of the quiet attribute (default %(default)s)",
    )
    run.add_argument(
        "--callback-ms",
        type=_non_negative,
        default=defaults.callback_delay * 1000,
        help="milliseconds the flooding attribute's callback takes (default %(default)s)",
    )
    run.add_argument(
        "--threads",
        type=_count,
        default=defaults.threads,
        help="worker threads of the scheduler (default %(default)s)",
    )
    run.add_argument(
        "--queue-size",
        type=_count,
        default=defaults.queue_size,
        help="capacity of each stream's queue (default %(default)s)",
    )
    run.add_argument(
        "--late-after",
        type=_non_negative,
        default=defaults.late_after,
        help=(
            "seconds into the scheduler run at which the late device is defined and "
            "started (default %(default)s)"
        ),
    )
    run.add_argument(
        "--no-late-device",
        action="store_true",
        help="do not demonstrate a device that appears while the scheduler runs",
    )
    run.add_argument(
        "--refresh",
        type=_positive,
        help=(
            "seconds between live view updates (default 0.5 on a terminal, 2 otherwise, "
            "where each update is printed below the last)"
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _settings(args: argparse.Namespace, interactive: bool) -> tuple[RunSettings, float]:
    refresh = args.refresh if args.refresh is not None else (0.5 if interactive else 2.0)
    return RunSettings(
        seconds=args.seconds,
        drain=args.drain,
        flood_rate=args.flood_rate,
        quiet_rate=args.quiet_rate,
        callback_delay=args.callback_ms / 1000,
        threads=args.threads,
        queue_size=args.queue_size,
        late_after=args.late_after,
        refresh=min(refresh, 0.5),
    ), refresh


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the demo.

    Args:
        argv: Command line arguments; None: ``sys.argv[1:]``.
        out: Where to print; None: standard output.

    Returns:
        The exit status: 0 on success, 1 on error, 128 + the signal number
        when interrupted by SIGINT or SIGTERM.
    """
    args = build_parser().parse_args(argv)
    stream = sys.stdout if out is None else out
    interactive = stream.isatty() and os.environ.get("TERM", "") != "dumb"
    settings, refresh = _settings(args, interactive)

    def echo(line: str) -> None:
        stream.write(line + "\n")
        stream.flush()

    own_log_dir = args.log_dir is None
    log_dir = (
        Path(tempfile.mkdtemp(prefix="ska-tango-scheduler-demo-")) if own_log_dir else args.log_dir
    )
    environment = DemoEnvironment(
        log_dir,
        echo,
        tango_host=args.tango_host,
        device=args.device,
        late_device=not args.no_late_device,
    )
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    status = _EXIT_ERROR
    try:
        status = _run(environment, settings, refresh, interactive, stream, echo)
    except _Interrupted as stop:
        echo(f"\ninterrupted by {signal.Signals(stop.signum).name}: stopping everything")
        status = 128 + stop.signum
    except DemoError as exc:
        echo(f"error: {exc}")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        environment.close()
        if own_log_dir and status != _EXIT_ERROR:
            shutil.rmtree(log_dir, ignore_errors=True)
        elif args.device is None:
            echo(f"server logs: {log_dir}")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    echo("demo finished: every process it started has ended")
    return status


def _run(
    environment: DemoEnvironment,
    settings: RunSettings,
    refresh: float,
    interactive: bool,
    stream: TextIO,
    echo: Callable[[str], None],
) -> int:
    """Start the environment, do both runs and print the report."""
    started = time.monotonic()
    devices = environment.start()
    view = LiveView(stream, interactive=interactive, interval=refresh)

    echo(
        f"\n1) plain PyTango: {settings.flood_attribute} at {settings.flood_rate:g} Hz with a"
        f" {settings.callback_delay * 1000:g} ms callback, {settings.quiet_attribute} at"
        f" {settings.quiet_rate:g} Hz, callbacks on Tango's event thread"
    )

    def plain_progress(elapsed: float, flood: Recorder, quiet: Recorder) -> None:
        view.show(
            plain_progress_lines(elapsed, settings, flood, quiet),
            force=elapsed >= settings.seconds,
        )

    plain = run_plain(devices.source, settings, plain_progress)
    view.finish()

    late_note = ""
    if devices.late:
        late_note = f", and a callback on {short_name(devices.late)}, not defined yet"
    echo(
        f"\n2) the same through a CallbackScheduler, {settings.threads} worker thread(s){late_note}"
    )

    # The scheduler's warnings would break up the live view: show them in it instead.
    log = LogTail()
    logger = logging.getLogger("ska_tango_scheduler")
    propagate = logger.propagate
    logger.addHandler(log)
    logger.propagate = False

    notes: list[str] = []

    def start_late() -> None:
        notes.append(f"  {settings.late_after:g} s: {environment.start_late_server()}")

    def scheduler_progress(elapsed: float, scheduler: CallbackScheduler) -> None:
        view.show(
            scheduler_lines(elapsed, settings, scheduler.diagnostics(), log) + notes,
            force=elapsed >= settings.seconds,
        )

    try:
        scheduled = run_scheduled(
            devices.source,
            settings,
            scheduler_progress,
            late_trl=devices.late,
            start_late=start_late if devices.late else None,
        )
    finally:
        logger.removeHandler(log)
        logger.propagate = propagate
    view.finish()
    echo("")
    for line in render_report(settings, plain, scheduled):
        echo(line)
    echo(f"\n(demo ran for {time.monotonic() - started:.1f} s)")
    return _EXIT_OK
