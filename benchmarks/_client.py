"""A benchmark client process: ``python -m benchmarks._client SCENARIO SIDE PARAMS OUT``.

Runs ``benchmarks.<SCENARIO>.client(side, params)`` and writes what it
returns as JSON to ``OUT``. The orchestrator (:mod:`benchmarks.run`) starts
one such process per side, so that each side has a fresh Tango event system.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

from benchmarks import package_origin


def main(argv: list[str]) -> int:
    """Run one client.

    Args:
        argv: ``[scenario, side, params_path, out_path]``.

    Returns:
        The exit status.
    """
    scenario, side, params_path, out_path = argv
    module = importlib.import_module(f"benchmarks.{scenario}")
    params = json.loads(Path(params_path).read_text(encoding="utf-8"))
    result = module.client(side, params)
    import ska_tango_scheduler

    result["package"] = package_origin(Path(ska_tango_scheduler.__file__).parent)
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    tmp = Path(out_path + ".tmp")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    tmp.replace(out_path)
    return 0


if __name__ == "__main__":
    status = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter clean-up: Tango's exit handlers can wait on a client
    # that is still receiving events, and nothing is left to save.
    os._exit(status)
