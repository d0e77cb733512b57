"""``python -m service``: serve the model packages; ``python -m service openapi``: print the
OpenAPI document (the committed ``openapi.json`` is this output)."""

from __future__ import annotations

import argparse
import json
import signal
import sys

import uvicorn
from pydantic import ValidationError

from service.app import create_app
from service.logs import configure_logging
from service.settings import Settings


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
            name = "DIGITS_" + "_".join(str(p) for p in err["loc"]).upper()
            sys.stderr.write(f"invalid setting {name}: {err['msg']}\n")
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
    uvicorn.run(
        create_app(settings),
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
