"""Just enough of nginx's configuration syntax to read directives out of docker/nginx.conf,
and the one substitution its image's entrypoint makes in it (the file is a template)."""

from __future__ import annotations

import re
from dataclasses import dataclass

# A quoted string, a brace or semicolon, or a bare word; comments run from # to the line's end.
_TOKEN = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[{};]|#[^\n]*|[^\s{};'"#]+""")


#: The only variable the template's renderer fills in (compose.scale.yaml's
#: NGINX_ENVSUBST_FILTER); nginx's own $variables are left alone.
TEMPLATE_VARIABLE = "DIGITS_NGINX_RESOLVER"
_TEMPLATE_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def render(template: str, resolvers: str = "127.0.0.11") -> str:
    """nginx.conf as the image's entrypoint writes it: ``${DIGITS_NGINX_RESOLVER}`` replaced
    by ``resolvers`` (Docker's embedded DNS by default). Fails on any other ``${...}``, which
    the renderer would leave in place for nginx to choke on."""
    names = set(_TEMPLATE_REFERENCE.findall(template))
    if names - {TEMPLATE_VARIABLE}:
        raise ValueError(f"the template refers to {sorted(names - {TEMPLATE_VARIABLE})}")
    return template.replace("${" + TEMPLATE_VARIABLE + "}", resolvers)


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
