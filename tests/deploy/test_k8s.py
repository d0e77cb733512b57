"""deploy/k8s/: the kustomize overlays and the KServe InferenceService, validated offline.

Each overlay is rendered twice when a kustomize is installed (``kustomize`` or ``kubectl
kustomize``): by it, and by :func:`render` here (the kustomization features the files use:
``resources``, ``images`` and strategic-merge ``patches``, anything else refused), and the
two must agree. Every resource is validated against the Kubernetes OpenAPI schemas that
``kubernetes-validate`` ships (strict: unknown fields fail, as kubectl's default server-side
field validation does), the InferenceService against the subset of KServe's CRD schema in
``schemas/``. Then the files are checked against each other, the image and the service.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from fastapi.routing import APIRoute

from service.api.health import router as health_router
from service.settings import Settings

from . import compose_files, dockerfile
from .compose_files import seconds
from .layout import COMPOSE_BASE, COMPOSE_GPU, DOCKERFILE, REPO_ROOT, RUNTIME_STAGE

K8S_DIR = REPO_ROOT / "deploy" / "k8s"
OVERLAYS = {name: K8S_DIR / "overlays" / name for name in ("cpu", "gpu")}
INFERENCE_SERVICE = K8S_DIR / "kserve" / "inferenceservice.yaml"
KSERVE_SCHEMA = Path(__file__).parent / "schemas" / "kserve-inferenceservice-v1beta1.json"
#: The compose service whose image each overlay runs.
COMPOSE_FOR = {"cpu": [COMPOSE_BASE], "gpu": [COMPOSE_BASE, COMPOSE_GPU]}
#: Oldest and newest Kubernetes the manifests are checked against. 1.31: the PDB's
#: unhealthyPodEvictionPolicy is GA from there on. The newest is the latest that the installed
#: kubernetes-validate has schemas for.
OLDEST_K8S = "1.31"
#: Time the process needs after the drain to close the event loop and exit.
EXIT_MARGIN_S = 5
LABEL_NAME = "app.kubernetes.io/name"

Resource = dict[str, Any]


# --- rendering the overlays ------------------------------------------------------------------

#: Strategic merge: lists of these fields merge item by item on this key (as in the
#: Kubernetes API types' patchMergeKey); every other list is replaced whole.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}
#: What :func:`render` implements of a Kustomization.
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "images", "patches"}


def load_all(path: Path) -> list[Resource]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    if isinstance(patch, dict) and isinstance(base, dict):
        assert not any(key.startswith("$") for key in patch), f"directive in patch: {patch}"
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = strategic_merge(base[key], value, key) if key in base else value
        return merged
    if isinstance(patch, list) and isinstance(base, list) and field in MERGE_KEYS:
        # Items new to the list come first, in the patch's order, as kustomize puts them.
        key = MERGE_KEYS[field]
        patched = {item[key]: item for item in patch}
        known = {item[key] for item in base}
        added = [copy.deepcopy(item) for item in patch if item[key] not in known]
        kept = [
            strategic_merge(item, patched[item[key]]) if item[key] in patched else item
            for item in base
        ]
        return added + kept
    return copy.deepcopy(patch)


def _split_image(image: str) -> tuple[str, str | None]:
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:  # no tag; the colon was a registry's port
        return image, None
    return name, tag


def set_images(resource: Resource, images: list[dict[str, str]]) -> None:
    pod = resource.get("spec", {}).get("template", {}).get("spec", {})
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        name, tag = _split_image(container["image"])
        for image in images:
            if image["name"] == name:
                name, tag = image.get("newName", name), image.get("newTag", tag)
        container["image"] = name if tag is None else f"{name}:{tag}"


def _identity(resource: Resource) -> tuple[str, str, str]:
    return resource["apiVersion"], resource["kind"], resource["metadata"]["name"]


def render(directory: Path) -> list[Resource]:
    """What ``kustomize build directory`` gives, for the features these files use."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text("utf-8"))
    unsupported = set(kustomization) - KUSTOMIZATION_FIELDS
    assert not unsupported, f"{directory}: render() does not implement {sorted(unsupported)}"
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        resources += render(path) if path.is_dir() else load_all(path)
    for entry in kustomization.get("patches", []):
        assert set(entry) == {"path"}, f"only file patches matched by kind and name: {entry}"
        for patch in load_all(directory / entry["path"]):
            (index,) = (i for i, r in enumerate(resources) if _identity(r) == _identity(patch))
            resources[index] = strategic_merge(resources[index], patch)
    for resource in resources:
        set_images(resource, kustomization.get("images", []))
    return resources


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.fixture(scope="module", params=sorted(OVERLAYS))
def overlay(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def rendered(overlay: str) -> dict[str, Resource]:
    """The overlay's resources by kind (one of each)."""
    resources = render(OVERLAYS[overlay])
    by_kind = {resource["kind"]: resource for resource in resources}
    assert len(by_kind) == len(resources), "one resource of each kind"
    return by_kind


def _by_identity(resources: list[Resource]) -> dict[tuple[str, str, str], Resource]:
    return {_identity(resource): resource for resource in resources}


def test_render_agrees_with_kustomize(overlay: str) -> None:
    command = kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed")
    output = subprocess.run(
        [*command, str(OVERLAYS[overlay])], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    theirs = _by_identity([doc for doc in yaml.safe_load_all(output) if doc])
    assert _by_identity(render(OVERLAYS[overlay])) == theirs


def test_render_merges_like_kustomize() -> None:
    """The merge rules, on their own: lists with a merge key merge, others are replaced."""
    base = {
        "containers": [{"name": "a", "env": [{"name": "X", "value": "1"}], "args": ["p"]}],
        "tolerations": [{"key": "t"}],
    }
    patch = {
        "containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}], "args": ["q"]}],
        "tolerations": [{"key": "u"}],
    }
    assert strategic_merge(base, patch) == {
        "containers": [
            {
                "name": "a",
                "env": [{"name": "Y", "value": "2"}, {"name": "X", "value": "1"}],
                "args": ["q"],
            }
        ],
        "tolerations": [{"key": "u"}],
    }
    assert _split_image("registry:5000/digits") == ("registry:5000/digits", None)
    assert _split_image("registry:5000/digits:cpu") == ("registry:5000/digits", "cpu")


# --- schemas ---------------------------------------------------------------------------------


def k8s_versions() -> list[str]:
    newest = kubernetes_validate.utils.latest_version()
    return [OLDEST_K8S, kubernetes_validate.utils.major_minor(newest)]


@pytest.mark.parametrize("version", k8s_versions())
def test_every_resource_follows_the_kubernetes_schema(
    rendered: dict[str, Resource], version: str
) -> None:
    assert set(rendered) == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
    }
    for resource in rendered.values():
        kubernetes_validate.validate(resource, version, strict=True)


def test_the_kubernetes_schema_check_can_fail(rendered: dict[str, Resource]) -> None:
    deployment = copy.deepcopy(rendered["Deployment"])
    container = _container(deployment)
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, OLDEST_K8S, strict=True)
    hpa = copy.deepcopy(rendered["HorizontalPodAutoscaler"])
    hpa["spec"]["minReplicas"] = "2"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, OLDEST_K8S, strict=True)


