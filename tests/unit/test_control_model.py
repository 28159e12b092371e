"""Unit tests for ska_tango_scheduler.control_model."""

from __future__ import annotations

import enum
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ska_tango_scheduler import control_model
from ska_tango_scheduler.control_model import (
    ACCEPTED_RESULT_CODES,
    TERMINAL_STATUSES,
    ResultCode,
    TaskStatus,
    is_terminal,
    parse_result_code,
    parse_task_status,
)

EXPECTED_RESULT_CODES = {
    "OK": 0,
    "STARTED": 1,
    "QUEUED": 2,
    "FAILED": 3,
    "UNKNOWN": 4,
    "REJECTED": 5,
    "NOT_ALLOWED": 6,
    "ABORTED": 7,
}

EXPECTED_TASK_STATUSES = {
    "STAGING": 0,
    "QUEUED": 1,
    "IN_PROGRESS": 2,
    "ABORTED": 3,
    "NOT_FOUND": 4,
    "COMPLETED": 5,
    "REJECTED": 6,
    "FAILED": 7,
}


def test_result_code_members_match_the_control_model() -> None:
    """ResultCode has exactly the SKA names and values."""
    assert issubclass(ResultCode, enum.IntEnum)
    assert {m.name: m.value for m in ResultCode} == EXPECTED_RESULT_CODES


def test_task_status_members_match_the_control_model() -> None:
    """TaskStatus has exactly the SKA names and values."""
    assert issubclass(TaskStatus, enum.IntEnum)
    assert {m.name: m.value for m in TaskStatus} == EXPECTED_TASK_STATUSES


def test_terminal_statuses() -> None:
    """Only ABORTED, COMPLETED, REJECTED and FAILED are terminal."""
    assert TERMINAL_STATUSES == {
        TaskStatus.ABORTED,
        TaskStatus.COMPLETED,
        TaskStatus.REJECTED,
        TaskStatus.FAILED,
    }
    for status in TaskStatus:
        assert is_terminal(status) is (status in TERMINAL_STATUSES)
        assert is_terminal(int(status)) is (status in TERMINAL_STATUSES)
        assert is_terminal(status.name) is (status in TERMINAL_STATUSES)


def test_accepted_result_codes() -> None:
    """A long running command is accepted when it replies QUEUED or STARTED."""
    assert ACCEPTED_RESULT_CODES == {ResultCode.QUEUED, ResultCode.STARTED}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (5, TaskStatus.COMPLETED),
        ("COMPLETED", TaskStatus.COMPLETED),
        ("in_progress", TaskStatus.IN_PROGRESS),
        (" QUEUED ", TaskStatus.QUEUED),
        ("0", TaskStatus.STAGING),
        (TaskStatus.FAILED, TaskStatus.FAILED),
    ],
)
def test_parse_task_status_accepts_values_and_names(
    raw: TaskStatus | int | str, expected: TaskStatus
) -> None:
    """Integers, names and decimal strings all parse."""
    parsed = parse_task_status(raw)
    assert parsed is expected
    assert type(parsed) is TaskStatus


@pytest.mark.parametrize("raw", [8, -1, "DONE", "", "5.0", True, None, 2.5j])
def test_parse_task_status_rejects_garbage(raw: object) -> None:
    """Anything else is a ValueError, never a silent default."""
    with pytest.raises(ValueError, match="TaskStatus"):
        parse_task_status(raw)  # type: ignore[arg-type]


def test_parse_result_code() -> None:
    """ResultCode parsing mirrors TaskStatus parsing."""
    assert parse_result_code(2) is ResultCode.QUEUED
    assert parse_result_code("not_allowed") is ResultCode.NOT_ALLOWED
    assert parse_result_code("7") is ResultCode.ABORTED
    with pytest.raises(ValueError, match="ResultCode"):
        parse_result_code(99)
    with pytest.raises(ValueError, match="ResultCode"):
        parse_result_code("NOPE")


def _run_probe(tmp_path: Path, fake_module: str | None) -> dict[str, object]:
    """Import control_model in a fresh interpreter and report what it picked."""
    if fake_module is not None:
        (tmp_path / "ska_control_model.py").write_text(fake_module)
    probe = (
        "import json\n"
        "from ska_tango_scheduler import control_model as cm\n"
        "print(json.dumps({'using': cm.USING_SKA_CONTROL_MODEL,\n"
        "    'rc_module': cm.ResultCode.__module__, 'ts_module': cm.TaskStatus.__module__,\n"
        "    'terminal': sorted(int(s) for s in cm.TERMINAL_STATUSES)}))\n"
    )
    env = dict(os.environ)
    package_root = str(Path(control_model.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tmp_path), package_root, *filter(None, [env.get("PYTHONPATH")])]
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


FAKE_CONTROL_MODEL = """
import enum

class ResultCode(enum.IntEnum):
    OK = 0
    STARTED = 1
    QUEUED = 2

class TaskStatus(enum.IntEnum):
    ABORTED = 3
    COMPLETED = 5
    REJECTED = 6
    FAILED = 7
"""


def test_uses_ska_control_model_when_importable(tmp_path: Path) -> None:
    """With ska_control_model importable, its classes are the ones exported."""
    picked = _run_probe(tmp_path, FAKE_CONTROL_MODEL)
    assert picked == {
        "using": True,
        "rc_module": "ska_control_model",
        "ts_module": "ska_control_model",
        "terminal": [3, 5, 6, 7],
    }


def test_fallback_when_ska_control_model_is_missing(tmp_path: Path) -> None:
    """Without ska_control_model the package's own classes are used."""
    picked = _run_probe(tmp_path, None)
    if control_model.USING_SKA_CONTROL_MODEL:
        pytest.skip("ska_control_model is installed in this environment")
    assert picked == {
        "using": False,
        "rc_module": "ska_tango_scheduler.control_model",
        "ts_module": "ska_tango_scheduler.control_model",
        "terminal": [3, 5, 6, 7],
    }
