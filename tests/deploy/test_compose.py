"""The compose files: valid by the Compose Specification, alone and merged, and in step with
the Dockerfile, nginx.conf and each other."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from . import compose_files, dockerfile, nginx_conf
from .compose_files import interpolate, merge_files, schema_errors, seconds
from .layout import (
    COMPOSE_BASE,
    COMPOSE_GPU,
    COMPOSE_SCALE,
    DOCKER_DIR,
    DOCKERFILE,
    NGINX_CONF,
    REPO_ROOT,
    RUNTIME_STAGE,
    TRAIN_STAGE,
)

ALL_FILES = [COMPOSE_BASE, COMPOSE_GPU, COMPOSE_SCALE]
COMBINATIONS = {
    "cpu": [COMPOSE_BASE],
    "gpu": [COMPOSE_BASE, COMPOSE_GPU],
    "scale": [COMPOSE_BASE, COMPOSE_SCALE],
    "gpu+scale": [COMPOSE_BASE, COMPOSE_GPU, COMPOSE_SCALE],
}
#: Time the process needs after the drain to close the event loop and exit.
EXIT_MARGIN_S = 5.0


def effective(paths: list[Path]) -> dict[str, Any]:
    """What ``docker compose -f ... config`` shows with none of the DEPLOY_* variables set."""
    config: dict[str, Any] = interpolate(merge_files(paths), environ={})
    return config


@pytest.fixture(scope="module")
def image() -> dockerfile.Dockerfile:
    return dockerfile.parse(DOCKERFILE)


@pytest.fixture(scope="module")
def runtime_env(image: dockerfile.Dockerfile) -> dict[str, str]:
    return image.stage(RUNTIME_STAGE).env(image.global_args, inherited={})


# --- the specification -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_each_file_alone_follows_the_compose_specification(path: Path) -> None:
    assert schema_errors(compose_files.load(path)) == []


@pytest.mark.parametrize("files", COMBINATIONS.values(), ids=COMBINATIONS.keys())
def test_each_combination_follows_the_compose_specification(files: list[Path]) -> None:
    assert schema_errors(merge_files(files)) == []
    assert schema_errors(effective(files)) == []


def test_the_schema_check_can_fail() -> None:
    document = compose_files.load(COMPOSE_BASE)
    document["services"]["digits"]["restart"] = ["always"]
    document["services"]["digits"]["healthcheck"]["intervall"] = "5s"
    errors = schema_errors(document)
    assert any("services/digits/restart" in error for error in errors), errors
    assert any("intervall" in error for error in errors), errors


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_environment_is_a_mapping(path: Path) -> None:
    """Mappings merge key by key across files; a list form would be merged differently."""
    for name, service in compose_files.load(path)["services"].items():
        assert isinstance(service.get("environment", {}), dict), name


# --- compose.yaml: serve on the CPU ------------------------------------------------------------


def test_service_is_built_from_the_runtime_target(image: dockerfile.Dockerfile) -> None:
    config = effective([COMPOSE_BASE])
    for name, target in (("digits", RUNTIME_STAGE), ("train", TRAIN_STAGE)):
        build = config["services"][name]["build"]
        context = (DOCKER_DIR / build["context"]).resolve()
        assert context == REPO_ROOT
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE
        assert build["target"] == target
        assert target in image.stages
        assert build["args"]["TORCH_FLAVOUR"] == "cpu"


def test_service_publishes_the_port_the_image_listens_on(runtime_env: dict[str, str]) -> None:
    digits = effective([COMPOSE_BASE])["services"]["digits"]
    assert digits["ports"] == [f"8000:{runtime_env['DIGITS_PORT']}"]
    assert "DIGITS_PORT" not in digits["environment"], "the image's port is the one published"
    assert "DIGITS_HOST" not in digits["environment"], "the image already listens on 0.0.0.0"


def test_service_healthcheck_is_the_images(image: dockerfile.Dockerfile) -> None:
    healthcheck = effective([COMPOSE_BASE])["services"]["digits"]["healthcheck"]
    from_image = image.stage(RUNTIME_STAGE).healthcheck()
    assert healthcheck["test"] == ["CMD", *from_image.command]
    for option, value in from_image.options.items():
        key = option.replace("-", "_")
        assert str(healthcheck[key]) == value, f"{key}: compose and Dockerfile disagree"


def test_service_restarts_and_is_limited_and_hardened() -> None:
    digits = effective([COMPOSE_BASE])["services"]["digits"]
    assert digits["restart"] == "unless-stopped"
    limits = digits["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) > 0
    assert limits["memory"].endswith(("m", "g"))
    assert digits["read_only"] is True
    assert digits["cap_drop"] == ["ALL"]


def test_stop_grace_period_covers_the_drain() -> None:
    for files in COMBINATIONS.values():
        digits = effective(files)["services"]["digits"]
        environment = digits["environment"]
        drain_s = float(environment["DIGITS_DRAIN_DELAY_S"])
        drain_s += float(environment["DIGITS_SHUTDOWN_GRACE_S"])
        assert seconds(digits["stop_grace_period"]) >= drain_s + EXIT_MARGIN_S
        assert digits["stop_signal"] == "SIGTERM"


def test_models_come_from_a_read_only_bind_mount(runtime_env: dict[str, str]) -> None:
    digits = effective([COMPOSE_BASE])["services"]["digits"]
    (mount,) = [v for v in digits["volumes"] if v["target"] == runtime_env["DIGITS_MODEL_DIR"]]
    assert mount["type"] == "bind"
    assert mount["read_only"] is True
    assert (DOCKER_DIR / mount["source"]).resolve() == REPO_ROOT / "models"


def test_api_keys_are_passed_through_never_written_down() -> None:
    for path in ALL_FILES:
        for service in compose_files.load(path)["services"].values():
            environment = service.get("environment", {})
            if "DIGITS_API_KEYS" in environment:
                assert environment["DIGITS_API_KEYS"] is None


# --- the trainer -----------------------------------------------------------------------------


def test_trainer_is_a_profile_that_writes_where_the_service_reads(
    image: dockerfile.Dockerfile,
) -> None:
    services = effective([COMPOSE_BASE])["services"]
    train, digits = services["train"], services["digits"]
    assert train["profiles"] == ["train"]
    assert "profiles" not in digits, "`up` with no profile starts the service"
    command = image.stage(TRAIN_STAGE).exec_form("CMD")
    option = {flag: command[command.index(flag) + 1] for flag in command if flag.startswith("--")}
    mounts = {volume["target"]: volume for volume in train["volumes"]}
    data_dir, out_dir = option["--data-dir"], option["--out"]
    assert mounts[data_dir]["read_only"] is True
    assert not mounts[out_dir].get("read_only", False)
    # Scratch lives in a named volume, so that a later run can --resume from it.
    for scratch in (option["--cache-dir"], option["--runs-dir"]):
        (holder,) = [t for t in mounts if scratch.startswith(t + "/")]
        assert mounts[holder]["type"] == "volume"
    served = next(v for v in digits["volumes"] if v["target"] == "/app/models")
    assert mounts[out_dir]["source"] == served["source"], "trained packages are not served"


# --- compose.gpu.yaml ------------------------------------------------------------------------


@pytest.mark.parametrize("combination", ["gpu", "gpu+scale"])
def test_gpu_variant_reserves_an_nvidia_gpu_and_insists_on_it(combination: str) -> None:
    cpu = effective(COMBINATIONS["cpu"])["services"]
    gpu = effective(COMBINATIONS[combination])["services"]
    for name in ("digits", "train"):
        devices = gpu[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
        assert gpu[name]["build"]["args"]["TORCH_FLAVOUR"] == "cuda"
        # Distinct tags, so that building one flavour never replaces the other.
        assert gpu[name]["image"] != cpu[name]["image"]
    assert gpu["digits"]["environment"]["DIGITS_DEVICE"] == "cuda"
    # Everything else still comes from compose.yaml.
    assert gpu["digits"]["volumes"] == cpu["digits"]["volumes"]
    assert gpu["digits"]["healthcheck"] == cpu["digits"]["healthcheck"]


# --- compose.scale.yaml ----------------------------------------------------------------------


@pytest.mark.parametrize("combination", ["scale", "gpu+scale"])
def test_scaled_variant_puts_replicas_behind_one_published_port(
    combination: str, runtime_env: dict[str, str]
) -> None:
    services = effective(COMBINATIONS[combination])["services"]
    digits, nginx = services["digits"], services["nginx"]
    assert "ports" not in digits, "replicas cannot all publish the same host port"
    assert int(digits["deploy"]["replicas"]) >= 2
    # Reloading through the balancer reaches one replica: each re-scans by itself instead.
    assert float(digits["environment"]["DIGITS_RELOAD_INTERVAL_S"]) > 0
    assert nginx["ports"] == [f"8000:{nginx_directive('listen')}"]
    assert nginx["depends_on"] == {"digits": {"condition": "service_healthy"}}
    assert nginx["restart"] == "unless-stopped"
    # nginx.conf is mounted as a template that the image's entrypoint renders into the output
    # folder, with the container's name servers and nothing else, and nginx reads the result.
    (conf,) = [v for v in nginx["volumes"] if v["source"].endswith("nginx.conf")]
    assert (DOCKER_DIR / conf["source"]).resolve() == NGINX_CONF
    assert conf["target"] == "/etc/nginx/templates/nginx.conf.template"
    assert conf["read_only"] is True
    environment = nginx["environment"]
    assert environment["NGINX_ENVSUBST_FILTER"] == f"^{nginx_conf.TEMPLATE_VARIABLE}$"
    # The script that sets the variable, where the entrypoint sources it before rendering.
    (resolver,) = [v for v in nginx["volumes"] if v["source"].endswith("nginx-resolver.envsh")]
    assert resolver["target"] == "/docker-entrypoint.d/15-digits-resolver.envsh"
    assert os.access(DOCKER_DIR / "nginx-resolver.envsh", os.X_OK), "the entrypoint skips it"
    rendered = f"{environment['NGINX_ENVSUBST_OUTPUT_DIR']}/nginx.conf"
    assert nginx["command"][:3] == ["nginx", "-c", rendered]
    assert any(mount == environment["NGINX_ENVSUBST_OUTPUT_DIR"] for mount in nginx["tmpfs"])
    # nginx finishes what it proxies before it stops.
    assert seconds(nginx["stop_grace_period"]) > seconds(nginx_directive("proxy_read_timeout"))


def test_nginx_upstream_is_the_service(runtime_env: dict[str, str]) -> None:
    host_port = nginx_directive("server").split()[0]
    assert host_port == f"digits:{runtime_env['DIGITS_PORT']}"
    assert "digits" in effective(COMBINATIONS["scale"])["services"]


def test_nginx_body_limit_is_the_services() -> None:
    for combination in ("scale", "gpu+scale"):
        digits = effective(COMBINATIONS[combination])["services"]["digits"]
        limit = int(digits["environment"]["DIGITS_MAX_BODY_BYTES"])
        assert nginx_conf.size_bytes(nginx_directive("client_max_body_size")) == limit


def test_nginx_waits_longer_than_the_service_does() -> None:
    digits = effective(COMBINATIONS["scale"])["services"]["digits"]
    request_timeout_s = int(digits["environment"]["DIGITS_REQUEST_TIMEOUT_MS"]) / 1000
    assert seconds(nginx_directive("proxy_read_timeout")) > request_timeout_s


def test_nginx_drops_a_leaving_replica_before_it_stops_serving() -> None:
    digits = effective(COMBINATIONS["scale"])["services"]["digits"]
    drain_delay_s = float(digits["environment"]["DIGITS_DRAIN_DELAY_S"])
    resolver = nginx_directive("resolver").split()
    (valid,) = [word.removeprefix("valid=") for word in resolver if word.startswith("valid=")]
    assert seconds(valid) < drain_delay_s


def nginx_directive(name: str) -> str:
    """The value of the one ``name`` directive in nginx.conf."""
    values = nginx_conf.directives(nginx_conf.render(NGINX_CONF.read_text(encoding="utf-8")), name)
    assert len(values) == 1, f"{name}: {values}"
    return values[0]
