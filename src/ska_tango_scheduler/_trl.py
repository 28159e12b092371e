"""Device names: parse Tango Resource Locators and give each device one key.

Part of the pure core: no :mod:`tango` import. A device named by a
``DeviceProxy`` and by a TRL string must land on the same key, so keys use
lower-case names and the database host and port the name resolves through.
Hosts that name this machine (``localhost``, any loopback address, this
machine's host name and its addresses) compare equal, so one database named
three ways is one key.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from dataclasses import dataclass, field

__all__ = ["DeviceKey", "canonical_host", "parse_device_trl", "split_tango_host"]


@functools.lru_cache(maxsize=1)
def _own_names() -> frozenset[str]:
    names = {"localhost"}
    try:
        hostname = socket.gethostname().lower()
        names.update({hostname, hostname.split(".")[0]})
        full, aliases, addresses = socket.gethostbyname_ex(hostname)
        names.update(n.lower() for n in (full, *aliases, *addresses))
    except OSError:
        pass
    return frozenset(names)


@functools.lru_cache(maxsize=256)
def canonical_host(host: str) -> str:
    """Return one spelling for every name of this machine, else the host in lower case.

    No name service is asked beyond this machine's own name (once), so the
    call never waits on DNS for other hosts.

    Args:
        host: A host name or address.

    Returns:
        ``"localhost"`` for loopback addresses and this machine's names and
        addresses; otherwise the lower-case host (an IP address normalised).
    """
    name = host.strip().lower().rstrip(".")
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        address = None
    if address is not None:
        if address.is_loopback or str(address) in _own_names():
            return "localhost"
        return str(address)
    if name in _own_names() or name.startswith("localhost."):
        return "localhost"
    return name


_TRL = re.compile(
    r"""^(?:(?:tango:)?//(?P<host>[^/:]+):(?P<port>\d+)/)?
        (?P<name>[^/\s#]+/[^/\s#]+/[^/\s#]+)
        (?P<nodb>\#dbase=no)?$""",
    re.IGNORECASE | re.VERBOSE,
)


# A TRL whose host is an IPv6 literal: tango://[::1]:10000/a/b/c.
_IPV6_TRL = re.compile(r"^(?:tango:)?//\[", re.IGNORECASE)


def _ipv6_refused(where: str) -> str:
    """Say that IPv6 Tango hosts are not supported, and what to do instead."""
    return (
        f"{where!r}: IPv6 addresses are not supported as Tango hosts (cppTango cannot "
        "parse them, in a TRL or in TANGO_HOST); name the host by a host name, or "
        "use its IPv4 address"
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
        site: :func:`canonical_host` of ``host``; keys compare on it, not on
            ``host``, so the first spelling seen is the one shown.
    """

    host: str = field(compare=False)
    port: int | None
    name: str
    dbase: bool = True
    site: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        """Compute the host's canonical spelling, which keys compare on."""
        object.__setattr__(self, "site", canonical_host(self.host) if self.host else "")

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
    each optionally ending in ``#dbase=no``. The host is a host name or an
    IPv4 address: cppTango (9.5 and 10.3) cannot parse an IPv6 address
    (``tango://[::1]:10000/...``, ``TANGO_HOST=[::1]:10000``), so such a
    host is refused with a message saying so.

    Args:
        text: The TRL.
        default_tango_host: TANGO_HOST used for names without a host.

    Returns:
        The device key.

    Raises:
        TypeError: If ``text`` is not a string.
        ValueError: If ``text`` is not a device TRL (an attribute TRL with
            four parts, for instance, or a name with non-ASCII characters),
            or its host (or that of ``default_tango_host``) is an IPv6
            address.
    """
    if not isinstance(text, str):
        raise TypeError(f"a device must be a tango.DeviceProxy or a TRL string, got {text!r}")
    if not text.isascii():
        raise ValueError(f"{text!r} is not a device TRL: Tango names are ASCII")
    stripped = text.strip()
    if _IPV6_TRL.match(stripped):
        raise ValueError(_ipv6_refused(text))
    match = _TRL.match(stripped)
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
        if ":" in host or host.startswith("["):
            raise ValueError(_ipv6_refused(f"TANGO_HOST={default_tango_host}"))
    return DeviceKey(host, port, match.group("name").lower(), dbase)
