"""The command line of ``ska-tango-scheduler-top``: arguments, the live loop, exit statuses.

See :mod:`ska_tango_scheduler.top` for what the command does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import TextIO

from .. import __version__
from .._checks import ArgumentRangeError, ArgumentTypeError, check_seconds
from .._view import LiveView
from .reading import Follower, left_behind, read_reports
from .reports import report_json, report_lines

__all__ = ["build_parser", "main", "run"]

_EXIT_OK = 0
_EXIT_UNANSWERED = 1
_EXIT_INTERRUPTED = 130  # like a shell: 128 + SIGINT
_EXIT_PIPE_CLOSED = 141  # like a shell: 128 + SIGPIPE

# Longest --timeout and --interval, in seconds.
# Longest --timeout and --interval, in seconds.
_MAX_SECONDS = 3600.0


class _Quit(BaseException):
    """SIGTERM arrived."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Quit()


def _live(args: argparse.Namespace, out: TextIO) -> int:
    interactive = out.isatty() and not args.json
    view = LiveView(out, interactive=interactive, interval=args.interval)
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        signal.signal(signal.SIGTERM, _on_sigterm)
    follower: Follower | None = None
    status = _EXIT_OK
    try:
        follower = Follower(args.devices, args.timeout)
        follower.wait_first_reads(args.timeout)
        changed = first = True
        while True:
            reports = follower.reports()
            if args.json:
                if changed:
                    out.write(json.dumps(report_json(reports), sort_keys=True) + "\n")
                    out.flush()
            else:
                now = time.time()
                header = (
                    f"ska-tango-scheduler-top {__version__}: {len(reports)} device(s),"
                    f" {time.strftime('%H:%M:%S', time.localtime(now))}; change events;"
                    " Ctrl-C quits"
                )
                view.show([header, *report_lines(reports, now)], force=first)
                first = False
            changed = follower.wait(1.0)
    except (KeyboardInterrupt, _Quit):
        pass
    except BrokenPipeError:
        status = _EXIT_PIPE_CLOSED
    finally:
        if in_main_thread:
            # Clean up without being cut short by a second Ctrl-C.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if follower is not None:
            follower.close()
        if status != _EXIT_PIPE_CLOSED:
            try:
                view.finish()
            except BrokenPipeError:
                status = _EXIT_PIPE_CLOSED
    return status


def _seconds(text: str) -> float:
    """Parse ``--timeout`` and ``--interval``: seconds above 0, at most an hour."""
    try:
        return check_seconds("", text, _MAX_SECONDS, allow_zero=False, from_text=True)
    except (ArgumentTypeError, ArgumentRangeError) as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: give {exc.expected}") from None


def build_parser() -> argparse.ArgumentParser:
    """Return the command's argument parser."""
    parser = argparse.ArgumentParser(
        prog="ska-tango-scheduler-top",
        description=(
            "Show the callback schedulers of running SchedulerMixin devices: one line per "
            "queue, the worst queue wait first, with drops and slow callbacks. Live by "
            "change events until Ctrl-C, or once with --once."
        ),
        epilog="Devices are found through TANGO_HOST, or name their database in the TRL.",
    )
    parser.add_argument("devices", nargs="+", metavar="TRL", help="device names or TRLs")
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=3.0,
        metavar="SECONDS",
        help="how long the devices may take to answer: with --once, the whole read; live, "
        "the first read before the first view; above 0, at most 3600 (default 3)",
    )
    parser.add_argument(
        "--interval",
        type=_seconds,
        default=2.0,
        metavar="SECONDS",
        help="live, when the output is not a terminal: seconds between two printed views "
        "(default 2)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command.

    Args:
        argv: Arguments after the program name; None: ``sys.argv[1:]``.

    Returns:
        The exit status: 0, 1 (``--once``: a device gave no snapshot), 2
        (usage), 130 (interrupted) or 141 (the output was closed).
    """
    args = build_parser().parse_args(argv)
    out = sys.stdout
    if not args.once:
        return _live(args, out)
    try:
        reports = read_reports(args.devices, args.timeout)
    except KeyboardInterrupt:
        left_behind.set()
        return _EXIT_INTERRUPTED
    try:
        if args.json:
            out.write(json.dumps(report_json(reports), indent=2, sort_keys=True) + "\n")
        else:
            out.write("".join(f"{line}\n" for line in report_lines(reports)))
        out.flush()
    except BrokenPipeError:
        return _EXIT_PIPE_CLOSED
    return _EXIT_OK if all(r.ok for r in reports) else _EXIT_UNANSWERED


def run() -> None:
    """Entry point of the console script: run and exit with its status.

    A closed output ends the command quietly (status 141). When a thread
    was left inside a Tango call that does not return (a silent host), the
    process ends at once after flushing its output: a thread coming back
    from Tango while the interpreter finalises would abort it.
    """
    try:
        status = main()
    except KeyboardInterrupt:
        status = _EXIT_INTERRUPTED
    except BrokenPipeError:
        status = _EXIT_PIPE_CLOSED
    if status == _EXIT_PIPE_CLOSED:
        # Nothing more can be written; keep the flush at exit quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    if left_behind.is_set():
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        logging.shutdown()
        os._exit(status)
    sys.exit(status)
