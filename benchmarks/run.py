"""Run the benchmarks and write the report: ``python -m benchmarks [options]``.

``--quick`` is a smoke run (under two minutes); the full run writes
``docs/benchmarks.md``, ``docs/benchmarks.json`` and the plots in
``docs/benchmarks/``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import (
    diagnostics,
    dispatch,
    isolation,
    lrc,
    memory,
    report,
    startup,
    streams,
    stress,
    throughput,
)
from ._bed import Bed
from ._common import BenchResult, Row, environment_summary

__all__ = ["FULL", "QUICK", "main"]

_REPO_ROOT = Path(__file__).resolve().parent.parent

#: Parameters of the full run, per benchmark.
FULL: dict[str, dict[str, Any]] = {
    "dispatch": {"events": 200_000, "isolated": 2_000, "repeats": 5},
    "throughput": {
        "servers": 3,
        "count": 10_000,
        "repeats": 3,
        "rates": [4000.0, 8000.0, 12000.0, 16000.0],
        "seconds": 2.0,
        "edge_repeats": 4,
    },
    "streams": {"devices": 25, "servers": 5, "pushes": 200, "repeats": 3},
    "isolation": {"burst": 200, "quiet_hz": 20.0, "quiet_s": 2.0, "callback_s": 0.05, "repeats": 5},
    "memory": {"flood_hz": 2000.0, "callback_s": 0.01, "seconds": 30.0},
    "startup": {"repeats": 5, "down_s": 3.0},
    "lrc": {"commands": 100, "quiet_hz": 50.0},
    "stress": {"servers": 5, "seconds": 30.0, "repeats": 2},
    "diagnostics": {"rate": 4000.0, "seconds": 5.0, "repeats": 2},
}

#: Parameters of the smoke run.
QUICK: dict[str, dict[str, Any]] = {
    "dispatch": {"events": 50_000, "isolated": 500, "repeats": 3},
    "throughput": {
        "servers": 3,
        "count": 5_000,
        "repeats": 1,
        "rates": [6000.0, 12000.0],
        "seconds": 1.5,
        "edge_repeats": 1,
    },
    "streams": {"devices": 25, "servers": 5, "pushes": 100, "repeats": 1},
    "isolation": {"burst": 100, "quiet_hz": 20.0, "quiet_s": 1.0, "callback_s": 0.05, "repeats": 1},
    "memory": {"flood_hz": 2000.0, "callback_s": 0.01, "seconds": 10.0},
    "startup": {"repeats": 2, "down_s": 2.0},
    "lrc": {"commands": 20, "quiet_hz": 50.0},
    "stress": {"servers": 2, "seconds": 3.0, "repeats": 1},
    "diagnostics": {"rate": 4000.0, "seconds": 2.0, "repeats": 1},
}

_TANGO_BENCHMARKS: dict[str, Callable[[Bed, dict[str, Any]], BenchResult]] = {
    "throughput": throughput.run,
    "streams": streams.run,
    "isolation": isolation.run,
    "memory": memory.run,
    "startup": startup.run,
    "lrc": lrc.run,
    "stress": stress.run,
    "diagnostics": diagnostics.run,
}
ORDER = (
    "throughput",
    "streams",
    "isolation",
    "memory",
    "startup",
    "lrc",
    "stress",
    "diagnostics",
    "dispatch",
)


def _git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=_REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("+changes" if dirty else "")


def _describe_baseline(src: Path | None) -> str | None:
    """Name the baseline revision: its git revision, else its folder's name (no machine path)."""
    if src is None:
        return None
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=src,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"the source tree {src.resolve().parent.name!r}"
    return f"revision {rev}"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: docs/, or build/bench-quick/ with --quick)",
    )
    parser.add_argument(
        "--only", nargs="+", choices=ORDER, default=None, help="run only these benchmarks"
    )
    parser.add_argument("--no-plots", action="store_true", help="do not draw PNG plots")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="SRC",
        help="also run every scheduler side with the package from this src directory "
        "(another revision), interleaved, as '<side>@base'",
    )
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="JSON",
        help="run nothing: write the report again from a benchmarks.json (e.g. after "
        "editing benchmarks/NOTES.md)",
    )
    return parser.parse_args(argv)


def _load(path: Path) -> tuple[list[BenchResult], dict[str, Any], dict[str, Any]]:
    """Read results, environment and parameters back from a ``benchmarks.json``."""
    data = json.loads(path.read_text(encoding="utf-8"))
    results = []
    for item in data["results"]:
        rows = [Row(**{k: v for k, v in row.items() if k != "ratio"}) for row in item["rows"]]
        result = BenchResult(
            item["name"],
            item["title"],
            item["setup"],
            rows,
            item["details"],
            item["plots"],
            item["seconds"],
            item["skipped"],
        )
        results.append(result)
    return results, data["environment"], data["config"]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and write the report.

    Args:
        argv: Command line arguments (None: ``sys.argv[1:]``).

    Returns:
        0 when every benchmark ran (targets missed do not fail the run), 1 when
        one of them crashed.
    """
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = QUICK if args.quick else FULL
    out = args.out or (_REPO_ROOT / ("build/bench-quick" if args.quick else "docs"))
    if args.render is not None:
        loaded, loaded_env, loaded_config = _load(args.render)
        report.write(args.out or args.render.parent, loaded, loaded_env, loaded_config)
        return 0
    selected = [name for name in ORDER if args.only is None or name in args.only]
    started = time.monotonic()
    env = environment_summary()
    env["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    env["git"] = _git_revision()
    env["mode"] = "quick" if args.quick else "full"
    env["baseline"] = _describe_baseline(args.baseline)
    results: list[BenchResult] = []
    crashed = False
    tango_names = [name for name in selected if name in _TANGO_BENCHMARKS]
    if tango_names:
        with Bed(out / "bench-work" if args.quick else None, baseline=args.baseline) as bed:
            for name in tango_names:
                results.append(
                    _one(name, functools.partial(_TANGO_BENCHMARKS[name], bed, config[name]))
                )
    if "dispatch" in selected:
        results.append(
            _one("dispatch", lambda: dispatch.run(config["dispatch"], baseline=args.baseline))
        )
    crashed = any(r.skipped and r.skipped.startswith("crashed") for r in results)
    results.sort(key=lambda r: ORDER.index(r.name))
    env["load_average_after"] = environment_summary()["load_average"]
    env["seconds"] = round(time.monotonic() - started, 1)
    report.write(out, results, env, config, plots=not args.no_plots)
    print(json.dumps({"seconds": env["seconds"], "out": str(out)}))
    for result in results:
        for row in result.rows:
            print(report.row_text(row))
        if result.skipped:
            print(f"{result.name}: SKIPPED: {result.skipped}")
    return 1 if crashed else 0


def _one(name: str, job: Callable[[], BenchResult]) -> BenchResult:
    print(f"== {name}", flush=True)
    started = time.monotonic()
    load_before = [round(x, 2) for x in os.getloadavg()]
    try:
        result = job()
    except Exception as exc:  # noqa: BLE001 - reported, the other benchmarks go on
        traceback.print_exc()
        result = BenchResult(name, name, skipped=f"crashed: {type(exc).__name__}: {exc}")
    result.seconds = time.monotonic() - started
    result.details["load_average"] = [load_before, [round(x, 2) for x in os.getloadavg()]]
    print(f"   {name}: {result.seconds:.1f} s", flush=True)
    return result


if __name__ == "__main__":
    sys.exit(main())
