"""The exceptions of the LRC client, and the ``DevError`` values it makes.

Every ``DevError`` is built by :func:`ska_tango_scheduler._tango_errors.dev_error`,
with this client's origin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import tango

from .. import _tango_errors

INVOKE_FAILED_REASON = "SKA_InvokeLrcFailed"
EVENTS_DROPPED_REASON = "SKA_LrcEventsDropped"
OUTCOME_LOST_REASON = "SKA_LrcOutcomeLost"
SUBSCRIPTION_TIMEOUT_REASON = "SKA_LrcSubscriptionTimeout"
SUBSCRIPTION_FAILED_REASON = "SKA_LrcSubscriptionFailed"
ORIGIN = "ska_tango_scheduler.long_running_commands"


def lrc_error(reason: str, desc: str) -> tango.DevError:
    """Make a ``DevError`` of the LRC client.

    Args:
        reason: The error's reason.
        desc: What went wrong.

    Returns:
        The error, with this client's origin.
    """
    return _tango_errors.dev_error(reason, desc, ORIGIN)


def dropped_update(desc: str) -> dict[str, Any]:
    """Make the callback call telling that updates may have been lost.

    Args:
        desc: What was lost, and why.

    Returns:
        The keyword arguments of the call: ``error=`` with reason ``EVENTS_DROPPED_REASON``.
    """
    return {"error": (lrc_error(EVENTS_DROPPED_REASON, desc),)}


def invoke_failed(exc: tango.DevFailed, desc: str) -> tango.DevFailed:
    """Make a ``DevFailed`` with the errors of ``exc`` and ``INVOKE_FAILED_REASON`` last.

    Args:
        exc: What failed.
        desc: What the client was doing.

    Returns:
        The exception to raise.
    """
    errors = [e for e in exc.args if isinstance(e, tango.DevError)]
    if not errors:
        errors = [lrc_error("PyAPI_Error", str(exc))]
    errors.append(lrc_error(INVOKE_FAILED_REASON, desc))
    return tango.DevFailed(*errors)


def _ska_tango_base_faults() -> tuple[type[Exception], type[Exception]]:
    """ska-tango-base's ``CommandError`` and ``ResultCodeError``, when it is importable."""
    try:
        from ska_tango_base import faults  # type: ignore[import-not-found,unused-ignore]
    except Exception:  # noqa: BLE001 - not installed, or broken: use the plain bases
        return RuntimeError, ValueError
    return faults.CommandError, faults.ResultCodeError


if TYPE_CHECKING:
    _CommandErrorBase = RuntimeError
    _ResultCodeErrorBase = ValueError
else:
    _CommandErrorBase, _ResultCodeErrorBase = _ska_tango_base_faults()


class CommandError(_CommandErrorBase):
    """The device rejected the long running command (reply ``ResultCode.REJECTED``).

    A :class:`RuntimeError`. When ska-tango-base is importable it is also an instance of
    ``ska_tango_base.faults.CommandError``, so ``except`` clauses written for
    ska-tango-base's ``invoke_lrc`` catch it.
    """


class ResultCodeError(_ResultCodeErrorBase):
    """The device replied with a result code other than QUEUED, STARTED or REJECTED.

    A :class:`ValueError`. When ska-tango-base is importable it is also an instance of
    ``ska_tango_base.faults.ResultCodeError``.
    """


class NoCommonProtocolVersionError(RuntimeError):
    """The device and this client share no LRC protocol version.

    Attributes:
        device: Name of the device.
        client_versions: ``(min, max)`` versions this client speaks.
        server_versions: ``(min, max)`` versions the device advertises (empty if it
            advertised nothing usable).
    """

    def __init__(
        self,
        device: str,
        client_versions: tuple[int, int],
        server_versions: tuple[int, ...],
    ) -> None:
        """Create the error.

        Args:
            device: Name of the device.
            client_versions: ``(min, max)`` versions this client speaks.
            server_versions: What the device's ``lrcProtocolVersions`` holds.
        """
        self.device = device
        self.client_versions = client_versions
        self.server_versions = server_versions
        if server_versions:
            served = f"versions {server_versions[0]} to {server_versions[-1]}"
        else:
            served = "no usable version range"
        super().__init__(
            f"{device} serves LRC protocol {served}, but this client speaks versions "
            f"{client_versions[0]} to {client_versions[1]}: there is no common version"
        )
