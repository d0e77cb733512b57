"""Container health check: exit 0 when the service on this host answers ``GET /readyz`` with 200.

The Dockerfile's ``HEALTHCHECK`` runs this file, and ``tests/deploy`` runs the very same command
against a local server, so what is tested is what the container does.

It is deliberately standard library only: the slim runtime image has no curl or wget, and the
check must not import the service (that would load torch every few seconds).

Environment (the service's own variables, so the check follows any override):

- ``DIGITS_PORT``  port the service listens on (default 8000);
- ``DIGITS_HOST``  address it binds; a wildcard bind is probed on loopback.

Exit status: 0 ready, 1 anything else (not listening, timeout, non-200), as Docker expects.
"""

from __future__ import annotations

import http.client
import os
import sys

DEFAULT_PORT = 8000
READY_PATH = "/readyz"
#: Below the Dockerfile's ``HEALTHCHECK --timeout`` so that a hung service fails the check with
#: a message instead of being killed by Docker without one.
TIMEOUT_S = 2.5

# Wildcard binds accept connections on loopback; probing loopback works in any network mode.
_WILDCARD_TO_LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def probe_address(environ: dict[str, str]) -> tuple[str, int]:
    """Host and port to probe, from the service's ``DIGITS_HOST`` and ``DIGITS_PORT``."""
    host = environ.get("DIGITS_HOST", "127.0.0.1").strip()
    host = _WILDCARD_TO_LOOPBACK.get(host, host)
    raw_port = environ.get("DIGITS_PORT", str(DEFAULT_PORT)).strip()
    try:
        port = int(raw_port)
    except ValueError:
        raise ValueError(f"DIGITS_PORT is not a port number: {raw_port!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"DIGITS_PORT out of range: {port}")
    return host, port


def readiness_status(host: str, port: int, timeout_s: float = TIMEOUT_S) -> int:
    """HTTP status of ``GET /readyz``; raises ``OSError`` when nothing answers in time."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        connection.request("GET", READY_PATH, headers={"User-Agent": "digits-healthcheck"})
        response = connection.getresponse()
        response.read()  # drain, so the server sees a clean close
        return response.status
    finally:
        connection.close()


def report(message: str) -> None:
    """One line for ``docker inspect``'s health log (Docker keeps the check's output)."""
    sys.stdout.write(message + "\n")


def main() -> int:
    try:
        host, port = probe_address(dict(os.environ))
        status = readiness_status(host, port)
    except (OSError, ValueError, http.client.HTTPException) as error:
        report(f"not ready: {type(error).__name__}: {error}")
        return 1
    if status != 200:
        report(f"not ready: GET {READY_PATH} answered {status}")
        return 1
    report(f"ready: GET {READY_PATH} answered 200")
    return 0


if __name__ == "__main__":
    sys.exit(main())
