"""Fill ``{{server.key}}`` templates in catalog values from the fleet's config.

Docker's catalogs template env values, command arguments and volumes with
``{{<server>.<key>}}``, looked up in config.yaml (``<server>: {<key>: ...}``).
We accept that syntax, nested keys (``{{server.a.b}}``), and the two filters
Docker's catalogs use most: ``|or:<default>`` (a default when the key is not
set) and ``|volume`` / ``|into`` (accepted, no-ops for a single value). A list
value is joined with commas.

A template whose key is not set is not a file error: the server that needs it
gets a problem naming the key and where to set it, the rest of the fleet runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

TEMPLATE_RE = re.compile(r"\{\{\s*([^{}|]+?)\s*((?:\|[^{}|]*)*)\}\}")
_PASSTHROUGH_FILTERS = {"volume", "into"}


class TemplateError(ValueError):
    """A template that cannot be filled (the message names the key, never a secret)."""


def _lookup(config: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = config
    for part in dotted.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return False, None
    return True, node


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(_text(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, default=str)
    return "" if value is None else str(value)


def render(text: str, config: Mapping[str, Any]) -> str:
    """Replace every template in ``text``; ``TemplateError`` names the first missing key."""

    def fill(match: re.Match[str]) -> str:
        key = match.group(1).strip()
        filters = [f.strip() for f in match.group(2).split("|") if f.strip()]
        found, value = _lookup(config, key)
        for flt in filters:
            name, _, arg = flt.partition(":")
            if name == "or":
                if not found or value in (None, "", []):
                    found, value = True, arg
            elif name not in _PASSTHROUGH_FILTERS:
                raise TemplateError(f"unknown template filter {name!r} in {{{{{key}}}}}")
        if not found:
            server, _, rest = key.partition(".")
            hint = f"set {rest or key} under {server}: in config.yaml" if rest else "config.yaml"
            raise TemplateError(f"template {{{{{key}}}}} has no value ({hint})")
        return _text(value)

    return TEMPLATE_RE.sub(fill, text)


def has_template(text: str) -> bool:
    return TEMPLATE_RE.search(text) is not None
