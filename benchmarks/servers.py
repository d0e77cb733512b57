"""Servers under test as real processes: started (optionally pinned to CPUs with ``taskset``),
waited for until ready, observed from outside (resident memory, CPU time per thread), stopped."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

#: Clock ticks per second, the unit of CPU times in /proc/<pid>/stat.
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server; ``{port}`` in ``argv`` or ``env`` values is filled in."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    ready_path: str = "/healthz"
    predict_path: str = "/predict"
    metrics_path: str | None = None
    start_timeout_s: float = 120.0


@dataclass(frozen=True)
class ThreadCpu:
    """CPU seconds one thread of the server used; ``main`` is the event loop's thread."""

    tid: int
    name: str
    seconds: float
    main: bool


class RunningServer:
    """A started server process (and its children, for servers that fork workers)."""

    def __init__(self, spec: ServerSpec, process: subprocess.Popen[bytes], port: int) -> None:
        self.spec = spec
        self.process = process
        self.port = port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def predict_url(self) -> str:
        return self.base_url + self.spec.predict_path

    def get(self, path: str, timeout_s: float = 5.0) -> bytes:
        with urllib.request.urlopen(self.base_url + path, timeout=timeout_s) as reply:
            body: bytes = reply.read()
            return body

    def process_tree(self) -> list[int]:
        """The server's pid and every descendant's (LitServe runs workers in children)."""
        pids = [self.process.pid]
        index = 0
        while index < len(pids):
            children = Path(f"/proc/{pids[index]}/task/{pids[index]}/children")
            with suppress(OSError):  # the process has just exited
                pids += [int(p) for p in children.read_text().split()]
            index += 1
        return pids

    def resident_bytes(self) -> int:
        """Resident set of the whole process tree, in bytes."""
        total = 0
        for pid in self.process_tree():
            try:
                pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
            total += pages * _PAGE
        return total

    def thread_cpu(self) -> list[ThreadCpu]:
        """CPU seconds (user + system) so far of every thread of every process of the tree."""
        threads: list[ThreadCpu] = []
        for pid in self.process_tree():
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    stat = (task / "stat").read_text()
                except OSError:
                    continue
                # The thread name sits in parentheses and may itself hold spaces.
                name = stat[stat.index("(") + 1 : stat.rindex(")")]
                fields = stat[stat.rindex(")") + 2 :].split()
                seconds = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
                tid = int(task.name)
                threads.append(ThreadCpu(tid, name, seconds, tid == self.process.pid))
        return threads


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def pinned(argv: tuple[str, ...], cpus: str | None) -> list[str]:
    """``argv`` run on ``cpus`` (``taskset -c`` list, e.g. "0"), or anywhere when ``None``."""
    return [*(["taskset", "-c", cpus] if cpus is not None else []), *argv]


@contextmanager
def running(spec: ServerSpec, *, cpus: str | None, log_path: Path) -> Iterator[RunningServer]:
    """Start ``spec``, wait until it answers ``ready_path``, stop it on exit."""
    port = free_port()
    argv = tuple(a.format(port=port) for a in spec.argv)
    env = {**os.environ, **{k: v.format(port=port) for k, v in spec.env.items()}}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            pinned(argv, cpus),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so workers stop with it
        )
        server = RunningServer(spec, process, port)
        try:
            _wait_ready(server, log_path)
            yield server
        finally:
            _stop(process)


def _wait_ready(server: RunningServer, log_path: Path) -> None:
    deadline = time.monotonic() + server.spec.start_timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.spec.name} exited with {server.process.returncode} while starting; "
                f"see {log_path}:\n{_tail(log_path)}"
            )
        try:
            server.get(server.spec.ready_path, timeout_s=2.0)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise RuntimeError(f"{server.spec.name} not ready after {server.spec.start_timeout_s} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            logger.warning("server %d ignored SIGTERM; killing its process group", process.pid)
    # Workers a server started can outlive it (LitServe's do): left running, they took half of
    # the CPU the next server was pinned to and halved its figures. Nothing of the group stays.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def python_module(module: str, *args: str) -> tuple[str, ...]:
    """argv running ``python -m module args`` with this interpreter."""
    return (sys.executable, "-m", module, *args)
