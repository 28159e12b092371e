"""Device TRL parsing and device keys."""

from __future__ import annotations

import pytest

from ska_tango_scheduler._trl import DeviceKey, parse_device_trl, split_tango_host


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("foo/bar/1", DeviceKey("db", 10000, "foo/bar/1")),
        ("Foo/BAR/1", DeviceKey("db", 10000, "foo/bar/1")),
        ("tango://Host:123/foo/bar/1", DeviceKey("host", 123, "foo/bar/1")),
        ("//host:123/foo/bar/1", DeviceKey("host", 123, "foo/bar/1")),
        ("tango://h:1/a/b/c#dbase=no", DeviceKey("h", 1, "a/b/c", dbase=False)),
    ],
)
def test_parse(text: str, expected: DeviceKey) -> None:
    assert parse_device_trl(text, "DB:10000") == expected


def test_same_device_same_key() -> None:
    a = parse_device_trl("foo/bar/1", "127.0.0.1:1234")
    b = parse_device_trl("tango://127.0.0.1:1234/FOO/bar/1", None)
    assert a == b
    assert a.trl == "tango://127.0.0.1:1234/foo/bar/1"
    assert a.attribute_trl("myAttr") == "tango://127.0.0.1:1234/foo/bar/1/myAttr"


def test_nodb_trl() -> None:
    key = parse_device_trl("tango://h:1/a/b/c#dbase=no", None)
    assert key.trl == "tango://h:1/a/b/c#dbase=no"
    assert key.attribute_trl("x") == "tango://h:1/a/b/c/x#dbase=no"


def test_without_tango_host() -> None:
    key = parse_device_trl("a/b/c", None)
    assert key == DeviceKey("", None, "a/b/c") and key.trl == "a/b/c"


@pytest.mark.parametrize("text", ["", "a/b", "a/b/c/attr", "tango://h/a/b/c", "a b/c/d", "a//c"])
def test_malformed_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a device TRL"):
        parse_device_trl(text, "h:1")


def test_non_string_is_refused() -> None:
    with pytest.raises(TypeError, match="DeviceProxy or a TRL"):
        parse_device_trl(42, "h:1")  # type: ignore[arg-type]


def test_split_tango_host() -> None:
    assert split_tango_host("A:1,b:2") == ("a", 1)
    assert split_tango_host("host") == ("host", 10000)
    assert split_tango_host(None) == ("", None)


def test_names_of_this_machine_are_one_host() -> None:
    import socket

    from ska_tango_scheduler._trl import canonical_host, parse_device_trl

    keys = {
        parse_device_trl(f"tango://{host}:10000/a/b/c", None)
        for host in ("localhost", "127.0.0.1", "LOCALHOST", socket.gethostname(), "127.0.1.1")
    }
    assert len(keys) == 1
    assert canonical_host("10.1.2.3") == "10.1.2.3"
    assert parse_device_trl("tango://Other.Host:10000/a/b/c", None) != parse_device_trl(
        "tango://localhost:10000/a/b/c", None
    )
    # The spelling given first is the one shown.
    assert parse_device_trl("tango://127.0.0.1:10000/a/b/c", None).trl.startswith(
        "tango://127.0.0.1:"
    )


def test_non_ascii_names_are_refused_as_given() -> None:
    import pytest

    from ska_tango_scheduler._trl import parse_device_trl

    with pytest.raises(ValueError, match="tést/dévice/ü"):
        parse_device_trl("tést/dévice/ü", "h:1")


@pytest.mark.parametrize(
    "text",
    ["tango://[::1]:10000/a/b/c", "//[fe80::1]:10000/a/b/c", "TANGO://[::1]:1/a/b/c#dbase=no"],
)
def test_ipv6_hosts_are_refused_saying_so(text: str) -> None:
    with pytest.raises(ValueError, match="IPv6 addresses are not supported as Tango hosts"):
        parse_device_trl(text, "h:1")


@pytest.mark.parametrize("tango_host", ["[::1]:10000", "::1:10000"])
def test_an_ipv6_tango_host_is_refused_saying_so(tango_host: str) -> None:
    with pytest.raises(ValueError, match="TANGO_HOST=.*IPv6 addresses are not supported"):
        parse_device_trl("a/b/c", tango_host)
    # A full TRL does not need TANGO_HOST.
    assert parse_device_trl("tango://h:1/a/b/c", tango_host).site == "h"
