"""docker/healthcheck.py against real HTTP servers on loopback, run as the image runs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .layout import HEALTHCHECK_SCRIPT


@contextmanager
def readiness_server(status: int, *, hang: threading.Event | None = None) -> Iterator[int]:
    """A server answering ``GET /readyz`` with ``status`` (or not at all until ``hang`` is set);
    yields its port."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            if hang is not None:
                hang.wait(timeout=30)
                return
            body = b"{}"
            self.send_response(status if self.path == "/readyz" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: pytest shows the assertion, not the access log."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        if hang is not None:
            hang.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert all(path == "/readyz" for path in seen), seen


def run_healthcheck(**environ: str) -> subprocess.CompletedProcess[str]:
    """The image's health check command, with the service's variables set as given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITS_")}
    env.update(environ)
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK_SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_ready_service_passes() -> None:
    with readiness_server(200) as port:
        result = run_healthcheck(DIGITS_PORT=str(port))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ready" in result.stdout


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1", ""])
def test_wildcard_and_loopback_binds_are_probed_on_loopback(host: str) -> None:
    with readiness_server(200) as port:
        result = run_healthcheck(DIGITS_HOST=host, DIGITS_PORT=str(port))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("status", [503, 500, 404])
def test_service_that_is_not_ready_fails(status: int) -> None:
    with readiness_server(status) as port:
        result = run_healthcheck(DIGITS_PORT=str(port))
    assert result.returncode == 1
    assert f"answered {status}" in result.stdout


def test_nothing_listening_fails() -> None:
    result = run_healthcheck(DIGITS_PORT=str(unused_port()))
    assert result.returncode == 1
    assert "ConnectionRefusedError" in result.stdout


def test_hung_service_fails_before_dockers_timeout() -> None:
    with readiness_server(200, hang=threading.Event()) as port:
        result = run_healthcheck(DIGITS_PORT=str(port))
    assert result.returncode == 1
    assert "timed out" in result.stdout


@pytest.mark.parametrize("port", ["eighty", "0", "70000"])
def test_bad_port_setting_fails_with_a_reason(port: str) -> None:
    result = run_healthcheck(DIGITS_PORT=port)
    assert result.returncode == 1
    assert "DIGITS_PORT" in result.stdout
