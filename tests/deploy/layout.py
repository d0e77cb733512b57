"""Where the deployment files are, relative to this checkout."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO_ROOT / "docker"
DOCKERFILE = DOCKER_DIR / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
HADOLINT_CONFIG = DOCKER_DIR / ".hadolint.yaml"
HEALTHCHECK_SCRIPT = DOCKER_DIR / "healthcheck.py"
NGINX_CONF = DOCKER_DIR / "nginx.conf"
COMPOSE_BASE = DOCKER_DIR / "compose.yaml"
COMPOSE_GPU = DOCKER_DIR / "compose.gpu.yaml"
COMPOSE_SCALE = DOCKER_DIR / "compose.scale.yaml"

#: The image that ``docker build`` makes without --target, and the trainer's.
RUNTIME_STAGE = "runtime"
TRAIN_STAGE = "train"
