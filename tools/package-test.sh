#!/usr/bin/env bash
# Build the sdist and the wheel, then install each into a fresh virtual environment
# (created by $PYTHON, without the project's own venv on the path) and check that the
# package imports, reports the version of pyproject.toml, and that its commands run.
#
#   tools/package-test.sh [BUILD_PYTHON]
#
# BUILD_PYTHON runs `python -m build` (default: .venv/bin/python); PYTHON creates the
# test environment (default: python3); PYTANGO pins the PyTango installed next to the
# wheel (default: any version the package accepts).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_python=${1:-.venv/bin/python}
python=${PYTHON:-python3}
pytango=${PYTANGO:+pytango==${PYTANGO}}
start=$SECONDS

work=$(mktemp -d "${TMPDIR:-/tmp}/ska-tango-scheduler-package-XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "-- building into $work/dist"
"$build_python" -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 || {
    cat "$work/build.log"
    exit 1
}
wheel=$(ls "$work"/dist/*.whl)
sdist=$(ls "$work"/dist/*.tar.gz)
echo "   $(basename "$wheel")"
echo "   $(basename "$sdist")"

expected=$("$build_python" - <<'PY'
import re
from pathlib import Path

print(re.search(r'^version = "([^"]+)"', Path("pyproject.toml").read_text(), re.M).group(1))
PY
)

# What each archive must hold.
"$build_python" - "$wheel" "$sdist" "$expected" <<'PY'
import sys
import tarfile
import zipfile

wheel, sdist, version = sys.argv[1:]
names = zipfile.ZipFile(wheel).namelist()
base = f"ska_tango_scheduler-{version}"
for needed in (
    "ska_tango_scheduler/py.typed",
    "ska_tango_scheduler/demo/__main__.py",
    "ska_tango_scheduler/testing/event_source.py",
    f"{base}.dist-info/licenses/LICENSE",
    f"{base}.dist-info/entry_points.txt",
):
    assert needed in names, f"{needed} missing from the wheel"
members = tarfile.open(sdist).getnames()
for needed in ("LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml",
               "src/ska_tango_scheduler/__init__.py"):
    assert f"{base}/{needed}" in members, f"{needed} missing from the sdist"
print("-- archive contents: ok")
PY

echo "-- fresh virtual environment with $("$python" --version)"
"$python" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip --disable-pip-version-check --quiet)

check() {
    # Run from an empty directory so that the source tree cannot be imported by mistake.
    (cd "$work" && "$work/venv/bin/python" - "$expected" <<'PY'
import sys

import ska_tango_scheduler as pkg
from ska_tango_scheduler import CallbackScheduler
from ska_tango_scheduler.demo import main

assert pkg.__version__ == sys.argv[1], (pkg.__version__, sys.argv[1])
assert "site-packages" in pkg.__file__, pkg.__file__
with CallbackScheduler(name="package-test") as scheduler:
    assert scheduler.diagnostics().running
print(f"   imported {pkg.__name__} {pkg.__version__} from {pkg.__file__}")
PY
    )
    "$work/venv/bin/ska-tango-scheduler-demo" --version
}

echo "-- installing the wheel (with its dependencies)"
"${pip[@]}" install "$wheel" ${pytango:+"$pytango"}
check

echo "-- installing the sdist over it (built from source, no dependencies)"
"${pip[@]}" install --force-reinstall --no-deps "$sdist"
check

echo "-- package test passed in $((SECONDS - start)) s"
