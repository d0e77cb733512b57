"""The service image run as a plain container, hardened as compose runs it: what it is made
of, who it runs as, what it answers, its health check, and how it stops."""

from __future__ import annotations

import fnmatch
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from .conftest import FIGURES, port, save_log
from .engine import Engine
from .images import BuiltImages
from .service_checks import assert_predicts, assert_reads, selftest_picture, wait_ready

pytestmark = pytest.mark.container

#: The drain as the service is told here: /readyz 503 for this long while it still serves,
#: then at most the grace for what it admitted, then exit 0.
DRAIN_DELAY_S = 3
SHUTDOWN_GRACE_S = 10
#: The exit may take this much beyond the two (batchers stopping, the interpreter exiting).
EXIT_MARGIN_S = 9
SERVICE_UID = "10001"


@dataclass(frozen=True)
class RunningContainer:
    name: str
    base_url: str


@pytest.fixture(scope="module")
def container(engine: Engine, images: BuiltImages) -> Iterator[RunningContainer]:
    # A fixed name: one that a killed session left is removed here first.
    name = "digits-container-test-run"
    published = port("run")
    engine.attempt("rm", "--force", "--volumes", name)
    base_url = f"http://127.0.0.1:{published}"
    try:
        engine(
            "run",
            "--detach",
            "--name",
            name,
            # As compose.yaml runs it: nothing writable but /tmp, no capability, no new
            # privileges.
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--publish",
            f"127.0.0.1:{published}:8000",
            "--env",
            f"DIGITS_DRAIN_DELAY_S={DRAIN_DELAY_S}",
            "--env",
            f"DIGITS_SHUTDOWN_GRACE_S={SHUTDOWN_GRACE_S}",
            images.runtime,
        )
        ready_s = wait_ready(base_url, engine, [name])
        FIGURES["plain container: seconds to ready"] = round(ready_s, 1)
        yield RunningContainer(name, base_url)
    finally:
        save_log("plain-container", lambda: engine("logs", name, check=False))
        engine.attempt("rm", "--force", "--volumes", name)
    assert not engine.exists("container", name), f"{name} left behind"


def in_container(engine: Engine, name: str, *command: str) -> str:
    return engine("exec", name, *command).stdout.strip()


def test_runtime_image_carries_what_serving_needs_and_nothing_of_the_build(
    engine: Engine, images: BuiltImages
) -> None:
    config = engine.inspect("image", images.runtime)["Config"]
    assert config["User"] == f"{SERVICE_UID}:{SERVICE_UID}"
    assert config["Cmd"] == ["python", "-m", "service"]
    labels = config["Labels"]
    assert labels["io.digits.torch-flavour"] == images.flavour
    assert len(labels["org.opencontainers.image.revision"]) == 40
    # Not torchvision nor the training extras, and nothing of the build machine's pip settings
    # (podman leaves an empty mount point where each was mounted: empty, it carries nothing).
    mounted = [mount.split(":")[1] for mount in images.build_mounts]
    probe = (
        "import importlib.util, json, os, sys; "
        "print(json.dumps({"
        "'absent': [m for m in ('torchvision', 'matplotlib', 'tqdm', 'pytest') "
        "if importlib.util.find_spec(m) is None], "
        "'present': [m for m in ('torch', 'cv2', 'fastapi', 'service') "
        "if importlib.util.find_spec(m) is not None], "
        "'build files': [p for p in sys.argv[1:] if not p.startswith('/etc/ssl/') and "
        "(os.path.getsize(p) if os.path.isfile(p) else len(os.listdir(p)) if os.path.isdir(p) "
        "else 0)]}))"
    )
    # What the flavour must not carry: Triton (torch.compile's, never the service's) in either,
    # and no CUDA library at all in the CPU one.
    unneeded = ["triton"] if images.flavour == "cuda" else ["triton", "nvidia-*", "cuda-*"]
    distributions = engine(
        "run",
        "--rm",
        "--entrypoint",
        "python",
        images.runtime,
        "-m",
        "pip",
        "list",
        "--format",
        "json",
    ).stdout
    names = [entry["name"].lower() for entry in json.loads(distributions)]
    assert not [n for n in names if any(fnmatch.fnmatch(n, u) for u in unneeded)], names
    found = json.loads(
        engine("run", "--rm", "--entrypoint", "python", images.runtime, "-c", probe, *mounted)
        .stdout.strip()
        .splitlines()[-1]
    )
    assert found["absent"] == ["torchvision", "matplotlib", "tqdm", "pytest"], found
    assert found["present"] == ["torch", "cv2", "fastapi", "service"], found
    assert found["build files"] == [], found


