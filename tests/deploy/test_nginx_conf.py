"""docker/nginx.conf: what it says, ``nginx -t``, and how a real nginx with it balances,
retries and refuses, in front of stand-in replicas on loopback.

The nginx tests need the ``nginx`` binary (Debian: ``apt-get install nginx``) and skip without
it. They run a copy of nginx.conf with only what ties it to Docker replaced (see
:func:`runnable_copy`): the upstream address, the listen port, and the pid/temp paths.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from . import nginx_conf
from .layout import NGINX_CONF

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
)
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (Debian: nginx)")

#: How long nginx may take to start listening or to stop.
NGINX_START_S = 10.0
REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")  # nginx's $request_id


def conf_text() -> str:
    """nginx.conf as nginx reads it: the template rendered (with Docker's resolver)."""
    return nginx_conf.render(NGINX_CONF.read_text(encoding="utf-8"))


# --- what the file says -----------------------------------------------------------------------


def test_upstream_keeps_connections_alive() -> None:
    upstream = [d for d in nginx_conf.parse(conf_text()) if d.context[-1:] == ("upstream digits",)]
    names = {d.name: d.arguments for d in upstream}
    assert "keepalive" in names
    assert "resolve" in names["server"], "replicas that come and go are not followed"
    location = [d for d in nginx_conf.parse(conf_text()) if d.context[-1:] == ("location /",)]
    settings = {d.name: " ".join(d.arguments) for d in location if d.name != "proxy_set_header"}
    headers = {d.arguments[0]: d.arguments[1] for d in location if d.name == "proxy_set_header"}
    assert settings["proxy_pass"] == "http://digits"
    # Upstream keepalive needs HTTP/1.1 and no "Connection: close" from the client.
    assert settings["proxy_http_version"] == "1.1"
    assert headers["Connection"] == ""
    assert headers["X-Request-ID"] == "$digits_request_id"


def test_retries_never_resend_a_post_that_reached_a_replica() -> None:
    (next_upstream,) = nginx_conf.directives(conf_text(), "proxy_next_upstream")
    conditions = next_upstream.split()
    assert "http_503" in conditions
    assert "non_idempotent" not in conditions


@needs_nginx
def test_nginx_accepts_the_configuration(nginx_prefix: Path) -> None:
    conf = runnable_copy(conf_text(), upstreams=["127.0.0.1:9"], port=8080, prefix=nginx_prefix)
    result = subprocess.run(
        [str(NGINX), "-t", "-e", "stderr", "-p", str(nginx_prefix), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@needs_nginx
def test_nginx_check_can_fail(nginx_prefix: Path) -> None:
    # A directive without its semicolon swallows the next one: a syntax error.
    broken, count = re.subn(r"(proxy_read_timeout \S+);", r"\1", conf_text())
    assert count == 1
    conf = runnable_copy(broken, upstreams=["127.0.0.1:9"], port=8080, prefix=nginx_prefix)
    result = subprocess.run(
        [str(NGINX), "-t", "-e", "stderr", "-p", str(nginx_prefix), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0


# --- a real nginx in front of stand-in replicas ------------------------------------------------


@dataclass
class Replica:
    """A stand-in for one service replica: answers every request with ``status``."""

    status: int
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, id
    lock: threading.Lock = field(default_factory=threading.Lock)

    def requests(self, method: str) -> int:
        with self.lock:
            return sum(1 for m, _, _ in self.seen if m == method)


@contextmanager
def serving(replica: Replica) -> Iterator[str]:
    """Run ``replica`` on a loopback port; yields ``host:port``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # so that nginx can keep connections to it open

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            self.rfile.read(length)
            with replica.lock:
                replica.seen.append((self.command, self.path, self.headers.get("X-Request-ID")))
            body = json.dumps(
                {"replica_status": replica.status, "request_id": self.headers.get("X-Request-ID")}
            ).encode()
            self.send_response(replica.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if replica.status == 503:
                self.send_header("Retry-After", "1")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def closed_address() -> str:
    """A loopback address where nothing listens (connections are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def runnable_copy(text: str, *, upstreams: list[str], port: int, prefix: Path) -> Path:
    """nginx.conf made runnable here: each change is checked to apply exactly once.

    - ``server digits:8000 resolve ...`` -> one ``server`` line per given address, same
      parameters but ``resolve`` (no Docker DNS here, and nginx < 1.27.3 lacks it);
    - ``listen 8080`` -> ``listen 127.0.0.1:<port>``;
    - ``resolver`` -> loopback (nothing is looked up: no ``resolve`` is left);
    - pid file and temporary folders -> under ``prefix`` (not writable system paths).
    """
    server = re.compile(r"^(\s*)server\s+digits:\d+\s+resolve\s+([^;]*);$", re.M)
    match = server.search(text)
    assert match is not None and len(server.findall(text)) == 1, "upstream server line changed"
    indent, parameters = match.group(1), match.group(2)
    servers = "\n".join(f"{indent}server {address} {parameters};" for address in upstreams)
    temp_kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    # (pattern, replacement, how many times it must match)
    replacements: list[tuple[str, Callable[[re.Match[str]], str], int]] = [
        (server.pattern, lambda _: servers, 1),
        (r"^(\s*)listen\s+8080;$", lambda m: f"{m.group(1)}listen 127.0.0.1:{port};", 1),
        (r"^pid\s+\S+;$", lambda _: f"pid {prefix}/nginx.pid;", 1),
        (r"^(\s*)resolver\s+\S+\s", lambda m: f"{m.group(1)}resolver 127.0.0.1 ", 1),
        (
            rf"^(\s*)({'|'.join(temp_kinds)})_temp_path\s+\S+;$",
            lambda m: f"{m.group(1)}{m.group(2)}_temp_path {prefix}/{m.group(2)}_temp;",
            len(temp_kinds),
        ),
    ]
    for pattern, replacement, expected in replacements:
        text, count = re.subn(pattern, replacement, text, flags=re.M)
        assert count == expected, f"{pattern!r} matched {count} times in nginx.conf"
    conf = prefix / "nginx.conf"
    conf.write_text(text, encoding="utf-8")
    return conf


@pytest.fixture
def nginx_prefix() -> Iterator[Path]:
    # Not pytest's tmp_path: nginx run as root hands its workers to an unprivileged user, who
    # must be able to reach the temporary folders; pytest's base folder is private (0700).
    with tempfile.TemporaryDirectory(prefix="digits-nginx-") as folder:
        prefix = Path(folder)
        prefix.chmod(0o755)
        yield prefix


@contextmanager
def running_nginx(prefix: Path, upstreams: list[str]) -> Iterator[httpx.Client]:
    """nginx with the project's configuration in front of ``upstreams``; yields a client."""
    port = free_port()
    conf = runnable_copy(conf_text(), upstreams=upstreams, port=port, prefix=prefix)
    log = (prefix / "nginx.log").open("w")
    process = subprocess.Popen(
        [str(NGINX), "-e", "stderr", "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_until_listening(port, process, prefix / "nginx.log")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:
            yield client
    finally:
        process.terminate()
        try:
            process.wait(timeout=NGINX_START_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_until_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll until nginx accepts connections (bounded; fails with nginx's own log)."""
    deadline = time.monotonic() + NGINX_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"nginx exited with {process.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"nginx did not listen within {NGINX_START_S} s:\n{log.read_text()}")


def _error_code(response: httpx.Response) -> str:
    payload = response.json()
    assert set(payload) == {"error"}
    assert payload["error"]["status"] == response.status_code
    code: str = payload["error"]["code"]
    return code


@needs_nginx
def test_get_is_retried_on_another_replica_after_a_503(nginx_prefix: Path) -> None:
    loading, ready = Replica(503), Replica(200)
    sent = 0
    with serving(loading) as a, serving(ready) as b, running_nginx(nginx_prefix, [a, b]) as nginx:
        while sent < 6 and not loading.requests("GET"):  # round robin gets there in two
            response = nginx.get("/readyz")
            sent += 1
            assert response.status_code == 200, response.text
    assert loading.requests("GET") == 1, "the 503 replica was never tried"
    # Every request was answered by the ready replica, the refused one after a retry.
    assert ready.requests("GET") == sent


@needs_nginx
def test_post_that_reached_a_replica_is_not_resent(nginx_prefix: Path) -> None:
    full, ready = Replica(503), Replica(200)
    statuses: list[int] = []
    with serving(full) as a, serving(ready) as b, running_nginx(nginx_prefix, [a, b]) as nginx:
        for _ in range(6):
            statuses.append(nginx.post("/predict", content=b"\x89PNG...").status_code)
            if full.requests("POST"):
                break
    assert full.requests("POST") == 1, "the 503 replica was never tried"
    # The request the full replica refused came back as its 503, and went nowhere else.
    assert statuses.count(503) == 1
    assert ready.requests("POST") == statuses.count(200) == len(statuses) - 1


@needs_nginx
def test_post_is_retried_when_a_replica_refuses_the_connection(nginx_prefix: Path) -> None:
    ready = Replica(200)
    with serving(ready) as b, running_nginx(nginx_prefix, [closed_address(), b]) as nginx:
        statuses = [nginx.post("/predict", content=b"image").status_code for _ in range(4)]
    assert statuses == [200] * 4
    assert ready.requests("POST") == 4


@needs_nginx
def test_no_replica_reachable_is_a_json_503_with_retry_after(nginx_prefix: Path) -> None:
    with running_nginx(nginx_prefix, [closed_address()]) as nginx:
        response = nginx.post("/predict", content=b"image", headers={"X-Request-ID": "r-1"})
    assert response.status_code == 503
    assert _error_code(response) == "unavailable"
    assert response.headers["Retry-After"] == "1"
    assert response.headers["X-Request-ID"] == "r-1"
    assert response.json()["error"]["request_id"] == "r-1"


@needs_nginx
def test_request_id_is_kept_or_made(nginx_prefix: Path) -> None:
    ready = Replica(200)
    with serving(ready) as b, running_nginx(nginx_prefix, [b]) as nginx:
        kept = nginx.get("/models", headers={"X-Request-ID": "client-chosen-id"})
        made = nginx.get("/models")
    assert kept.json()["request_id"] == "client-chosen-id"
    assert REQUEST_ID.match(made.json()["request_id"] or ""), made.json()


@needs_nginx
def test_body_limit_is_the_services_with_its_error_shape(nginx_prefix: Path) -> None:
    limit = nginx_conf.size_bytes(nginx_conf.directives(conf_text(), "client_max_body_size")[0])
    ready = Replica(200)
    with serving(ready) as b, running_nginx(nginx_prefix, [b]) as nginx:
        at_limit = nginx.post("/predict", content=b"\0" * limit)
        over = nginx.post("/predict", content=b"\0" * (limit + 1))
    assert at_limit.status_code == 200
    assert over.status_code == 413
    assert _error_code(over) == "payload_too_large"
    assert ready.requests("POST") == 1


@needs_nginx
def test_model_reload_is_refused_at_the_balancer(nginx_prefix: Path) -> None:
    ready = Replica(200)
    with serving(ready) as b, running_nginx(nginx_prefix, [b]) as nginx:
        response = nginx.post("/models/reload")
        health = nginx.get("/nginx-health")
    assert response.status_code == 403
    assert _error_code(response) == "forbidden"
    assert health.status_code == 200
    assert ready.seen == [], "nothing reached the replica"
