"""Building the images the checks run: the service (``runtime``) and the trainer (``train``).

- **Base images.** ``python:3.11-slim-bookworm`` and, for the scaled variant, nginx come
  from the registry when the engine has them or can pull them; otherwise
  docker/standin/build-images.sh makes stand-ins of both from Debian's packages. The build is
  given ``PYTHON_IMAGE`` by its full name either way.
- **Package index.** Where this machine reaches Python packages only through pip settings of
  its own (a mirror, a CA bundle), those files are mounted into the build, read-only, for
  podman (``podman build --volume``; Docker's builder has no such option): the pip
  configuration files that ``pip config debug`` lists, and every existing path their values
  name (a ``file://.../simple`` index is mounted with the folder above it, where the index's
  relative links lead). Nothing of them is baked in: the runtime image copies only the
  virtual environment out of the build stages, and a check reads the image for them.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from tests.deploy.layout import DOCKER_DIR, DOCKERFILE, REPO_ROOT, RUNTIME_STAGE, TRAIN_STAGE

from .engine import Engine, EngineError

LOG = logging.getLogger(__name__)

# Fully qualified: podman would take a short name for the local stand-in of the same name.
PYTHON_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
NGINX_IMAGE = "docker.io/nginxinc/nginx-unprivileged:1.28-alpine"
STANDIN_PYTHON_IMAGE = "localhost/python:3.11-slim-bookworm"
STANDIN_NGINX_IMAGE = "localhost/nginx-unprivileged:standin"
STANDIN_SCRIPT = DOCKER_DIR / "standin" / "build-images.sh"
#: A clean build of the CUDA flavour's runtime image takes about 5 minutes here, the stand-ins
#: under 2: far more means a hang. Together under make container-test's --timeout.
BUILD_TIMEOUT_S = 1200.0
STANDIN_TIMEOUT_S = 600.0
PULL_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class BuiltImages:
    """What was built, how, and what it weighs."""

    flavour: str
    runtime: str
    train: str
    #: The nginx image for compose.scale.yaml (DEPLOY_NGINX_IMAGE).
    nginx: str
    standin: bool
    build_mounts: tuple[str, ...]
    seconds: dict[str, float] = field(default_factory=dict)
    size_bytes: dict[str, int] = field(default_factory=dict)


def pip_build_mounts() -> list[str]:
    """``SOURCE:TARGET:ro`` volumes that carry this machine's pip settings into a build."""
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "debug"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    files = re.findall(r"^\s+(/\S+), exists: True$", listing, flags=re.M)
    values = re.findall(r"^\s{4}\S+: (.+)$", listing, flags=re.M)
    paths: set[Path] = {Path(file) for file in files}
    for value in values:
        for word in value.split():
            path = Path(urlparse(word).path) if word.startswith("file://") else Path(word)
            if not path.is_absolute() or not path.exists():
                continue
            # A PEP 503 "simple" index links to its files with ../../files/...: take the
            # folder above it as well.
            paths.add(path.parent if path.name == "simple" else path)
    # Nested paths are covered by the outermost one.
    outermost = sorted(path for path in paths if not any(other in path.parents for other in paths))
    return [f"{path}:{path}:ro" for path in outermost]


def image_available(engine: Engine, image: str) -> bool:
    """Whether ``image`` is here already or can be pulled now."""
    if engine.exists("image", image):
        return True
    pulled = engine("pull", image, check=False, timeout_s=PULL_TIMEOUT_S)
    if pulled.returncode != 0:
        LOG.info("cannot pull %s: %s", image, pulled.stderr.strip()[-300:])
    return pulled.returncode == 0


def build_images(engine: Engine, flavour: str, log_dir: Path) -> BuiltImages:
    """Build (or refresh from the cache) the runtime and train images of ``flavour``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    standin = not (image_available(engine, PYTHON_IMAGE) and image_available(engine, NGINX_IMAGE))
    python, nginx = PYTHON_IMAGE, NGINX_IMAGE
    if standin:
        started = time.monotonic()
        _logged(["sh", str(STANDIN_SCRIPT), engine.cli], log_dir / "standin.log", STANDIN_TIMEOUT_S)
        seconds["stand-in base images"] = time.monotonic() - started
        python, nginx = STANDIN_PYTHON_IMAGE, STANDIN_NGINX_IMAGE
    mounts = pip_build_mounts() if engine.name == "podman" else []
    revision = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    # podman writes OCI images by default, and the OCI format has no HEALTHCHECK: podman would
    # drop the image's health check (with a warning). Docker's format keeps it.
    image_format = ["--format", "docker"] if engine.name == "podman" else []
    common = [
        "build",
        *image_format,
        "--file",
        str(DOCKERFILE),
        "--build-arg",
        f"TORCH_FLAVOUR={flavour}",
        "--build-arg",
        f"REVISION={revision or 'unknown'}",
        # Always named in full: the Dockerfile's short default could resolve to a stand-in.
        "--build-arg",
        f"PYTHON_IMAGE={python}",
        *(argument for mount in mounts for argument in ("--volume", mount)),
    ]
    images = {RUNTIME_STAGE: f"digits:{flavour}", TRAIN_STAGE: f"digits-train:{flavour}"}
    for stage, tag in images.items():
        started = time.monotonic()
        command = [engine.cli, *common, "--target", stage, "--tag", tag, str(REPO_ROOT)]
        _logged(command, log_dir / f"build-{stage}.log", BUILD_TIMEOUT_S)
        seconds[f"build {stage}"] = time.monotonic() - started
    sizes = {tag: int(engine.inspect("image", tag)["Size"]) for tag in images.values()}
    sizes[nginx] = int(engine.inspect("image", nginx)["Size"])
    if standin:
        sizes[STANDIN_PYTHON_IMAGE] = int(engine.inspect("image", STANDIN_PYTHON_IMAGE)["Size"])
    return BuiltImages(
        flavour=flavour,
        runtime=images[RUNTIME_STAGE],
        train=images[TRAIN_STAGE],
        nginx=nginx,
        standin=standin,
        build_mounts=tuple(mounts),
        seconds=seconds,
        size_bytes=sizes,
    )


def _logged(command: list[str], log: Path, timeout_s: float) -> None:
    """Run ``command`` with its output in ``log``; on failure raise with the log's end."""
    LOG.info("%s > %s", " ".join(command), log)
    with log.open("w", encoding="utf-8") as output:
        try:
            result = subprocess.run(
                command, stdout=output, stderr=subprocess.STDOUT, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as error:
            raise EngineError(f"{command[:3]}: no end in {timeout_s:.0f} s ({log})") from error
    if result.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-4000:]
        raise EngineError(f"{' '.join(command)} exited {result.returncode} ({log}):\n{tail}")