def test_runs_as_the_unprivileged_user_on_a_read_only_root(
    engine: Engine, container: RunningContainer
) -> None:
    assert in_container(engine, container.name, "id", "-u") == SERVICE_UID
    write = engine("exec", container.name, "python", "-c", "open('/app/written', 'w')", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr, write.stderr
    # /tmp is the one writable place (a tmpfs), as the service needs.
    in_container(engine, container.name, "python", "-c", "open('/tmp/written', 'w').write('x')")


def test_predicts_and_reads(container: RunningContainer) -> None:
    with httpx.Client(base_url=container.base_url, timeout=30.0) as client:
        FIGURES["plain container: pictures read right"] = assert_predicts(client)
        FIGURES["plain container: number read right"] = assert_reads(client)
        models = client.get("/models")
        assert models.status_code == 200
        assert "default" in {model["name"] for model in models.json()["models"]}


def test_health_check_command_passes(
    engine: Engine, images: BuiltImages, container: RunningContainer
) -> None:
    """The image's own HEALTHCHECK command, as the engine runs it, inside the container."""
    image = engine.inspect("image", images.runtime)
    # Docker keeps it in Config; podman (docker format) beside it.
    health = image["Config"].get("Healthcheck") or image.get("Healthcheck")
    assert health, "the image has no HEALTHCHECK"
    kind, *command = health["Test"]
    assert kind == "CMD", health
    result = engine("exec", container.name, *command, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ready:"), result.stdout
    if engine.name == "podman":
        assert engine("healthcheck", "run", container.name).stdout.strip() in ("", "healthy")


def test_sigterm_drains_then_exits_zero_within_the_grace(
    engine: Engine, container: RunningContainer
) -> None:
    """SIGTERM: /readyz turns 503 at once while /predict is still answered (the drain), and the
    process exits 0 before a supervisor's grace period would kill it. Runs last here."""
    picture = selftest_picture(7).body
    exited = threading.Event()
    exit_code: list[str] = []

    def wait_for_exit() -> None:
        exit_code.append(engine("wait", container.name, timeout_s=120).stdout.strip())
        exited.set()

    with httpx.Client(base_url=container.base_url, timeout=10.0) as client:
        assert client.get("/readyz").status_code == 200
        waiter = threading.Thread(target=wait_for_exit, daemon=True)
        waiter.start()
        signalled = time.monotonic()
        engine("kill", "--signal", "TERM", container.name)
        # The signal is delivered asynchronously: /readyz turns within a moment.
        not_ready = client.get("/readyz")
        while not_ready.status_code == 200 and time.monotonic() - signalled < 1.0:
            not_ready = client.get("/readyz")
        answered = client.post("/predict", content=picture)
        assert time.monotonic() - signalled < DRAIN_DELAY_S, "the checks took the whole drain"
    assert not_ready.status_code == 503, not_ready.text
    assert answered.status_code == 200 and answered.json()["digit"] == 7, answered.text
    grace_s = DRAIN_DELAY_S + SHUTDOWN_GRACE_S + EXIT_MARGIN_S
    assert exited.wait(grace_s), f"still running {grace_s} s after SIGTERM"
    FIGURES["plain container: seconds from SIGTERM to exit"] = round(
        time.monotonic() - signalled, 1
    )
    assert exit_code == ["0"], exit_code
