"""Derive ``kserve-inferenceservice-v1beta1.json`` from KServe's InferenceService CRD.

    python tests/deploy/schemas/derive_kserve_schema.py \
        serving.kserve.io_inferenceservices.yaml COMMIT > \
        tests/deploy/schemas/kserve-inferenceservice-v1beta1.json

The CRD is KServe's ``config/crd/full/serving.kserve.io_inferenceservices.yaml``. Kept: the
v1beta1 ``openAPIV3Schema`` of ``apiVersion``, ``kind``, ``metadata`` and ``spec.predictor``
(``status`` and the transformer, explainer and canary components are dropped, and so are the
predictor's framework-specific model specs, ``model`` included: a custom container uses none
of them). Descriptions are removed. Every object with listed ``properties`` and no
``additionalProperties`` or ``x-kubernetes-preserve-unknown-fields`` gets
``additionalProperties: false``: kubectl's default server-side field validation (Strict)
rejects unknown fields, where a CRD schema alone would prune them silently.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

DROPPED_PREDICTOR_FIELDS = {
    "huggingface",
    "lightgbm",
    "model",
    "onnx",
    "paddle",
    "pmml",
    "pytorch",
    "sklearn",
    "tensorflow",
    "triton",
    "xgboost",
    "workerSpec",
}


def strict(node: Any) -> Any:
    """``node`` without descriptions, its objects closed to unknown fields."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict(value) for key, value in node.items() if key != "description"}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def derive(crd: dict[str, Any], source: str) -> dict[str, Any]:
    (version,) = (v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    root = version["schema"]["openAPIV3Schema"]
    spec = root["properties"]["spec"]
    predictor = dict(spec["properties"]["predictor"])
    predictor["properties"] = {
        key: value
        for key, value in predictor["properties"].items()
        if key not in DROPPED_PREDICTOR_FIELDS
    }
    subset = {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "serving.kserve.io/v1beta1"},
            "kind": {"const": "InferenceService"},
            "metadata": root["properties"]["metadata"],
            "spec": {
                "type": "object",
                "required": spec.get("required", ["predictor"]),
                "properties": {"predictor": predictor},
            },
        },
    }
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": f"Derived from {source} by tests/deploy/schemas/derive_kserve_schema.py "
        "(see its docstring for what is kept). Apache-2.0, The KServe Authors.",
    }
    schema.update(strict(subset))
    return schema


def main() -> None:
    path, commit = sys.argv[1], sys.argv[2]
    crd = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    source = (
        f"kserve/kserve@{commit} config/crd/full/serving.kserve.io_inferenceservices.yaml "
        "(v1beta1 openAPIV3Schema)"
    )
    sys.stdout.write(json.dumps(derive(crd, source), indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
