"""Request bodies -> image bytes: raw image bodies, multipart uploads and base64 JSON.

The body is read here, once, against the size limit, so that an oversized upload is refused
while it streams in rather than after it has been buffered whole.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from service.errors import BadImage, ClientGone, PayloadTooLarge, UnsupportedMediaType
from service.imaging.formats import CANONICAL_MEDIA_TYPES, IMAGE_MEDIA_TYPES

#: Content types taken as the image itself (the bytes are sniffed; the type is not trusted).
RAW_IMAGE_TYPES = frozenset(
    {
        *IMAGE_MEDIA_TYPES,
        "application/octet-stream",
        # What `curl --data-binary @digit.png` sends when no type is given.
        "application/x-www-form-urlencoded",
    }
)
MULTIPART = "multipart/form-data"
JSON = "application/json"


@dataclass(frozen=True)
class Upload:
    filename: str | None
    data: bytes


def media_type(request: Request) -> str:
    """The request's media type without parameters; none given counts as octet-stream."""
    return media_type_of(request.headers.get("content-type", ""))


def media_type_of(content_type: str) -> str:
    """A Content-Type header's media type without parameters ("" counts as octet-stream)."""
    return content_type.split(";", 1)[0].strip().lower() or "application/octet-stream"


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as it (or its declared length) passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {int(declared)} bytes is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body is over the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone("client disconnected while sending the body") from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def image_from_request(request: Request, limit: int) -> bytes:
    """The one image a /predict request carries, whatever way it was sent."""
    kind = media_type(request)
    if kind in RAW_IMAGE_TYPES:
        data = await read_body(request, limit)
    elif kind == MULTIPART:
        uploads = await uploads_from_multipart(request, limit, field="file", max_files=1)
        if not uploads:
            raise BadImage("multipart body has no field 'file' holding an image", code="no_file")
        data = uploads[0].data
    elif kind == JSON:
        data = image_from_json(await read_body(request, limit))
    else:
        raise UnsupportedMediaType(
            f"content type {kind!r} is not accepted; send the image bytes as "
            f"{', '.join(CANONICAL_MEDIA_TYPES)} or application/octet-stream, or "
            "multipart/form-data with a field 'file', or JSON "
            '{"image": "<base64>"}'
        )
    if not data:
        raise BadImage("the image is empty", code="empty_body")
    return data


def image_from_json(body: bytes) -> bytes:
    """``{"image": "<base64>"}`` -> bytes; a ``data:image/...;base64,`` prefix is allowed."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadImage(f"body is not valid JSON: {exc}", code="bad_json") from exc
    encoded = document.get("image") if isinstance(document, dict) else None
    if not isinstance(encoded, str):
        raise BadImage('JSON body must be an object {"image": "<base64>"}', code="bad_json")
    if encoded.startswith("data:"):
        encoded = encoded.partition(",")[2]
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadImage(f"'image' is not valid base64: {exc}", code="bad_base64") from exc


async def uploads_from_multipart(
    request: Request, limit: int, *, field: str, max_files: int
) -> list[Upload]:
    """Files sent under ``field`` in a multipart body, in order."""
    if media_type(request) != MULTIPART:
        raise UnsupportedMediaType(
            f"send multipart/form-data with one or more fields {field!r}, "
            f"not {media_type(request)!r}"
        )
    parser = MultiPartParser(
        request.headers,
        _replay(await read_body(request, limit)),
        max_files=max_files,
        max_fields=16,
        max_part_size=limit,
    )
    # Parts stay in memory, never spill to disk: the body is already in memory and counted in
    # the admission's memory budget, and in a container /tmp is often memory too, uncounted.
    parser.spool_max_size = limit
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        message = str(exc.message)
        if "Too many files" in message:
            raise PayloadTooLarge(f"too many files: at most {max_files} per request") from exc
        raise BadImage(f"multipart body is malformed: {message}", code="bad_multipart") from exc
    uploads: list[Upload] = []
    try:
        for value in form.getlist(field):
            if isinstance(value, UploadFile):
                uploads.append(Upload(value.filename, await value.read()))
            else:  # a plain text field where a file was expected
                uploads.append(Upload(None, value.encode()))
    finally:
        await form.close()
    return uploads


async def _replay(body: bytes) -> AsyncGenerator[bytes, None]:
    # The parser holds the body only while it parses: its parts are the copy kept.
    yield body
    del body
