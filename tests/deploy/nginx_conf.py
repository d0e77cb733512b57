"""Just enough of nginx's configuration syntax to read directives out of docker/nginx.conf."""

from __future__ import annotations

import re
from dataclasses import dataclass

# A quoted string, a brace or semicolon, or a bare word; comments run from # to the line's end.
_TOKEN = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[{};]|#[^\n]*|[^\s{};'"#]+""")


@dataclass(frozen=True)
class Directive:
    name: str
    arguments: list[str]  # quotes removed
    context: tuple[str, ...]  # enclosing blocks, e.g. ("http", "server", "location /")


def parse(text: str) -> list[Directive]:
    """Every simple directive (``name args;``) with the blocks it sits in."""
    found: list[Directive] = []
    context: list[str] = []
    words: list[str] = []
    for token in _TOKEN.findall(text):
        if token.startswith("#"):
            continue
        if token == ";":
            if words:
                found.append(Directive(words[0], words[1:], tuple(context)))
            words = []
        elif token == "{":
            context.append(" ".join(words))
            words = []
        elif token == "}":
            if words or not context:
                raise ValueError(f"unbalanced block near {' '.join(words)!r}")
            context.pop()
        else:
            words.append(token[1:-1] if token[0] in "'\"" else token)
    if context or words:
        raise ValueError("configuration ends inside a block or a directive")
    return found


def directives(text: str, name: str) -> list[str]:
    """The arguments of each ``name`` directive, joined by single spaces."""
    return [" ".join(d.arguments) for d in parse(text) if d.name == name]


def size_bytes(value: str) -> int:
    """nginx's size syntax (``4194304``, ``512k``, ``4m``, ``1g``) in bytes."""
    factors = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    suffix = value[-1].lower()
    return int(value[:-1]) * factors[suffix] if suffix in factors else int(value)
