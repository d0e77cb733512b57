"""The 28x28 image a model saw, as PNG bytes (``explain=true`` answers carry it)."""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray


def encode_png(array: NDArray[np.floating]) -> bytes:
    """A 2-D float image in [0, 1] as 8-bit grey PNG bytes."""
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {array.shape}")
    pixels = np.clip(np.rint(np.nan_to_num(array) * 255.0), 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # OpenCV encodes any 8-bit grey array; this guards against surprises
        raise ValueError("could not encode the image as PNG")
    png: bytes = encoded.tobytes()
    return png
