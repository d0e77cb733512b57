"""How nginx.conf becomes nginx's configuration in the scaled variant: the stand-in nginx
image's entrypoint (docker/standin/) sources docker/nginx-resolver.envsh and renders the template
as the official image's does, and the result is what tests/deploy/nginx_conf.render assumes.
Run here on the real files; the images themselves are built and run by ``make container-test``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from . import nginx_conf
from .layout import DOCKER_DIR, NGINX_CONF
from .test_nginx_conf import NGINX, needs_nginx

STANDIN_DIR = DOCKER_DIR / "standin"


def first_name_server() -> str:
    """This machine's first name server, as nginx's resolver directive takes it."""
    for line in Path("/etc/resolv.conf").read_text(encoding="utf-8").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            return f"[{words[1]}]" if ":" in words[1] else words[1]
    raise AssertionError("no nameserver in /etc/resolv.conf")


def run_entrypoint(tmp_path: Path, *command: str, **env: str) -> tuple[Path, str]:
    """The stand-in entrypoint with an entrypoint folder laid out as the container has it:
    the image's renderer and the deployment's resolver script."""
    entrypoint_dir, templates, output = (tmp_path / d for d in ("entrypoint.d", "t", "out"))
    for folder in (entrypoint_dir, templates, output):
        folder.mkdir()
    shutil.copy2(DOCKER_DIR / "nginx-resolver.envsh", entrypoint_dir / "15-digits-resolver.envsh")
    shutil.copy2(
        STANDIN_DIR / "nginx-envsubst-on-templates.sh",
        entrypoint_dir / "20-envsubst-on-templates.sh",
    )
    shutil.copy(NGINX_CONF, templates / "nginx.conf.template")
    result = subprocess.run(
        ["sh", str(STANDIN_DIR / "nginx-entrypoint.sh"), *command],
        env={
            "PATH": f"{Path(NGINX or '/usr/sbin/nginx').parent}:{os.environ['PATH']}",
            "NGINX_ENTRYPOINT_DIR": str(entrypoint_dir),
            "NGINX_ENVSUBST_TEMPLATE_DIR": str(templates),
            "NGINX_ENVSUBST_OUTPUT_DIR": str(output),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return output / "nginx.conf", result.stderr


@needs_nginx
def test_renders_the_template_with_the_first_name_server_only(tmp_path: Path) -> None:
    rendered, stderr = run_entrypoint(
        tmp_path,
        "nginx",
        "-v",
        NGINX_ENVSUBST_FILTER=f"^{nginx_conf.TEMPLATE_VARIABLE}$",
        # Set, but filtered out: nginx's variable of the same name must stay as it is.
        request_id="from-the-environment",
    )
    assert "nginx version" in stderr  # the command ran after the rendering
    expected = nginx_conf.render(NGINX_CONF.read_text(encoding="utf-8"), first_name_server())
    assert rendered.read_text(encoding="utf-8") == expected
    assert "$request_id" in expected


def test_renders_nothing_for_another_command(tmp_path: Path) -> None:
    rendered, _ = run_entrypoint(tmp_path, "true")
    assert not rendered.exists()
