"""The demo's pure parts: arguments, statistics, and what it prints."""

from __future__ import annotations

import io

import pytest

from ska_tango_scheduler.demo._cli import build_parser
from ska_tango_scheduler.demo._environment import DemoError, parse_tango_host
from ska_tango_scheduler.demo._runs import (
    LateDeviceResult,
    RunResult,
    RunSettings,
    StreamResult,
    percentile,
)
from ska_tango_scheduler.demo._view import LiveView, render_report, short_name


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([3.0], 0.99) == 3.0
    assert percentile([], 0.5) is None


@pytest.mark.parametrize("text", ["127.0.0.1:10000", "databaseds-tango-base:10000"])
def test_tango_host_is_parsed(text: str) -> None:
    host, port = parse_tango_host(text)
    assert f"{host}:{port}" == text


@pytest.mark.parametrize("text", ["", "host", "host:", ":10000", "host:port"])
def test_bad_tango_host_is_refused(text: str) -> None:
    with pytest.raises(DemoError):
        parse_tango_host(text)


def test_parser_defaults_finish_quickly() -> None:
    args = build_parser().parse_args([])
    assert args.seconds * 2 + args.drain * 2 <= 20
    assert args.tango_host is None and args.device is None


@pytest.mark.parametrize(
    "argv", [["--seconds", "0"], ["--threads", "0"], ["--tango-host", "nohost"], ["--drain", "-1"]]
)
def test_parser_refuses_bad_values(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)
    assert "error" in capsys.readouterr().err


def test_short_name_drops_the_tango_host() -> None:
    assert short_name("tango://127.0.0.1:1234/a/b/c/attr#CHANGE_EVENT") == "a/b/c/attr#CHANGE_EVENT"
    assert short_name("a/b/c") == "a/b/c"


def test_report_puts_both_runs_side_by_side() -> None:
    settings = RunSettings(seconds=2)
    plain = RunResult(
        "plain PyTango",
        StreamResult("myAttr1", 200, pushed=400, delivered=40),
        StreamResult("myAttr2", 10, pushed=20, delivered=2, latencies=(1.0, 1.9)),
    )
    scheduled = RunResult(
        "CallbackScheduler",
        StreamResult("myAttr1", 200, 400, 40, received=401, dropped=330, queued=31),
        StreamResult("myAttr2", 10, 20, 20, 21, 0, 0, tuple([0.001] * 20)),
        LateDeviceResult("tango://h:1/demo/late/1", 1.0, 1.5, 4),
    )
    text = "\n".join(render_report(settings, plain, scheduled))
    assert "plain PyTango  CallbackScheduler" in text
    assert "n/a" in text and "330" in text
    assert "1.90 s" in text and "1.0 ms" in text
    assert "late device demo/late/1" in text and "0.50 s later" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_live_view_redraws_in_place_on_a_terminal() -> None:
    out = io.StringIO()
    view = LiveView(out, interactive=True)
    view.show(["a", "b"])
    view.show(["c"])
    assert out.getvalue() == "a\nb\n\x1b[2F\x1b[Jc\n"


class _InterruptedTerminal(io.StringIO):
    """A terminal where Ctrl-C lands right after a write, once armed."""

    armed = False

    def write(self, text: str) -> int:
        written = super().write(text)
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
        return written


def test_ctrl_c_during_a_redraw_never_leaves_the_screen_cleared() -> None:
    """A redraw is one write: a Ctrl-C after any write leaves a whole block on screen."""
    out = _InterruptedTerminal()
    view = LiveView(out, interactive=True)
    view.show(["a", "b"])
    out.armed = True
    with pytest.raises(KeyboardInterrupt):
        view.show(["c"])
    view.finish()
    assert out.getvalue().endswith("\n"), repr(out.getvalue())


def test_live_view_prints_blocks_now_and_then_elsewhere() -> None:
    out = io.StringIO()
    view = LiveView(out, interactive=False, interval=3600)
    view.show(["first"])
    view.show(["skipped"])
    view.show(["forced"], force=True)
    assert out.getvalue() == "first\nforced\n"
