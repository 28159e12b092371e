"""The Helm chart deploys real servers: its names, classes and commands match the package.

``helm`` is not available here, so the chart is checked from the Python side:
every server a data file describes must be started by its ``command`` (a
console script of this package) under the same server name, with the classes,
device properties and entry points the file names.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from pathlib import Path
from typing import Any

import pytest
import tango
import tango.server
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "ska-tango-scheduler"
DISTRIBUTION = "ska-tango-scheduler"
UTIL_TEMPLATES = (
    "ska-tango-util.multidevice-config.tpl",
    "ska-tango-util.multidevice-sacc-role.tpl",
    "ska-tango-util.multidevice-job.tpl",
    "ska-tango-util.multidevice-svc.tpl",
)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


VALUES = load(CHART / "values.yaml")
DATA_FILES = sorted(entry["file"] for entry in VALUES["deviceServers"].values())


def console_scripts() -> dict[str, importlib.metadata.EntryPoint]:
    entry_points = importlib.metadata.distribution(DISTRIBUTION).entry_points
    return {ep.name: ep for ep in entry_points if ep.group == "console_scripts"}


def test_chart_metadata_follows_the_package() -> None:
    chart = load(CHART / "Chart.yaml")
    version = importlib.metadata.version(DISTRIBUTION)
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "ska-tango-scheduler"
    assert chart["version"] == chart["appVersion"] == version
    dependencies = {d["name"]: d for d in chart["dependencies"]}
    assert set(dependencies) == {"ska-tango-util", "ska-tango-base"}
    for dependency in dependencies.values():
        assert re.fullmatch(r"\d+\.\d+\.\d+", dependency["version"])
        assert dependency["repository"].startswith("https://")
    assert dependencies["ska-tango-base"]["condition"] == "ska-tango-base.enabled"
    assert isinstance(VALUES["ska-tango-base"]["enabled"], bool)


def test_values_name_existing_data_files_and_images() -> None:
    assert VALUES["deviceServers"], "no device servers"
    for key, entry in VALUES["deviceServers"].items():
        assert re.fullmatch(r"[a-z0-9-]+", key), key  # becomes part of k8s names
        assert isinstance(entry["enabled"], bool)
        assert (CHART / entry["file"]).is_file(), entry["file"]
    image = VALUES["image"]
    assert image["image"] == DISTRIBUTION
    assert str(image["tag"]) == importlib.metadata.version(DISTRIBUTION)
    dsconfig = VALUES["global"]["dsconfig"]["image"]
    assert {"registry", "image", "tag", "pullPolicy"} <= set(dsconfig)


def test_template_uses_the_ska_tango_util_templates() -> None:
    text = (CHART / "templates" / "deviceservers.yaml").read_text()
    for name in UTIL_TEMPLATES:
        assert f'{{{{ template "{name}" $context }}}}' in text
    assert ".Values.deviceServers" in text
    actions = re.findall(r"{{-?\s*(\w+)", text)
    opened = sum(1 for a in actions if a in ("if", "range", "with", "define"))
    assert opened == actions.count("end"), "unbalanced template blocks"
    assert text.count("{{") == text.count("}}")


@pytest.fixture(params=DATA_FILES)
def server(request: pytest.FixtureRequest) -> dict[str, Any]:
    data = load(CHART / request.param)
    assert isinstance(data, dict)
    return data


def test_data_file_is_complete(server: dict[str, Any]) -> None:
    for key in ("name", "function", "domain", "command", "instances", "depends_on", "server"):
        assert server.get(key), f"{key} missing"
    declared = [i["name"] for i in server["server"]["instances"]]
    assert set(server["instances"]) <= set(declared)
    assert {"device": "sys/database/2"} in server["depends_on"]
    for instance in server["server"]["instances"]:
        for device_class in instance["classes"]:
            for device in device_class["devices"]:
                assert re.fullmatch(r"[\w-]+/[\w-]+/[\w-]+", device["name"]), device["name"]


def all_devices() -> set[str]:
    names = set()
    for path in DATA_FILES:
        for instance in load(CHART / path)["server"]["instances"]:
            for device_class in instance["classes"]:
                names.update(d["name"] for d in device_class["devices"])
    return names


def test_device_names_are_unique_and_dependencies_exist() -> None:
    seen: list[str] = []
    for path in DATA_FILES:
        data = load(CHART / path)
        for instance in data["server"]["instances"]:
            for device_class in instance["classes"]:
                seen += [d["name"] for d in device_class["devices"]]
        for dependency in data["depends_on"]:
            device = dependency.get("device")
            assert device is None or device == "sys/database/2" or device in all_devices()
    assert len(seen) == len(set(seen))
    # Every device a property points at is deployed by the chart too.
    deployed = set(seen)
    for path in DATA_FILES:
        for instance in load(CHART / path)["server"]["instances"]:
            for device_class in instance["classes"]:
                for device in device_class["devices"]:
                    for prop in device.get("properties", []):
                        if prop["name"] == "SourceDevice":
                            assert set(prop["values"]) <= deployed


def test_command_runs_the_server_the_file_describes(
    server: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    scripts = console_scripts()
    assert server["command"] in scripts, f"{server['command']} is not a console script"
    entry_point = scripts[server["command"]]
    main = entry_point.load()
    module = importlib.import_module(entry_point.module)

    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def fake_run(classes: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(((classes, *args), kwargs))

    monkeypatch.setattr(tango.server, "run", fake_run)
    if hasattr(module, "run"):
        monkeypatch.setattr(module, "run", fake_run)
    instance = server["instances"][0]
    main([instance, "-ORBendPoint", "giop:tcp::45450"])

    assert len(calls) == 1
    (classes, *_), kwargs = calls[0]
    argv = kwargs["args"]
    assert argv[:2] == [server["server"]["name"], instance]
    served = {cls.__name__: cls for cls in classes}
    for declared in server["server"]["instances"]:
        for device_class in declared["classes"]:
            cls = served.get(device_class["name"])
            assert cls is not None, f"{device_class['name']} is not served by {server['command']}"
            assert issubclass(cls, tango.server.Device)
            for device in device_class["devices"]:
                for prop in device.get("properties", []):
                    assert isinstance(
                        getattr(cls, prop["name"], None), tango.server.device_property
                    ), f"{cls.__name__} has no device property {prop['name']}"
    # The ska-tango-util alternative to `command`: a generated script importing these.
    for entry in server.get("entrypoints", []):
        module_name, _, class_name = entry["name"].rpartition(".")
        cls = getattr(importlib.import_module(module_name), class_name)
        assert cls in classes
    # The same server runs with `python -m MODULE INSTANCE`.
    source = Path(module.__file__ or "").read_text()
    assert 'if __name__ == "__main__":' in source
