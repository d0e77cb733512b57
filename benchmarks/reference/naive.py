"""The naive server: decode, preprocess and forward each request on its own, inside the
handler, with the service's own preprocessing and model; no batching.

``python -m benchmarks.reference.naive --model-dir models --model lenet5 --port 8002``
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request

from benchmarks.reference import MAX_PIXELS, serve
from benchmarks.reference.package import load_model
from service.imaging import preprocess


def create_app(model: torch.jit.ScriptModule) -> FastAPI:
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        image = preprocess(await request.body(), max_pixels=MAX_PIXELS)  # (28, 28)
        with torch.inference_mode():
            batch = torch.from_numpy(image)[None, None]  # (1, 1, 28, 28)
            probabilities = torch.softmax(model(batch), dim=1)[0]  # (10,)
        digit = int(probabilities.argmax())
        return {
            "digit": digit,
            "confidence": float(probabilities[digit]),
            "probabilities": probabilities.tolist(),
        }

    @app.get("/healthz")
    async def healthz() -> str:
        return "ok"

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=Path("models"))
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args()
    torch.set_num_threads(1)
    serve(create_app(load_model(args.model_dir, args.model)), args.port)


if __name__ == "__main__":
    main()