@pytest.fixture(scope="module")
def inference_service() -> Resource:
    (resource,) = load_all(INFERENCE_SERVICE)
    return resource


@pytest.fixture(scope="module")
def kserve_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(KSERVE_SCHEMA.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator: jsonschema.protocols.Validator = validator_class(schema)
    return validator


def _kserve_errors(validator: jsonschema.protocols.Validator, resource: Resource) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(resource)
    ]


def test_inference_service_follows_the_kserve_crd(
    inference_service: Resource, kserve_validator: jsonschema.protocols.Validator
) -> None:
    assert _kserve_errors(kserve_validator, inference_service) == []


def test_the_kserve_schema_check_can_fail(
    inference_service: Resource, kserve_validator: jsonschema.protocols.Validator
) -> None:
    broken = copy.deepcopy(inference_service)
    predictor = broken["spec"]["predictor"]
    predictor["scaleMetric"] = "gpu"
    predictor["protocolVersion"] = "v2"  # a field of model specs, not of a custom predictor
    predictor["containers"][0]["ports"][0]["containerPort"] = "8000"
    errors = _kserve_errors(kserve_validator, broken)
    assert any(e.startswith("spec/predictor/scaleMetric") for e in errors), errors
    assert any("protocolVersion" in e for e in errors), errors
    assert any(e.startswith("spec/predictor/containers/0/ports/0") for e in errors), errors


# --- the files agree with each other, the image and the service ------------------------------


