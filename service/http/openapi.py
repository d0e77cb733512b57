"""The OpenAPI document: FastAPI's, plus the schema of image bodies sent as JSON, which the
route reads itself and so FastAPI cannot see."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

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
            components["ImageJSON"] = ImageJSON.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
