"""Reference servers the service is compared with, each a few lines over the same model."""

from __future__ import annotations

from typing import Final

import uvicorn
from fastapi import FastAPI

#: The service's default ``DIGITS_MAX_IMAGE_PIXELS``: what the in-process references allow.
MAX_PIXELS: Final = 40_000_000


def serve(app: FastAPI, port: int) -> None:
    """Run a reference app on the service's own stack (uvicorn, uvloop, httptools), quietly,
    so that the comparison is between request paths, not servers or log volume."""
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
