"""The compose files, run for real: compose.yaml up, ready, predict, down; compose.scale.yaml
with three replicas behind nginx; the trainer's dry run writing a package into the models
folder. Each project is taken down with its volumes, and whatever it left is removed, even
when a check fails."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.packages.card import ModelCard
from tests.deploy.layout import COMPOSE_BASE, COMPOSE_SCALE

from .conftest import FIGURES, port, save_log
from .engine import Engine, EngineError, HealthTimer
from .images import BuiltImages
from .service_checks import assert_predicts, assert_reads, selftest_picture, wait_ready

pytestmark = pytest.mark.container

LOG = logging.getLogger(__name__)

REPLICAS = 3
#: nginx.conf: the resolver's `valid` (5 s) plus a replica's fail_timeout (5 s): after this,
#: nginx sends nothing more to a replica that died.
NGINX_NOTICES_S = 10.0
#: compose up: replicas loading and warming on two cores (compose waits for them to be
#: healthy before it starts nginx).
UP_TIMEOUT_S = 480.0
DOWN_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Project:
    """One compose project of the checks: its files, name and DEPLOY_* variables."""

    engine: Engine
    name: str
    files: tuple[Path, ...]
    env: dict[str, str]

    def compose(self, *args: str, timeout_s: float = 300.0) -> str:
        return self.engine.compose(
            self.files, self.name, *args, env=self.env, timeout_s=timeout_s
        ).stdout

    def containers(self, service: str) -> list[str]:
        return self.compose("ps", "--quiet", service).split()


def deploy_env(images: BuiltImages, **more: str) -> dict[str, str]:
    """The DEPLOY_* variables every project here sets: the images that were built, and the
    MNIST folder (DIGITS_DATA_DIR, as ``make container-test`` sets it)."""
    data_dir = os.environ.get("DIGITS_DATA_DIR")
    assert data_dir and Path(data_dir).is_dir(), "set DIGITS_DATA_DIR to the MNIST folder"
    return {
        "DEPLOY_FLAVOUR": images.flavour,
        "DEPLOY_NGINX_IMAGE": images.nginx,
        "DEPLOY_DATA_DIR": str(Path(data_dir).resolve()),
        **more,
    }


@contextmanager
def project(
    engine: Engine, name: str, files: tuple[Path, ...], env: dict[str, str]
) -> Iterator[Project]:
    """A compose project, cleaned up before and after, with its logs kept in runs/. After a
    check that passed, the project must have left nothing behind."""
    running = Project(engine, name, files, env)
    engine.remove_project(name)
    passed = False
    try:
        yield running
        passed = True
    finally:
        save_log(name, lambda: engine.compose(files, name, "logs", "--no-color", env=env))
        try:
            engine.compose(
                files,
                name,
                *("down", "--volumes", "--remove-orphans", "--timeout", "30"),
                env=env,
                check=False,
                timeout_s=DOWN_TIMEOUT_S,
            )
        except EngineError as error:
            LOG.warning("compose down: %s", error)
        left = engine.project_resources(name)
        engine.remove_project(name)
    # Not in `finally`: a failed check's own error is the one to see.
    if passed:
        assert left == {"containers": [], "networks": [], "volumes": []}, left


def up(running: Project) -> float:
    """``compose up --detach`` with health checks running (podman); seconds it took."""
    started = time.monotonic()
    with HealthTimer(running.engine, running.name):
        running.compose("up", "--detach", "--no-build", timeout_s=UP_TIMEOUT_S)
    return time.monotonic() - started


def health(engine: Engine, container: str) -> str:
    state = engine.inspect("container", container)["State"]
    return str((state.get("Health") or state.get("Healthcheck") or {}).get("Status"))


def test_compose_up_ready_predict_down(engine: Engine, images: BuiltImages) -> None:
    published = port("compose")
    env = deploy_env(images, DEPLOY_PORT=str(published))
    with project(engine, "digits-container-test", (COMPOSE_BASE,), env) as running:
        started = time.monotonic()
        up(running)
        base_url = f"http://127.0.0.1:{published}"
        (container,) = running.containers("digits")
        with HealthTimer(engine, running.name):
            wait_ready(base_url, engine, [container])
            FIGURES["compose: seconds from up to ready"] = round(time.monotonic() - started, 1)
            deadline = time.monotonic() + 30
            while health(engine, container) != "healthy" and time.monotonic() < deadline:
                time.sleep(1)
            assert health(engine, container) == "healthy"
        settings = engine.inspect("container", container)["HostConfig"]
        assert settings["ReadonlyRootfs"] is True
        assert settings["Memory"] == 2 * 1024**3
        with httpx.Client(base_url=base_url, timeout=30.0) as client:
            assert_predicts(client)
            assert_reads(client)


def test_scaled_replicas_behind_nginx(engine: Engine, images: BuiltImages) -> None:
    published = port("scale")
    env = deploy_env(images, DEPLOY_PORT=str(published), DEPLOY_REPLICAS=str(REPLICAS))
    files = (COMPOSE_BASE, COMPOSE_SCALE)
    with project(engine, "digits-container-test-scale", files, env) as running:
        FIGURES["scaled: seconds for compose up (3 replicas healthy, then nginx)"] = round(
            up(running), 1
        )
        replicas = running.containers("digits")
        assert len(replicas) == REPLICAS
        base_url = f"http://127.0.0.1:{published}"
        wait_ready(base_url, engine, [*replicas, *running.containers("nginx")], timeout_s=60)
        picture = selftest_picture(7).body
        with httpx.Client(base_url=base_url, timeout=30.0) as client:
            assert_predicts(client)
            # Every replica answers some: nginx's access log names the upstream of each.
            for _ in range(30):
                assert client.post("/predict", content=picture).status_code == 200
            addresses = {replica_address(engine, replica) for replica in replicas}
            assert upstreams_in_log(running) == addresses

            refused = client.post("/models/reload")
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "forbidden"

            # One replica dies. After nginx notices, no request fails.
            engine("kill", "--signal", "KILL", replicas[0])
            killed = time.monotonic()
            during = predict_many(client, picture, until=killed + NGINX_NOTICES_S)
            after = predict_many(client, picture, count=60)
            FIGURES["scaled: answers while nginx noticed the kill (status: count)"] = during
            FIGURES["scaled: answers after (status: count)"] = after
            assert after == {200: 60}, after


def replica_address(engine: Engine, container: str) -> str:
    networks = engine.inspect("container", container)["NetworkSettings"]["Networks"]
    (network,) = networks.values()
    return f"{network['IPAddress']}:8000"


def upstreams_in_log(running: Project) -> set[str]:
    """The replica addresses in nginx's JSON access log that answered /predict."""
    lines = running.compose("logs", "--no-color", "--no-log-prefix", "nginx").splitlines()
    entries = [json.loads(line) for line in lines if line.startswith('{"time"')]
    # A retried request names each replica it tried ("a:8000, b:8000"): the last answered.
    return {
        entry["upstream_addr"].split(", ")[-1]
        for entry in entries
        if entry["uri"] == "/predict" and entry["status"] == 200
    }


