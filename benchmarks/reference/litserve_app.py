"""LitServe over the same model and preprocessing: its own dynamic batching
(``max_batch_size`` 64, ``batch_timeout`` 5 ms), default transport, one inference worker.

``python -m benchmarks.reference.litserve_app --model-dir models --model lenet5 --port 8003``

LitServe hands ``decode_request`` a parsed JSON or form body; so that it receives the same
raw PNG as the other servers, the request handler is patched to pass raw bodies through as
bytes (one line, :func:`_pass_raw_bodies`). LitServe is a benchmark extra, not a dependency
of the service.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import litserve  # type: ignore[import-untyped]
import numpy as np
import torch
from fastapi import Request
from litserve.server import BaseRequestHandler  # type: ignore[import-untyped]

from benchmarks.reference import MAX_PIXELS
from benchmarks.reference.package import load_model
from service.imaging import preprocess


class DigitsAPI(litserve.LitAPI):  # type: ignore[misc]
    def __init__(self, model_dir: Path, model: str) -> None:
        super().__init__(max_batch_size=64, batch_timeout=0.005)
        self.model_dir = model_dir
        self.model_name = model

    def setup(self, device: str) -> None:
        torch.set_num_threads(1)
        self.model = load_model(self.model_dir, self.model_name)

    def decode_request(self, request: Request) -> np.ndarray:
        return preprocess(request, max_pixels=MAX_PIXELS)  # type: ignore[arg-type]

    def batch(self, inputs: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(inputs))[:, None]  # (B, 1, 28, 28)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.softmax(self.model(x), dim=1)  # (B, 10)

    def unbatch(self, output: torch.Tensor) -> list[torch.Tensor]:
        return list(output)

    def encode_response(self, output: torch.Tensor) -> dict[str, Any]:
        digit = int(output.argmax())
        return {
            "digit": digit,
            "confidence": float(output[digit]),
            "probabilities": output.tolist(),
        }


async def _raw_body(self: BaseRequestHandler, request: Any, request_type: Any) -> Any:
    return await request.body()


def _pass_raw_bodies() -> None:
    """LitServe parses bodies as JSON or forms; give ``decode_request`` the bytes instead."""
    BaseRequestHandler._prepare_request = _raw_body


# At import time on purpose: LitServe's API server processes re-import this module.
_pass_raw_bodies()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=Path("models"))
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--port", type=int, default=8003)
    args = parser.parse_args()
    server = litserve.LitServer(
        DigitsAPI(args.model_dir, args.model), accelerator="cpu", workers_per_device=1
    )
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
