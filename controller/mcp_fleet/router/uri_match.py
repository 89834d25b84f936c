"""Does a URI match a resource template (RFC 6570)? Enough to route a read to its server.

The router only needs to know which server's template a URI belongs to, not
the variables' values, so each template compiles to one regular expression:
literal text must match exactly, each expression matches what its operator
can expand to (``{var}`` no ``/``; ``{+var}`` and ``{#var}`` anything;
``{/var}``, ``{.var}``, ``{;var}`` a prefixed segment; ``{?var}`` and
``{&var}`` a query part). The SDK's full ``UriTemplate`` would cost the
router the import of the whole ``mcp`` package at start-up (over a second),
which a client launching the router over stdio waits for; a test checks this
matcher against the SDK's on a set of templates.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

_EXPRESSION: Final = re.compile(r"\{([^{}]*)\}")

_PATTERNS: Final = {
    "": r"[^/?#]*",
    "+": r"[^?#]*",
    "#": r"(?:#.*)?",
    "?": r"(?:\?[^#]*)?",
    "&": r"(?:&[^#]*)*",
}
#: Operators whose every variable adds one prefixed segment (any number when exploded).
_SEGMENTS: Final = {"/": r"/[^/?#]*", ".": r"\.[^/?#.]*", ";": r";[^/?#]*"}


class InvalidTemplate(ValueError):
    """Not a URI template we can match (unbalanced braces)."""


@lru_cache(maxsize=1024)
def compile_template(template: str) -> re.Pattern[str]:
    """The regular expression matching every URI ``template`` can expand to."""
    parts: list[str] = []
    pos = 0
    for m in _EXPRESSION.finditer(template):
        literal = template[pos : m.start()]
        if "{" in literal or "}" in literal:
            raise InvalidTemplate(f"unbalanced braces in {template!r}")
        parts.append(re.escape(literal))
        body = m.group(1)
        op = body[:1]
        if op in _SEGMENTS:
            names = body[1:].split(",")
            repeat = "*" if any(n.endswith("*") for n in names) else f"{{0,{len(names)}}}"
            parts.append(f"(?:{_SEGMENTS[op]}){repeat}")
        else:
            parts.append(_PATTERNS[op] if op in _PATTERNS and op else _PATTERNS[""])
        pos = m.end()
    tail = template[pos:]
    if "{" in tail or "}" in tail:
        raise InvalidTemplate(f"unbalanced braces in {template!r}")
    parts.append(re.escape(tail))
    return re.compile("".join(parts))


def matches(template: str, uri: str) -> bool:
    """True when ``uri`` is something ``template`` expands to."""
    try:
        return compile_template(template).fullmatch(uri) is not None
    except InvalidTemplate:
        return False
