"""The package face and its public submodules tell one story about the public names.

Each public submodule's ``__all__`` holds what the package root exports from it,
plus second-tier names, which its module docstring and the API reference
(``docs/reference/api.rst``) must both name.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import ska_tango_scheduler

SUBMODULES = (
    "ska_tango_scheduler.scheduler",
    "ska_tango_scheduler.diagnostics",
    "ska_tango_scheduler.long_running_commands",
    "ska_tango_scheduler.mixin",
    "ska_tango_scheduler.control_model",
    "ska_tango_scheduler.type_hints",
)
_API_RST = Path(__file__).parents[2] / "docs" / "reference" / "api.rst"


def _names(name: str, text: str) -> bool:
    """Tell whether ``text`` names ``name`` (as a whole word)."""
    return re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", text) is not None


def _from_root(module: object) -> set[str]:
    """Names of the root's ``__all__`` that are the module's own objects."""
    return {
        name
        for name in ska_tango_scheduler.__all__
        if hasattr(module, name) and getattr(ska_tango_scheduler, name) is getattr(module, name)
    }


@pytest.mark.parametrize("name", SUBMODULES)
def test_second_tier_names_are_documented(name: str) -> None:
    """A name of a submodule's ``__all__`` that the root does not export is documented."""
    module = importlib.import_module(name)
    second_tier = sorted(set(module.__all__) - _from_root(module))
    reference = _API_RST.read_text()
    undocumented = [n for n in second_tier if not _names(n, module.__doc__ or "")]
    assert not undocumented, f"second-tier names missing from the docstring of {name}"
    unlisted = [n for n in second_tier if not _names(n, reference)]
    assert not unlisted, f"second-tier names of {name} missing from docs/reference/api.rst"


def test_the_root_all_has_no_duplicates() -> None:
    """The grouped ``__all__`` lists every name once."""
    assert len(ska_tango_scheduler.__all__) == len(set(ska_tango_scheduler.__all__))
