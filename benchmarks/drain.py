"""SIGTERM with requests in flight, measured on a real server: each request is held open
after its headers (``Expect: 100-continue``: the server's ``100 Continue`` proves its handler
is running and reading the body), then the signal, then ``/readyz`` is asked until it turns
503, a new request is sent during the drain delay, and only then the held bodies. The
test suite and ``make overload`` both run it."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from dataclasses import dataclass

import httpx


def start_request(port: int, body: bytes, media_type: str = "image/png") -> socket.socket:
    """Send a ``POST /predict``'s headers and wait for ``100 Continue``; the body is not sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: %s\r\n"
        b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (media_type.encode(), len(body))
    )
    interim = b""
    while not interim.endswith(b"\r\n\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("server closed the connection before 100 Continue")
        interim += chunk
    if not interim.startswith(b"HTTP/1.1 100"):
        raise ConnectionError(f"expected 100 Continue, got {interim!r}")
    return sock


def finish_request(sock: socket.socket, body: bytes) -> tuple[int, bytes]:
    """Send the body of a request :func:`start_request` began; its status and body."""
    with sock:
        sock.sendall(body)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    head, _, payload = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


@dataclass(frozen=True)
class DrainResult:
    in_flight: int
    statuses: list[int]
    """The held requests' answers, in order."""
    bodies: list[bytes]
    readyz_503_after_s: float
    """From SIGTERM to the first 503 from ``/readyz``."""
    served_during_delay: int
    """Status of a new request sent after ``/readyz`` turned 503."""
    exit_code: int
    exited_after_s: float


def drain(
    url: str, process: subprocess.Popen[bytes], bodies: list[bytes], *, give_up_s: float = 10.0
) -> DrainResult:
    """Hold ``len(bodies)`` requests, SIGTERM the server, and see everything through."""
    port = int(url.rsplit(":", 1)[1])
    held = [start_request(port, body) for body in bodies]
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    # The signal is handled as soon as the server's main thread runs: ask until it was.
    while httpx.get(url + "/readyz", timeout=5).status_code == 200:
        if time.monotonic() - signalled > give_up_s:
            raise TimeoutError(f"/readyz still 200 {give_up_s:g} s after SIGTERM")
    turned_s = time.monotonic() - signalled
    fresh = httpx.post(url + "/predict", content=bodies[0], timeout=30).status_code
    answers = [finish_request(sock, body) for sock, body in zip(held, bodies, strict=True)]
    code = process.wait(timeout=60)
    return DrainResult(
        len(bodies),
        [status for status, _ in answers],
        [payload for _, payload in answers],
        turned_s,
        fresh,
        code,
        time.monotonic() - signalled,
    )
