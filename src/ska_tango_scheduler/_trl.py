"""Device names: parse Tango Resource Locators and give each device one key.

Part of the pure core: no :mod:`tango` import. A device named by a
``DeviceProxy`` and by a TRL string must land on the same key, so keys use
lower-case names and the database host and port the name resolves through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DeviceKey", "parse_device_trl", "split_tango_host"]

_TRL = re.compile(
    r"""^(?:(?:tango:)?//(?P<host>[^/:]+):(?P<port>\d+)/)?
        (?P<name>[^/\s#]+/[^/\s#]+/[^/\s#]+)
        (?P<nodb>\#dbase=no)?$""",
    re.IGNORECASE | re.VERBOSE,
)


@dataclass(frozen=True)
class DeviceKey:
    """Identity of a device, independent of how it was named.

    Attributes:
        host: Host of the Tango database (or of the device server when
            ``dbase`` is False), lower case; empty if unknown.
        port: Its port, or None if unknown.
        name: ``domain/family/member`` in lower case.
        dbase: False for a device reached without a database (``#dbase=no``).
    """

    host: str
    port: int | None
    name: str
    dbase: bool = True

    @property
    def trl(self) -> str:
        """The fully qualified TRL of the device."""
        suffix = "" if self.dbase else "#dbase=no"
        if self.host and self.port is not None:
            return f"tango://{self.host}:{self.port}/{self.name}{suffix}"
        return f"{self.name}{suffix}"

    def attribute_trl(self, attribute: str) -> str:
        """The fully qualified TRL of one of the device's attributes.

        Args:
            attribute: Attribute name.

        Returns:
            The attribute's TRL.
        """
        suffix = "" if self.dbase else "#dbase=no"
        base = self.trl.removesuffix(suffix)
        return f"{base}/{attribute}{suffix}"


def split_tango_host(tango_host: str | None) -> tuple[str, int | None]:
    """Return the first ``(host, port)`` of a TANGO_HOST value.

    Args:
        tango_host: A value like ``"host:10000"`` or ``"h1:10000,h2:10000"``.

    Returns:
        Lower-case host and port, or ``("", None)`` if there is none.
    """
    if not tango_host:
        return "", None
    first = tango_host.split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    if not sep or not port.isdigit():
        return first.lower(), 10000
    return host.lower(), int(port)


def parse_device_trl(text: str, default_tango_host: str | None) -> DeviceKey:
    """Parse a device TRL into a :class:`DeviceKey`.

    Accepted forms: ``"domain/family/member"``,
    ``"tango://host:port/domain/family/member"`` (also without ``tango:``),
    each optionally ending in ``#dbase=no``.

    Args:
        text: The TRL.
        default_tango_host: TANGO_HOST used for names without a host.

    Returns:
        The device key.

    Raises:
        TypeError: If ``text`` is not a string.
        ValueError: If ``text`` is not a device TRL (an attribute TRL with
            four parts, for instance).
    """
    if not isinstance(text, str):
        raise TypeError(f"a device must be a tango.DeviceProxy or a TRL string, got {text!r}")
    match = _TRL.match(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a device TRL: expected 'domain/family/member' or "
            "'tango://host:port/domain/family/member'"
        )
    dbase = match.group("nodb") is None
    port: int | None
    if match.group("host"):
        host, port = match.group("host").lower(), int(match.group("port"))
    else:
        host, port = split_tango_host(default_tango_host)
    return DeviceKey(host, port, match.group("name").lower(), dbase)
