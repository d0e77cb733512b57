"""The OpenAPI document: FastAPI's, plus the schemas of bodies the routes read themselves and
so FastAPI cannot see: images sent as JSON, the Open Inference Protocol's infer request."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.api import inference_protocol
from service.api.schemas import ImageJSON


def install_openapi(app: FastAPI) -> None:
    """``app.openapi()`` builds the document once, with the components FastAPI misses."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            template = "#/components/schemas/{model}"
            components["ImageJSON"] = ImageJSON.model_json_schema(ref_template=template)
            # The /v2 infer request, which its route reads as bytes (binary tensor data).
            components.update(inference_protocol.openapi_components(template))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
