"""Reading, interpolating and merging compose files the way ``docker compose`` does, offline.

There is no Docker engine (nor compose) where the tests run, so this models the three steps of
``docker compose -f a.yaml -f b.yaml config`` that the tests need, for the files in docker/:

- YAML with compose's own tags: ``!reset`` (drop the value inherited from an earlier file)
  and ``!override`` (replace it whole instead of merging);
- interpolation of ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``,
  ``${VAR:+alternative}``, ``$VAR`` and ``$$``;
- merging: mappings merge key by key, scalars are replaced. Compose merges some sequences by
  rules of their own (ports, volumes, ...); rather than model those, :func:`merge` refuses a
  sequence given in both files, so a merged result here is always what compose would produce.

The schema is the Compose Specification's JSON schema (compose-spec/compose-spec,
``schema/compose-spec.json``, Apache-2.0) as vendored by check-jsonschema, so no network.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import yaml

SCHEMA_PACKAGE = "check_jsonschema.builtin_schemas.vendor"
SCHEMA_RESOURCE = "compose-spec.json"


@dataclass(frozen=True)
class Reset:
    """``!reset VALUE``: in a merge, removes the key; in the file alone, it is VALUE."""

    value: Any


@dataclass(frozen=True)
class Override:
    """``!override VALUE``: in a merge, replaces the earlier value instead of merging into it."""

    value: Any


def _construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    raise yaml.constructor.ConstructorError(None, None, f"unexpected {node.tag}", node.start_mark)


def _reset(loader: yaml.SafeLoader, node: yaml.Node) -> Reset:
    return Reset(_construct(loader, node))


def _override(loader: yaml.SafeLoader, node: yaml.Node) -> Override:
    return Override(_construct(loader, node))


class ComposeLoader(yaml.SafeLoader):
    """Safe YAML loading plus compose's ``!reset`` and ``!override`` tags."""

    yaml_constructors: ClassVar[dict[Any, Any]] = {
        **yaml.SafeLoader.yaml_constructors,
        "!reset": _reset,
        "!override": _override,
    }


def load(path: Path) -> dict[str, Any]:
    """One compose file as written (tags kept as :class:`Reset` / :class:`Override`)."""
    document = yaml.load(path.read_text(encoding="utf-8"), Loader=ComposeLoader)
    if not isinstance(document, dict):
        raise ValueError(f"{path}: a compose file is a mapping at the top")
    return document


def untagged(document: Any) -> Any:
    """The document with each tagged value replaced by the value itself (for the schema)."""
    if isinstance(document, Reset | Override):
        return untagged(document.value)
    if isinstance(document, dict):
        return {key: untagged(value) for key, value in document.items()}
    if isinstance(document, list):
        return [untagged(value) for value in document]
    return document


def merge(base: Any, override: Any, where: str = "") -> Any:
    """``override`` merged over ``base`` by compose's rules (see the module docstring)."""
    if isinstance(override, Override):
        return untagged(override.value)
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            if isinstance(value, Reset):
                merged.pop(key, None)
            elif key in merged:
                merged[key] = merge(merged[key], value, f"{where}.{key}")
            else:
                merged[key] = untagged(value)
        return merged
    if isinstance(base, list) and isinstance(override, list):
        raise NotImplementedError(
            f"{where}: a sequence in both files merges by compose rules not modelled here; "
            "use !override or !reset in the later file"
        )
    return untagged(override)


def merge_files(paths: list[Path]) -> dict[str, Any]:
    """``docker compose -f p1 -f p2 ...``'s model before interpolation."""
    merged: dict[str, Any] = {}
    for path in paths:
        merged = merge(merged, load(path), where=path.name)
    return merged


_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<word>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(document: Any, environ: Mapping[str, str]) -> Any:
    """Substitute variables in every string, as compose does with the shell's environment."""
    if isinstance(document, dict):
        return {key: interpolate(value, environ) for key, value in document.items()}
    if isinstance(document, list):
        return [interpolate(value, environ) for value in document]
    if isinstance(document, Reset | Override):
        return type(document)(interpolate(document.value, environ))
    if isinstance(document, str):
        return _VARIABLE.sub(lambda match: _substitute(match, environ), document)
    return document


def _substitute(match: re.Match[str], environ: Mapping[str, str]) -> str:
    if match.group("escaped"):
        return "$"
    name = match.group("braced") or match.group("bare")
    operator, word = match.group("op"), match.group("word") or ""
    is_set = name in environ
    value = environ.get(name, "")
    if operator == ":-":
        return value or word
    if operator == "-":
        return value if is_set else word
    if operator == ":+":
        return word if value else ""
    if operator == "+":
        return word if is_set else ""
    if operator in (":?", "?") and (not is_set or (operator == ":?" and not value)):
        raise ValueError(f"required variable {name} is missing: {word}")
    return value


@functools.cache
def compose_validator() -> jsonschema.protocols.Validator:
    """A validator for the Compose Specification's JSON schema (check-jsonschema's copy)."""
    resource = importlib.resources.files(SCHEMA_PACKAGE).joinpath(SCHEMA_RESOURCE)
    schema = json.loads(resource.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def schema_errors(document: Any) -> list[str]:
    """Every way ``document`` breaks the compose schema, one readable line each."""
    errors = compose_validator().iter_errors(untagged(document))
    return sorted(
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in errors
    )


def seconds(duration: str) -> float:
    """A Docker / compose duration (``1m30s``, ``15s``, ``500ms``) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    if not parts or "".join(number + unit for number, unit in parts) != duration:
        raise ValueError(f"not a duration: {duration!r}")
    return sum(float(number) * units[unit] for number, unit in parts)
