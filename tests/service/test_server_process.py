"""The real thing: ``python -m service`` as a subprocess on 127.0.0.1, spoken to over HTTP."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import digit_png, serve_in_subprocess

pytestmark = pytest.mark.slow


@pytest.fixture
def server(
    trained_model_dir: Path, tmp_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    log = tmp_path / "server.log"
    with serve_in_subprocess(
        trained_model_dir, log, DIGITS_DEFAULT_MODEL="lenet5", DIGITS_SHUTDOWN_GRACE_S="5"
    ) as running:
        yield running


def test_real_server_answers_concurrent_clients_and_drains_on_sigterm(
    server: tuple[str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    url, process = server
    images = [(digit, digit_png(digit)) for digit in range(10)] * 4

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
            return await asyncio.gather(
                *(
                    client.post("/predict", content=png, headers={"content-type": "image/png"})
                    for _, png in images
                )
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * len(images)
    assert [r.json()["digit"] for r in responses] == [d for d, _ in images]
    # 40 concurrent requests on one model: some of them must have shared a forward pass.
    assert max(r.json()["batch_size"] for r in responses) > 1

    models = httpx.get(url + "/models").json()
    assert {m["name"] for m in models["models"]} == {"lenet5", "mlp"}

    # SIGTERM with requests in flight. Each request announces its body with
    # "Expect: 100-continue"; the server's "100 Continue" proves the handler is running and
    # reading it. Only then the signal, then the bodies: every one must still get its 200.
    port = int(url.rsplit(":", 1)[1])
    pending = [(digit, _start_request(port, png)) for digit, png in images[:10]]
    process.send_signal(signal.SIGTERM)
    answers = [(digit, _finish_request(sock, digit_png(digit))) for digit, sock in pending]
    assert [status for _, (status, _) in answers] == [200] * len(pending)
    assert all(f'"digit":{digit},'.encode() in body for digit, (_, body) in answers)
    assert process.wait(timeout=30) == 0
    log = (tmp_path / "server.log").read_text()
    assert '"message": "request"' in log and '"status": 200' in log


def _start_request(port: int, png: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
        b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(png)
    )
    interim = b""
    while not interim.endswith(b"\r\n\r\n"):
        chunk = sock.recv(1)
        assert chunk, "server closed the connection before 100 Continue"
        interim += chunk
    assert interim.startswith(b"HTTP/1.1 100"), interim
    return sock


def _finish_request(sock: socket.socket, png: bytes) -> tuple[int, bytes]:
    with sock:
        sock.sendall(png)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body