def _pod(owner: Resource) -> dict[str, Any]:
    pod: dict[str, Any] = owner["spec"]["template"]["spec"]
    return pod


def _container(owner: Resource) -> dict[str, Any]:
    (container,) = _pod(owner)["containers"]
    assert isinstance(container, dict)
    return container


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


@pytest.fixture(scope="module")
def image() -> dockerfile.Dockerfile:
    return dockerfile.parse(DOCKERFILE)


@pytest.fixture(scope="module")
def image_env(image: dockerfile.Dockerfile) -> dict[str, str]:
    return image.stage(RUNTIME_STAGE).env(image.global_args, inherited={})


def _image_uid(image: dockerfile.Dockerfile) -> int:
    user = image.stage(RUNTIME_STAGE).last("USER")
    assert user is not None
    return int(user.arguments.split(":")[0])


def test_image_is_the_one_docker_builds(overlay: str, rendered: dict[str, Resource]) -> None:
    compose = compose_files.interpolate(compose_files.merge_files(COMPOSE_FOR[overlay]), {})
    assert _container(rendered["Deployment"])["image"] == compose["services"]["digits"]["image"]


def test_probes_are_routes_of_the_service(rendered: dict[str, Resource]) -> None:
    routes = {
        (route.path, method)
        for route in health_router.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    }
    container = _container(rendered["Deployment"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert (container[probe]["httpGet"]["path"], "GET") in routes, probe


def test_startup_probe_waits_as_long_as_the_image_healthcheck(
    rendered: dict[str, Resource], image: dockerfile.Dockerfile
) -> None:
    startup = _container(rendered["Deployment"])["startupProbe"]
    start_period = seconds(image.stage(RUNTIME_STAGE).healthcheck().options["start-period"])
    assert startup["periodSeconds"] * startup["failureThreshold"] >= start_period


def test_ports_agree(rendered: dict[str, Resource], image_env: dict[str, str]) -> None:
    container = _container(rendered["Deployment"])
    (port,) = container["ports"]
    assert port["containerPort"] == int(image_env["DIGITS_PORT"])
    assert _env(container)["DIGITS_PORT"] == str(port["containerPort"])
    assert _env(container)["DIGITS_HOST"] == "0.0.0.0"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == port["name"]
    (service_port,) = rendered["Service"]["spec"]["ports"]
    assert service_port["name"] == "http" and service_port["port"] == port["containerPort"]
    assert service_port["targetPort"] in (port["name"], port["containerPort"])


def test_selectors_pick_the_deployments_pods(rendered: dict[str, Resource]) -> None:
    deployment = rendered["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "Service": rendered["Service"]["spec"]["selector"],
        "PodDisruptionBudget": rendered["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selector and selector.items() <= pod_labels.items(), kind


def test_autoscaler_and_disruption_budget(rendered: dict[str, Resource]) -> None:
    deployment, hpa = rendered["Deployment"], rendered["HorizontalPodAutoscaler"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == _identity(deployment)
    assert "replicas" not in deployment["spec"], "the HPA owns the count"
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert "cpu" in _container(deployment)["resources"]["requests"]  # utilisation is of this
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60
    budget = rendered["PodDisruptionBudget"]["spec"]
    # At the HPA's minimum, a drain may take one pod and leaves one serving.
    if "maxUnavailable" in budget:
        assert budget["maxUnavailable"] == 1
    else:
        assert 1 <= budget["minAvailable"] < hpa["spec"]["minReplicas"]


def test_hardened_like_the_compose_service(
    rendered: dict[str, Resource], image: dockerfile.Dockerfile
) -> None:
    pod = _pod(rendered["Deployment"])
    container = _container(rendered["Deployment"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == _image_uid(image)
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # DIGITS_PORT=tcp://... from a Service named digits would break the service's settings.
    assert pod["enableServiceLinks"] is False
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_models_come_from_the_claim(rendered: dict[str, Resource]) -> None:
    pod = _pod(rendered["Deployment"])
    container = _container(rendered["Deployment"])
    (mount,) = (m for m in container["volumeMounts"] if m["name"] != "tmp")
    assert mount["mountPath"] == _env(container)["DIGITS_MODEL_DIR"] and mount["readOnly"]
    (volume,) = (v for v in pod["volumes"] if v["name"] == mount["name"])
    claim = rendered["PersistentVolumeClaim"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert volume["persistentVolumeClaim"]["readOnly"] is True
    # Pods on several nodes mount it: not ReadWriteOnce.
    assert set(claim["spec"]["accessModes"]) & {"ReadWriteMany", "ReadOnlyMany"}


def test_termination_grace_covers_the_drain(rendered: dict[str, Resource]) -> None:
    pod = _pod(rendered["Deployment"])
    container = _container(rendered["Deployment"])
    env = _env(container)
    delay_s = float(env["DIGITS_DRAIN_DELAY_S"])
    assert delay_s >= 5  # endpoint removal takes seconds to reach every proxy
    needed = delay_s + float(env["DIGITS_SHUTDOWN_GRACE_S"]) + EXIT_MARGIN_S
    assert pod["terminationGracePeriodSeconds"] >= needed
    assert "lifecycle" not in container  # the service drains by itself: no preStop sleep


def test_the_service_accepts_the_environment(
    rendered: dict[str, Resource], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every DIGITS_* variable set is a setting, with a value the service takes."""
    for name in list(os.environ):
        if name.startswith("DIGITS_"):
            monkeypatch.delenv(name)
    env = _env(_container(rendered["Deployment"]))
    for name, value in env.items():
        assert name.startswith("DIGITS_"), name
        field = name.removeprefix("DIGITS_").lower()
        assert field in Settings.model_fields, name
        monkeypatch.setenv(name, value)
    settings = Settings()  # refuses a bad value, as the service does at start
    assert settings.port == 8000 and settings.host == "0.0.0.0"
    assert settings.drain_delay_s == float(env["DIGITS_DRAIN_DELAY_S"])


def test_gpu_overlay_asks_for_one_nvidia_gpu(overlay: str, rendered: dict[str, Resource]) -> None:
    pod = _pod(rendered["Deployment"])
    container = _container(rendered["Deployment"])
    limits = container["resources"]["limits"]
    if overlay == "cpu":
        assert "nvidia.com/gpu" not in limits
        assert "DIGITS_DEVICE" not in _env(container)  # the image's auto
        return
    assert limits["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"].get("nvidia.com/gpu", 1) == 1
    assert _env(container)["DIGITS_DEVICE"] == "cuda"
    assert pod["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    # compose.gpu.yaml's batching, and the base's other settings kept by the merge.
    gpu_env = compose_files.load(COMPOSE_GPU)["services"]["digits"]["environment"]
    for name in ("DIGITS_MAX_BATCH_SIZE", "DIGITS_MAX_WAIT_MS"):
        assert _env(container)[name] == gpu_env[name]
    assert "DIGITS_DRAIN_DELAY_S" in _env(container)


# --- the InferenceService --------------------------------------------------------------------


def test_inference_service_runs_the_deployments_pod(
    inference_service: Resource, image: dockerfile.Dockerfile, image_env: dict[str, str]
) -> None:
    deployment = next(r for r in render(OVERLAYS["cpu"]) if r["kind"] == "Deployment")
    pod, container = _pod(deployment), _container(deployment)
    predictor = inference_service["spec"]["predictor"]
    (kserve,) = predictor["containers"]
    annotations = inference_service["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] in ("RawDeployment", "Standard")

    env = _env(kserve)
    assert env.pop("PROTOCOL") == "v2"  # KServe's key for a custom predictor's protocol
    assert env.items() <= _env(container).items()
    assert kserve["image"] == container["image"]
    (port,) = kserve["ports"]
    assert port["containerPort"] == int(image_env["DIGITS_PORT"]) == int(env["DIGITS_PORT"])
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        ours, theirs = dict(kserve[probe]), dict(container[probe])
        assert ours.pop("httpGet") == {"path": theirs.pop("httpGet")["path"], "port": 8000}
        assert ours == theirs, probe
    assert kserve["securityContext"] == container["securityContext"]
    assert kserve["resources"] == container["resources"]
    assert kserve["volumeMounts"] == container["volumeMounts"]
    assert predictor["volumes"] == pod["volumes"]
    for field in ("securityContext", "terminationGracePeriodSeconds", "enableServiceLinks"):
        assert predictor[field] == pod[field], field
    hpa = next(r for r in render(OVERLAYS["cpu"]) if r["kind"] == "HorizontalPodAutoscaler")
    assert predictor["minReplicas"] == hpa["spec"]["minReplicas"]
    assert predictor["maxReplicas"] == hpa["spec"]["maxReplicas"]
    assert predictor["scaleMetric"] == "cpu"
