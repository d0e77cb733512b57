"""The decode-only floor: the ceiling's stack and constant answer, after decoding every body
fully with Pillow (the first frame of an animation), as any server that reads the image must
(a body it cannot decode gets a 400). On the realistic mix it is what the service is compared
with: the cost of HTTP plus decoding, without preprocessing or a model. (Pillow decodes at
full size here; the service may decode large JPEGs at a reduced DCT scale, so it can beat
this floor on phone photos.)

``python -m benchmarks.reference.decode_only --port 8004``
"""

from __future__ import annotations

import argparse
import io

from fastapi import Response
from PIL import Image

from benchmarks.reference import serve
from benchmarks.reference.ceiling import create_app

#: What the floor answers for a body Pillow cannot decode (keeping the connection open).
NOT_AN_IMAGE = b'{"error": {"status": 400, "code": "corrupt_image"}}'


def decode_fully(body: bytes) -> None:
    """Decode every pixel of the image's first frame."""
    with Image.open(io.BytesIO(body)) as image:
        image.load()


def decoded_or_refused(body: bytes) -> Response | None:
    """``None`` once ``body`` is decoded; a 400 when Pillow cannot decode it."""
    try:
        decode_fully(body)
    except (OSError, ValueError, SyntaxError, EOFError):
        return Response(NOT_AN_IMAGE, status_code=400, media_type="application/json")
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8004)
    args = parser.parse_args()
    serve(create_app(decoded_or_refused), args.port)


if __name__ == "__main__":
    main()
