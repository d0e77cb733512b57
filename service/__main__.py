"""``python -m service``: serve the model packages; ``python -m service openapi``: print the
OpenAPI document (the committed ``openapi.json`` is this output)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from types import FrameType

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from service.app import create_app
from service.observability.logs import configure_logging
from service.settings import Settings

logger = logging.getLogger("service")


class DrainingServer(uvicorn.Server):
    """uvicorn, with a drain delay between SIGTERM and closing the port.

    At the first SIGTERM ``/readyz`` turns 503 at once, but the port stays open and requests
    are answered as before for ``drain_delay``: load balancers and Kubernetes endpoints see the
    replica leave before it stops accepting. Then uvicorn's own graceful shutdown runs: stop
    accepting, finish the requests in progress (``timeout_graceful_shutdown``), exit. SIGINT
    (Ctrl-C), or a second signal, skips the delay.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_delay_s: float) -> None:
        super().__init__(config)
        self._app = app
        self._drain_delay_s = drain_delay_s
        self._draining: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        runtime = getattr(self._app.state, "runtime", None)
        if sig != signal.SIGTERM or self._draining is not None or runtime is None:
            if self._draining is not None:
                self._draining.cancel()
            super().handle_exit(sig, frame)
            return
        runtime.draining = True
        logger.info("draining", extra={"delay_s": self._drain_delay_s})
        # A timer thread, not the loop: this runs in a signal handler. uvicorn's main loop
        # reads should_exit every tick, from any thread.
        self._draining = threading.Timer(self._drain_delay_s, super().handle_exit, (sig, frame))
        self._draining.daemon = True
        self._draining.start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve digit-recognition models over HTTP. Configure with DIGITS_* "
        "environment variables (see the README).",
    )
    parser.add_argument(
        "command", nargs="?", default="serve", choices=["serve", "openapi"], help="default: serve"
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        # One line per bad variable, named as the user must set it.
        for err in exc.errors():
            if err["loc"]:
                name = "DIGITS_" + "_".join(str(p) for p in err["loc"]).upper()
                sys.stderr.write(f"invalid setting {name}: {err['msg']}\n")
            else:  # a rule across settings
                sys.stderr.write(f"invalid settings: {err['msg']}\n")
        return 2
    if args.command == "openapi":
        document = create_app(settings).openapi()
        sys.stdout.write(json.dumps(document, indent=2, sort_keys=False) + "\n")
        return 0
    log_config = configure_logging(settings.log_level, settings.log_format)
    settings.check_model_dir()
    # uvicorn drains on SIGTERM, then re-raises the signal for the previous handler. A drained
    # shutdown is a clean one (exit 0, as orchestrators expect), so that handler does nothing.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=log_config,
        access_log=False,
        # Wait this long for accepted requests to be answered after SIGTERM.
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_s)),
        loop="uvloop",
        http="httptools",
        server_header=False,
    )
    DrainingServer(config, app, settings.drain_delay_s).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
