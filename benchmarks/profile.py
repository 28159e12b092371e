"""Profile the event hot path: ``python -m benchmarks.profile [--out DIR] [--count N]``.

Runs the throughput client (a burst of ``N`` events from each of
``--servers`` servers to a counting callback) under ``py-spy`` (the
``bench`` extra), once for plain PyTango and once through the scheduler
(and once through another revision with ``--baseline SRC``), and writes a
flame graph per side (SVG) and the raw collapsed stacks, with a per-thread
summary of where the samples fell.
``py-spy`` needs the right to trace its child (root, or
``kernel.yama.ptrace_scope=0``).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
from pathlib import Path

from ._bed import Bed

__all__ = ["main", "summarise"]

_REPO_ROOT = Path(__file__).resolve().parent.parent


def summarise(collapsed: Path, top: int = 12) -> str:
    """Summarise py-spy's collapsed stacks: samples per thread and hottest leaf frames.

    Args:
        collapsed: A file written by ``py-spy record --format raw``.
        top: How many frames to list per thread.

    Returns:
        The text.
    """
    threads: collections.Counter[str] = collections.Counter()
    leaves: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in collapsed.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        parts = stack.split(";")
        threads[parts[0]] += int(count)
        leaves[parts[0]][parts[-1]] += int(count)
    total = sum(threads.values()) or 1
    lines = []
    for thread, samples in threads.most_common():
        if samples < 0.05 * total:
            continue
        lines.append(f"{thread}: {samples} samples ({100.0 * samples / total:.0f}%), self time:")
        for frame, hits in leaves[thread].most_common(top):
            lines.append(f"  {100.0 * hits / samples:5.1f}%  {frame}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Profile both sides and write the flame graphs.

    Args:
        argv: Command line arguments (None: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("--out", type=Path, default=_REPO_ROOT / "build" / "bench-profile")
    parser.add_argument("--count", type=int, default=20_000, help="events per server")
    parser.add_argument("--servers", type=int, default=3, help="source servers")
    parser.add_argument("--baseline", type=Path, default=None, help="src of another revision")
    parser.add_argument("--rate", type=int, default=400, help="samples per second")
    parser.add_argument(
        "--native", action="store_true", help="include C/C++ frames (slows the client down)"
    )
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy is not installed: pip install -e .[bench]", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    sides = ["plain", "scheduler"] + (["scheduler@base"] if args.baseline else [])
    with Bed(baseline=args.baseline) as bed:
        trls = [devices[0] for devices in bed.farm(args.servers)]
        for side in sides:
            stem = side.replace("@", "-")
            for fmt, suffix in (("flamegraph", "svg"), ("raw", "txt")):
                target = args.out / f"{stem}.{suffix}"
                prefix = (
                    *(spy, "record", "--threads", "--rate", str(args.rate)),
                    *(("--native",) if args.native else ()),
                    *("--format", fmt, "--output", str(target), "--"),
                )
                params = {"trls": trls, "mode": "burst", "count": args.count}
                result = bed.spawn("throughput", side, params, prefix=prefix).wait(300)
                print(
                    f"{side} ({fmt}): {result['received']} of {result['pushed']} events, "
                    f"{result['rate']:.0f}/s, {result['cpu_us_per_event']:.1f} µs CPU/event"
                )
            print(summarise(args.out / f"{stem}.txt"))
    print(f"flame graphs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
