"""The Kubernetes example in docs/deploy.md: valid YAML that agrees with the image."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from . import dockerfile
from .layout import DOCKERFILE, REPO_ROOT, RUNTIME_STAGE

DEPLOY_DOC = REPO_ROOT / "docs" / "deploy.md"
#: Time the process needs after the drain to close the event loop and exit.
EXIT_MARGIN_S = 5


@pytest.fixture(scope="module")
def examples() -> list[list[Any]]:
    """Each ```yaml block of the document, as its list of YAML documents."""
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"^```yaml\n(.*?)^```", text, flags=re.S | re.M)
    assert len(blocks) == 2, "expected the Deployment/Service example and the GPU patch"
    return [list(yaml.safe_load_all(block)) for block in blocks]


def _container(pod_template_owner: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_template_owner["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container.get("env", [])}


def test_deployment_and_service_agree_with_the_image(examples: list[list[Any]]) -> None:
    deployment, service = examples[0]
    assert (deployment["kind"], service["kind"]) == ("Deployment", "Service")
    parsed = dockerfile.parse(DOCKERFILE)
    runtime = parsed.stage(RUNTIME_STAGE)
    image_env = runtime.env(parsed.global_args, inherited={})
    container = _container(deployment)

    (port,) = container["ports"]
    assert port["containerPort"] == int(image_env["DIGITS_PORT"])
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]

    user = runtime.last("USER")
    assert user is not None
    pod_security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert str(pod_security["runAsUser"]) == user.arguments.split(":")[0]


def test_termination_grace_covers_the_drain_delay_and_grace(examples: list[list[Any]]) -> None:
    deployment = examples[0][0]
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    env = _env(container)
    delay_s = float(env["DIGITS_DRAIN_DELAY_S"])
    assert delay_s >= 5  # endpoint removal takes seconds to reach every proxy
    needed = delay_s + float(env["DIGITS_SHUTDOWN_GRACE_S"]) + EXIT_MARGIN_S
    assert pod["terminationGracePeriodSeconds"] >= needed
    assert "lifecycle" not in container  # the service drains by itself: no preStop sleep


def test_gpu_patch_asks_for_one_nvidia_gpu(examples: list[list[Any]]) -> None:
    (patch,) = examples[1]
    container = _container(patch)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert _env(container)["DIGITS_DEVICE"] == "cuda"
    assert container["image"].endswith(":cuda")
