"""The load generator: ``wrk`` (C, event-driven) posting one image, or many in rotation, over
keep-alive connections, with ``post_image.lua`` / ``post_mix.lua`` counting answers by status
and reporting percentiles."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.servers import pinned

LUA_SCRIPT = Path(__file__).with_name("post_image.lua")
MIX_LUA_SCRIPT = Path(__file__).with_name("post_mix.lua")
#: A body file and the Content-Type it is sent with.
Body = tuple[Path, str]
_RESULT_PREFIX = "WRK_RESULT "

INSTALL_HINT = (
    "wrk is not installed. It is the load generator of this benchmark (a Debian package): "
    "`sudo apt-get update && sudo apt-get install -y wrk` (macOS: `brew install wrk`)."
)


class WrkMissing(RuntimeError):
    """wrk is not on PATH."""


@dataclass(frozen=True)
class LoadResult:
    """One wrk run against one server at one concurrency."""

    concurrency: int
    duration_s: float
    requests: int
    statuses: dict[int, int]
    socket_errors: dict[str, int]
    latency_ms: dict[str, float]  # mean, max, p50, p90, p99

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def errors(self) -> int:
        """Answers other than 200, plus socket errors and timeouts."""
        not_ok = sum(n for status, n in self.statuses.items() if status != 200)
        return not_ok + sum(self.socket_errors.values())

    def describe_errors(self) -> str:
        """``0``, or e.g. ``503: 120, timeout: 3``."""
        parts = [f"{s}: {n}" for s, n in sorted(self.statuses.items()) if s != 200]
        parts += [f"{kind}: {n}" for kind, n in self.socket_errors.items() if n]
        return ", ".join(parts) or "0"


def wrk_version() -> str:
    """``wrk 4.1.0 ...`` first line, or raise :class:`WrkMissing`."""
    executable = shutil.which("wrk")
    if executable is None:
        raise WrkMissing(INSTALL_HINT)
    # `wrk -v` prints its version and usage, and exits with status 1.
    done = subprocess.run([executable, "-v"], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).splitlines()[0].strip()


def run_wrk(
    url: str,
    *,
    body: Path | Sequence[Body],
    content_type: str | None = None,
    concurrency: int,
    duration_s: float,
    cpus: str | None,
    timeout_s: float = 10.0,
) -> LoadResult:
    """One closed-loop run: ``concurrency`` connections, each sending its next request as soon
    as the previous answer arrives. ``body`` is one file (sent with ``content_type``) or a
    list of (file, content type) that the requests rotate through. One wrk thread: it drives
    thousands of requests a second from one core, and the second core (if any) stays for the
    server."""
    argv = [
        "wrk",
        "--threads",
        "1",
        "--connections",
        str(concurrency),
        "--duration",
        f"{max(1, round(duration_s))}s",
        "--timeout",
        f"{timeout_s:g}s",
    ]
    with tempfile.TemporaryDirectory(prefix="digits-wrk-") as scratch:
        if isinstance(body, Path):
            if content_type is None:
                raise ValueError("one body needs its content_type")
            argv += ["--script", str(LUA_SCRIPT), url, "--", str(body), content_type]
        else:
            listing = write_body_list(Path(scratch) / "bodies.tsv", body)
            argv += ["--script", str(MIX_LUA_SCRIPT), url, "--", str(listing)]
        done = subprocess.run(
            pinned(tuple(argv), cpus), capture_output=True, text=True, check=False
        )
    line = next((x for x in done.stdout.splitlines() if x.startswith(_RESULT_PREFIX)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_result(line[len(_RESULT_PREFIX) :], concurrency)


def write_body_list(path: Path, bodies: Sequence[Body]) -> Path:
    """The list ``post_mix.lua`` reads: ``<content type><TAB><absolute path>`` a line."""
    if not bodies:
        raise ValueError("no bodies to send")
    path.write_text("".join(f"{media}\t{file.resolve()}\n" for file, media in bodies))
    return path


def parse_result(text: str, concurrency: int) -> LoadResult:
    """The JSON that ``post_mix.lua`` prints -> :class:`LoadResult`."""
    raw = json.loads(text)
    latency = {key: value / 1000.0 for key, value in raw["latency_us"].items()}
    return LoadResult(
        concurrency=concurrency,
        duration_s=raw["duration_us"] / 1e6,
        requests=int(raw["requests"]),
        statuses={int(status): int(n) for status, n in raw["statuses"].items()},
        socket_errors={kind: int(n) for kind, n in raw["socket_errors"].items()},
        latency_ms=latency,
    )
