"""``/``: the draw-a-digit page, and its files under ``/static/``, read from the installed package.

The page is open to everyone (it holds no data); the API calls it makes carry the user's key.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import Response

from service.errors import NotFound

router = APIRouter(include_in_schema=False)

PAGE = "index.html"

#: Everything the page loads comes from this origin. Images may also be ``data:`` (the 28x28
#: image the model saw arrives as base64) and ``blob:`` (a dropped file); nothing may frame it.
PAGE_CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
#: A file name, never a path: nothing outside ``service/static`` can be asked for.
_ASSET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(js|css|svg|png)$")


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    media_type: str
    etag: str


@lru_cache(maxsize=32)
def static_file(name: str) -> StaticFile:
    """A file of ``service/static``; the package's files do not change while it runs."""
    entry = resources.files("service").joinpath("static").joinpath(name)
    if not entry.is_file():
        raise NotFound(f"no static file {name}")
    body = entry.read_bytes()
    suffix = name[name.rfind(".") :]
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return StaticFile(body=body, media_type=_MEDIA_TYPES[suffix], etag=etag)


def _respond(file: StaticFile, if_none_match: str | None, extra: dict[str, str]) -> Response:
    # no-cache: browsers keep the file but ask again (cheaply, by ETag), so an upgraded
    # service never runs a stale script against a changed API.
    headers = {"ETag": file.etag, "Cache-Control": "no-cache", **extra}
    if if_none_match is not None and file.etag in re.split(r"\s*,\s*", if_none_match):
        return Response(status_code=304, headers=headers)
    return Response(file.body, media_type=file.media_type, headers=headers)


IfNoneMatch = Annotated[str | None, Header()]


@router.api_route("/", methods=["GET", "HEAD"])
async def page(if_none_match: IfNoneMatch = None) -> Response:
    """The page: draw a digit or drop an image, see what the model answers and saw."""
    return _respond(static_file(PAGE), if_none_match, {"Content-Security-Policy": PAGE_CSP})


@router.api_route("/static/{name}", methods=["GET", "HEAD"])
async def static_asset(name: str, if_none_match: IfNoneMatch = None) -> Response:
    """The page's script, style sheet and icon."""
    if not _ASSET_NAME.match(name):
        raise NotFound(f"no static file {name}")
    return _respond(static_file(name), if_none_match, {})
