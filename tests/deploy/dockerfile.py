"""Just enough of a Dockerfile reader for the deployment tests: stages, ENV, CMD, HEALTHCHECK.

The tests read the image's command, environment and health check from ``docker/Dockerfile``
itself rather than repeating them, so a change there is what gets tested. This covers the
Dockerfile syntax that file uses (and fails loudly on what it does not understand): line
continuations, comments, ``ARG`` with defaults (global and per stage), ``ENV k=v ...``,
``LABEL``, exec-form ``CMD``/``ENTRYPOINT``/``HEALTHCHECK CMD``, ``COPY`` and stages built
``FROM`` other stages, whose ENV and LABELs they inherit.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

# ${NAME}, ${NAME:-default}, ${NAME:+alternative} or $NAME, as Docker substitutes them.
_VARIABLE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:[-+])(?P<word>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: "FROM", "ENV", ...
    arguments: str  # everything after the keyword, continuation lines joined
    line: int  # 1-based line of the keyword, for messages


@dataclass(frozen=True)
class HealthCheck:
    options: dict[str, str]  # {"interval": "15s", ...}
    command: list[str]  # exec form only


@dataclass
class Stage:
    name: str
    base: str  # image reference or the name of an earlier stage
    instructions: list[Instruction] = field(default_factory=list)
    parent: Stage | None = None  # the earlier stage this one is built FROM, if any

    def lineage(self) -> list[Stage]:
        """This stage and the stages it is built from, oldest first."""
        chain: list[Stage] = []
        stage: Stage | None = self
        while stage is not None:
            chain.append(stage)
            stage = stage.parent
        return chain[::-1]

    def _values(self, keyword: str) -> list[Instruction]:
        return [i for s in self.lineage() for i in s.instructions if i.keyword == keyword]

    def env(self, global_args: dict[str, str], inherited: dict[str, str]) -> dict[str, str]:
        """The stage's environment: ``inherited`` (the base image's) plus every ENV above it.

        Values are substituted like Docker does: from the environment so far and from the
        stage's ARGs (re-declared global ones take the global default).
        """
        env = dict(inherited)
        for stage in self.lineage():
            args: dict[str, str] = {}
            for instruction in stage.instructions:
                if instruction.keyword == "ARG":
                    args.update(_parse_arg(instruction.arguments, global_args))
                elif instruction.keyword == "ENV":
                    scope = {**args, **env}
                    for key, value in _key_values(instruction).items():
                        env[key] = substitute(value, scope)
        return env

    def labels(self, global_args: dict[str, str]) -> dict[str, str]:
        """Every LABEL of the stage and its parents, with ARG values substituted."""
        labels: dict[str, str] = {}
        for stage in self.lineage():
            args: dict[str, str] = {}
            for instruction in stage.instructions:
                if instruction.keyword == "ARG":
                    args.update(_parse_arg(instruction.arguments, global_args))
                elif instruction.keyword == "LABEL":
                    for key, value in _key_values(instruction).items():
                        labels[key] = substitute(value, args)
        return labels

    def last(self, keyword: str) -> Instruction | None:
        """The instruction in effect (the last one, inherited from parents too)."""
        found = self._values(keyword)
        return found[-1] if found else None

    def exec_form(self, keyword: str) -> list[str]:
        """``CMD`` or ``ENTRYPOINT`` in exec form (shell form is refused: no signals)."""
        instruction = self.last(keyword)
        if instruction is None:
            raise LookupError(f"stage {self.name!r} has no {keyword}")
        return _json_list(instruction)

    def healthcheck(self) -> HealthCheck:
        instruction = self.last("HEALTHCHECK")
        if instruction is None:
            raise LookupError(f"stage {self.name!r} has no HEALTHCHECK")
        options: dict[str, str] = {}
        rest = instruction.arguments
        while match := re.match(r"--([a-z-]+)=(\S+)\s+", rest):
            options[match.group(1)] = match.group(2)
            rest = rest[match.end() :]
        if not rest.startswith("CMD "):
            raise ValueError(f"line {instruction.line}: HEALTHCHECK without CMD: {rest!r}")
        command = Instruction("CMD", rest[len("CMD ") :].strip(), instruction.line)
        return HealthCheck(options=options, command=_json_list(command))

    def copies(self) -> list[tuple[list[str], str]]:
        """``(sources, destination)`` of each COPY from the build context in this stage."""
        found: list[tuple[list[str], str]] = []
        for instruction in self.instructions:
            if instruction.keyword != "COPY":
                continue
            words = shlex.split(instruction.arguments)
            if any(w.startswith("--from=") for w in words):
                continue
            paths = [w for w in words if not w.startswith("--")]
            found.append((paths[:-1], paths[-1]))
        return found


@dataclass(frozen=True)
class Dockerfile:
    global_args: dict[str, str]
    stages: dict[str, Stage]

    def stage(self, name: str) -> Stage:
        if name not in self.stages:
            raise LookupError(f"no stage {name!r}; stages: {', '.join(self.stages)}")
        return self.stages[name]

    @property
    def final_stage(self) -> Stage:
        """The stage ``docker build`` builds when no --target is given."""
        return list(self.stages.values())[-1]


def substitute(text: str, scope: dict[str, str]) -> str:
    """Docker's variable substitution; unknown variables become empty, as in Docker."""

    def replace(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bare")
        value = scope.get(name, "")
        if match.group("op") == ":-":
            return value or match.group("word")
        if match.group("op") == ":+":
            return match.group("word") if value else ""
        return value

    return _VARIABLE.sub(replace, text)


def instructions(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions (continuations joined, comments dropped)."""
    found: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments and blank lines may sit between continuation lines too
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        keyword, _, arguments = " ".join(pending).partition(" ")
        found.append(Instruction(keyword.upper(), arguments.strip(), start))
        pending = []
    if pending:
        raise ValueError(f"line {start}: continuation runs past the end of the file")
    return found


def parse(path: Path) -> Dockerfile:
    """Read a Dockerfile into its global ARGs and its named stages."""
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for instruction in instructions(path.read_text(encoding="utf-8")):
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            words = [w for w in words if not w.startswith("--platform=")]
            if len(words) != 3 or words[1].upper() != "AS":
                raise ValueError(f"line {instruction.line}: expected FROM <base> AS <name>")
            base = substitute(words[0], global_args)
            current = Stage(name=words[2], base=base, parent=stages.get(base))
            stages[current.name] = current
        elif current is None:
            if instruction.keyword != "ARG":
                raise ValueError(f"line {instruction.line}: only ARG may come before FROM")
            global_args.update(_parse_arg(instruction.arguments, global_args))
        else:
            current.instructions.append(instruction)
    return Dockerfile(global_args=global_args, stages=stages)


def _parse_arg(arguments: str, global_args: dict[str, str]) -> dict[str, str]:
    name, has_default, default = arguments.partition("=")
    name = name.strip()
    return {name: default if has_default else global_args.get(name, "")}


def _key_values(instruction: Instruction) -> dict[str, str]:
    """``KEY=value KEY2="value 2"`` pairs of ENV and LABEL (the legacy ``ENV k v`` is refused)."""
    pairs: dict[str, str] = {}
    for word in shlex.split(instruction.arguments):
        key, has_value, value = word.partition("=")
        if not has_value:
            raise ValueError(f"line {instruction.line}: use KEY=value in {instruction.keyword}")
        pairs[key] = value
    return pairs


def _json_list(instruction: Instruction) -> list[str]:
    try:
        value = json.loads(instruction.arguments)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(
            f"line {instruction.line}: {instruction.keyword} must be in exec form "
            f'(["program", "arg", ...]), got {instruction.arguments!r}'
        )
    return value
