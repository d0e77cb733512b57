"""Print the project's dependencies from ``pyproject.toml``, one requirement a line.

The Dockerfile installs the dependencies in a layer of their own, before the source is copied,
so that editing ``service/`` or ``training/`` does not reinstall torch. pip cannot install "only
the dependencies of ``.``", so this reads them from the one place they are declared (the
``[project]`` table) instead of keeping a second list that could drift.

Usage: ``python project_requirements.py PYPROJECT [--extra NAME ...]`` (standard library only:
it runs before anything is installed).
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path


def project_requirements(pyproject: Path, extras: list[str]) -> list[str]:
    """``[project].dependencies`` plus those of each named optional-dependency group."""
    with pyproject.open("rb") as handle:
        project = tomllib.load(handle)["project"]
    requirements: list[str] = list(project.get("dependencies", []))
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            known = ", ".join(sorted(optional)) or "none"
            raise SystemExit(f"{pyproject}: no optional dependencies named {extra!r} ({known})")
        requirements.extend(optional[extra])
    return requirements


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Print the dependencies declared in pyproject.toml, one a line."
    )
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("--extra", action="append", default=[], help="optional group to add")
    args = parser.parse_args(argv)
    # This is the program's output (a requirements file on stdout), not logging.
    sys.stdout.write(
        "".join(f"{line}\n" for line in project_requirements(args.pyproject, args.extra))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
