"""The HTTP ceiling: the same stack as the service (FastAPI on uvicorn with uvloop and
httptools) answering /predict by reading the body and returning a constant.

``python -m benchmarks.reference.ceiling --port 8001``
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from fastapi import FastAPI, Request, Response

from benchmarks.reference import serve

#: About the size of the service's answer.
ANSWER = (
    b'{"digit":9,"confidence":0.99,"probabilities":[0.001,0.001,0.001,0.001,0.001,0.001,'
    b'0.001,0.001,0.001,0.99],"uncertain":false,"model":{"name":"lenet5","version":"1"},'
    b'"timing_ms":{"queue":0.1,"inference":0.1,"total":0.2},"batch_size":1}'
)


def create_app(handle_body: Callable[[bytes], Response | None] | None = None) -> FastAPI:
    """The constant-answer app; ``handle_body`` (the decode-only floor's decoder) runs on
    each body first, and a response it returns is sent instead of the constant."""
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        body = await request.body()
        refusal = handle_body(body) if handle_body is not None else None
        return refusal or Response(ANSWER, media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b"ok")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    serve(create_app(), args.port)


if __name__ == "__main__":
    main()