def predict_many(
    client: httpx.Client, picture: bytes, *, count: int = 0, until: float = 0.0
) -> dict[int, int]:
    """Statuses of /predict sent four at a time: ``count`` of them, or until ``until``."""
    statuses: dict[int, int] = {}

    def one(_: int) -> int:
        try:
            return client.post("/predict", content=picture).status_code
        except httpx.TransportError:
            return 0  # no HTTP answer at all

    with ThreadPoolExecutor(max_workers=4) as pool:
        while True:
            for status in pool.map(one, range(4)):
                statuses[status] = statuses.get(status, 0) + 1
            sent = sum(statuses.values())
            if (count and sent >= count) or (not count and time.monotonic() >= until):
                return statuses


def test_trainer_dry_run_writes_a_package(
    engine: Engine, images: BuiltImages, tmp_path_factory: pytest.TempPathFactory
) -> None:
    models = tmp_path_factory.mktemp("container-models")
    # The trainer runs as UID 10001 (DEPLOY_UID's default): the folder must be theirs to write.
    models.chmod(0o777)
    # COMPOSE_PROFILES: every compose command of the project, `down` too, includes the
    # trainer (and so removes its volume).
    env = deploy_env(images, DEPLOY_MODELS_DIR=str(models), COMPOSE_PROFILES="train")
    name = "digits-container-test-train"
    with project(engine, name, (COMPOSE_BASE,), env) as running:
        started = time.monotonic()
        # Not --rm: with it, compose against podman 4.3 reports exit 0 whatever the trainer's
        # status. The named container goes with the project's `down` (project()).
        running.compose(
            "run",
            "--name",
            f"{name}-run",
            "--no-TTY",
            "train",
            "train",
            "--arch",
            "lenet5",
            "--dry-run",
            "--data-dir",
            "/data",
            "--out",
            "/models",
            "--cache-dir",
            "/workspace/cache",
            "--runs-dir",
            "/workspace/runs",
            timeout_s=900,
        )
        FIGURES["trainer: seconds for the dry run"] = round(time.monotonic() - started, 1)
        (card_file,) = models.glob("lenet5/*/metadata.json")
        card = ModelCard.model_validate_json(card_file.read_text(encoding="utf-8"))
        assert card.name == "lenet5"
        assert (card_file.parent / "model.pt").stat().st_size > 0
        # The scratch volume exists until `down --volumes` (checked by project()).
        volumes = engine("volume", "ls", "--format", "{{.Name}}").stdout.split()
        assert f"{name}_train-workspace" in volumes
