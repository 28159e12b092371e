"""The public API: every public module keeps its names, and every public class its members.

``public_api.json`` beside this file was written from the package before its
modules were split (one concept per module); the split must keep every
import path a user may have written. Regenerate it only for an intended
change of the public API (``python tests/unit/test_public_api.py > tests/unit/public_api.json``)
and say so in the changelog.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

MODULES = (
    "ska_tango_scheduler",
    "ska_tango_scheduler.scheduler",
    "ska_tango_scheduler.long_running_commands",
    "ska_tango_scheduler.mixin",
    "ska_tango_scheduler.diagnostics",
    "ska_tango_scheduler.control_model",
    "ska_tango_scheduler.type_hints",
    "ska_tango_scheduler.top",
    "ska_tango_scheduler.testing",
    "ska_tango_scheduler.demo",
)
_SNAPSHOT = Path(__file__).with_name("public_api.json")
_PLAIN = (int, float, str, bytes, tuple, frozenset, dict, bool, type(None))


def _ours(obj: Any) -> bool:
    """Tell whether a module attribute belongs to the package's API (not an import)."""
    if isinstance(obj, types.ModuleType):
        return obj.__name__.startswith("ska_tango_scheduler")
    if isinstance(obj, _PLAIN):
        return True
    origin = getattr(obj, "__module__", None)
    return not isinstance(origin, str) or origin.startswith("ska_tango_scheduler")


def _members(cls: type) -> list[str]:
    return sorted(name for name in dir(cls) if not name.startswith("_"))


def public_api() -> dict[str, dict[str, Any]]:
    """Return, per public module, its public names and the members of its public classes."""
    api: dict[str, dict[str, Any]] = {}
    for name in MODULES:
        module = importlib.import_module(name)
        exported = set(getattr(module, "__all__", ()))
        # A submodule shows up as an attribute once anything imported it: it
        # counts only when the module exports it.
        names = sorted(
            attr
            for attr in dir(module)
            if not attr.startswith("_")
            and _ours(getattr(module, attr))
            and (attr in exported or not isinstance(getattr(module, attr), types.ModuleType))
        )
        classes = {
            attr: _members(getattr(module, attr))
            for attr in names
            if inspect.isclass(getattr(module, attr))
        }
        api[name] = {
            "names": names,
            "all": sorted(getattr(module, "__all__", ())),
            "classes": classes,
        }
    return api


@pytest.mark.parametrize("module", MODULES)
def test_public_module_keeps_its_names(module: str) -> None:
    """Names, ``__all__`` and class members are those of the snapshot."""
    expected = json.loads(_SNAPSHOT.read_text())[module]
    actual = public_api()[module]
    assert sorted(set(expected["names"]) - set(actual["names"])) == [], "public names lost"
    assert sorted(set(actual["names"]) - set(expected["names"])) == [], "public names added"
    assert actual["all"] == expected["all"], "__all__ changed"
    for cls, members in expected["classes"].items():
        assert actual["classes"].get(cls) == members, f"members of {module}.{cls} changed"


if __name__ == "__main__":
    json.dump(public_api(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
