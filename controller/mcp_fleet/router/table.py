"""The routing table: what the router advertises and where each name goes.

Built aside from the lists every attached backend reported, validated and
then swapped in whole, so a client never sees half a fleet. The build is a
pure function of its inputs (servers in name order, each server's items in
the order it gave them), so two builds of the same fleet advertise the same
names.

Naming follows what users of Docker's gateway expect: a tool or prompt keeps
the name its server gave it while that name is unique in the fleet; every
name offered by more than one server becomes ``<server>__<name>`` (or
``<prefix>__<name>`` when the catalog entry sets ``prefix``), never an error.
``prefix="always"`` prefixes every name, for fleets that want names that do
not change as servers come and go. Advertised names always match
``conventions.TOOL_NAME_RE`` (invalid characters become ``_``, long names are
cut and given a short hash). Every rename is reported with its reason.

Resources keep their URIs (a URI is its own namespace); when two servers list
the same URI, the first server in name order owns it, and that is reported.
Resource templates route a URI that no listed resource owns.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from mcp_fleet import conventions
from mcp_fleet.router.uri_match import InvalidTemplate, compile_template, matches

JsonObject = dict[str, Any]
PrefixMode = Literal["collisions", "always"]
Kind = Literal["tools", "prompts", "resources", "resourceTemplates"]
KINDS: tuple[Kind, ...] = ("tools", "prompts", "resources", "resourceTemplates")

_INVALID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_MAX_NAME = 64


@dataclass(frozen=True, slots=True)
class ServerLists:
    """What one attached backend offers, with the spec fields that shape naming."""

    server: str
    tools: tuple[JsonObject, ...] = ()
    prompts: tuple[JsonObject, ...] = ()
    resources: tuple[JsonObject, ...] = ()
    templates: tuple[JsonObject, ...] = ()
    #: Catalog ``prefix``: used instead of the server name when prefixing.
    prefix: str | None = None
    #: tools.yaml allow-list (None: every tool).
    tools_allow: tuple[str, ...] | None = None

    def same_items(self, other: ServerLists) -> bool:
        """Do both offer the same tools, prompts, resources and templates (naming aside)?"""
        return (self.tools, self.prompts, self.resources, self.templates) == (
            other.tools, other.prompts, other.resources, other.templates,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Rename:
    """A name the router advertises differently from its server, and why."""

    kind: str
    server: str
    original: str
    advertised: str
    reason: str

    def __str__(self) -> str:
        kind = self.kind[:-1]
        return f"{kind} {self.original!r} of {self.server} is {self.advertised!r}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Route:
    server: str
    name: str


@dataclass(frozen=True)
class RoutingTable:
    """One immutable, consistent view of the fleet for clients."""

    tools: tuple[JsonObject, ...] = ()
    prompts: tuple[JsonObject, ...] = ()
    resources: tuple[JsonObject, ...] = ()
    templates: tuple[JsonObject, ...] = ()
    tool_routes: Mapping[str, Route] = field(default_factory=dict)
    prompt_routes: Mapping[str, Route] = field(default_factory=dict)
    resource_routes: Mapping[str, str] = field(default_factory=dict)
    #: (uri template, server), in server order: the first match owns a URI.
    template_routes: tuple[tuple[str, str], ...] = ()
    renames: tuple[Rename, ...] = ()
    #: Resources or templates hidden because another server already owns them.
    shadowed: tuple[str, ...] = ()
    #: Serialised advertised lists, compared to decide on list_changed.
    digests: Mapping[str, bytes] = field(default_factory=dict)

    def items(self, kind: Kind) -> tuple[JsonObject, ...]:
        if kind == "tools":
            return self.tools
        if kind == "prompts":
            return self.prompts
        if kind == "resources":
            return self.resources
        return self.templates

    def changed_kinds(self, other: RoutingTable) -> list[Kind]:
        """The kinds whose advertised lists differ from ``other``'s."""
        return [k for k in KINDS if self.digests.get(k) != other.digests.get(k)]

    def resource_server(self, uri: str) -> str | None:
        """The server owning ``uri``: a listed resource first, then the first matching template."""
        server = self.resource_routes.get(uri)
        if server is not None:
            return server
        for template, owner in self.template_routes:
            if matches(template, uri):
                return owner
        return None

    def template_owner(self, template: str) -> str | None:
        """The server that lists the resource template ``template`` itself."""
        for text, owner in self.template_routes:
            if text == template:
                return owner
        return None


def parse_tool_patterns(patterns: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """Docker's ``--tools`` syntax: ``server:tool``, ``server:*`` or a bare ``tool``."""
    out: list[tuple[str, str]] = []
    for raw in patterns:
        for item in raw.split(","):
            item = item.strip()
            if not item:
                continue
            server, sep, tool = item.partition(":")
            out.append((server, tool) if sep else ("*", server))
    return tuple(out)


def _allowed_tool(
    server: str, name: str, allow: tuple[str, ...] | None, patterns: tuple[tuple[str, str], ...]
) -> bool:
    if allow is not None and not any(fnmatch.fnmatchcase(name, a) for a in allow):
        return False
    if patterns:
        return any(
            fnmatch.fnmatchcase(server, s) and fnmatch.fnmatchcase(name, t) for s, t in patterns
        )
    return True


def clean_name(name: str) -> str:
    """``name`` made valid for ``TOOL_NAME_RE``.

    Bad characters become ``_``; a name longer than 64 is cut and given a hash.
    """
    cleaned = _INVALID_CHARS.sub("_", name) or "_"
    if len(cleaned) > _MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        cleaned = f"{cleaned[: _MAX_NAME - 9]}_{digest}"
    return cleaned


def _assign_names(
    kind: str,
    entries: Sequence[tuple[ServerLists, str, JsonObject]],
    *,
    prefix_mode: PrefixMode,
    renames: list[Rename],
) -> tuple[list[JsonObject], dict[str, Route]]:
    """Advertised items and routes for tools or prompts, deterministic in input order."""
    offered_by: dict[str, set[str]] = {}
    for lists, name, _ in entries:
        offered_by.setdefault(name, set()).add(lists.server)
    items: list[JsonObject] = []
    routes: dict[str, Route] = {}
    seen: set[tuple[str, str]] = set()
    for lists, name, item in entries:
        if (lists.server, name) in seen:
            renames.append(
                Rename(kind, lists.server, name, "", "listed twice by its server; dropped")
            )
            continue
        seen.add((lists.server, name))
        owners = offered_by[name]
        reason = ""
        if prefix_mode == "always":
            wanted = f"{lists.prefix or lists.server}{conventions.PREFIX_SEPARATOR}{name}"
        elif len(owners) > 1:
            wanted = f"{lists.prefix or lists.server}{conventions.PREFIX_SEPARATOR}{name}"
            reason = "also offered by " + ", ".join(sorted(owners - {lists.server}))
        else:
            wanted = name
        advertised = clean_name(wanted)
        if advertised != wanted:
            reason = (reason + "; " if reason else "") + "not a valid MCP name"
        if advertised in routes:
            digest = hashlib.sha256(f"{lists.server}\0{name}".encode()).hexdigest()[:8]
            advertised = clean_name(f"{advertised[: _MAX_NAME - 9]}_{digest}")
            reason = (reason + "; " if reason else "") + "prefixed name already taken"
        if reason:
            renames.append(Rename(kind, lists.server, name, advertised, reason))
        routes[advertised] = Route(lists.server, name)
        items.append(item if advertised == name else {**item, "name": advertised})
    return items, routes


def _named(items: Iterable[JsonObject]) -> Iterable[tuple[str, JsonObject]]:
    for item in items:
        name = item.get("name")
        if isinstance(name, str) and name:
            yield name, item


def build_table(
    servers: Iterable[ServerLists],
    *,
    prefix_mode: PrefixMode = "collisions",
    tool_patterns: Iterable[str] = (),
) -> RoutingTable:
    """The routing table for ``servers`` (order does not matter: sorted by name here)."""
    ordered = sorted(servers, key=lambda s: s.server)
    patterns = parse_tool_patterns(tool_patterns)
    renames: list[Rename] = []
    tool_entries = [
        (s, name, item)
        for s in ordered
        for name, item in _named(s.tools)
        if _allowed_tool(s.server, name, s.tools_allow, patterns)
    ]
    prompt_entries = [(s, name, item) for s in ordered for name, item in _named(s.prompts)]
    tools, tool_routes = _assign_names(
        "tools", tool_entries, prefix_mode=prefix_mode, renames=renames
    )
    prompts, prompt_routes = _assign_names(
        "prompts", prompt_entries, prefix_mode=prefix_mode, renames=renames
    )
    shadowed: list[str] = []
    resources: list[JsonObject] = []
    resource_routes: dict[str, str] = {}
    for s in ordered:
        for item in s.resources:
            uri = item.get("uri")
            if not isinstance(uri, str):
                continue
            if uri in resource_routes:
                if resource_routes[uri] != s.server:
                    shadowed.append(
                        f"resource {uri} of {s.server} (owned by {resource_routes[uri]})"
                    )
                continue
            resource_routes[uri] = s.server
            resources.append(item)
    templates: list[JsonObject] = []
    template_routes: list[tuple[str, str]] = []
    template_owner: dict[str, str] = {}
    for s in ordered:
        for item in s.templates:
            text = item.get("uriTemplate")
            if not isinstance(text, str):
                continue
            if text in template_owner:
                if template_owner[text] != s.server:
                    shadowed.append(
                        f"resource template {text} of {s.server} (owned by {template_owner[text]})"
                    )
                continue
            template_owner[text] = s.server
            templates.append(item)
            try:
                compile_template(text)
            except InvalidTemplate:
                shadowed.append(f"resource template {text} of {s.server} (not a valid template)")
                continue
            template_routes.append((text, s.server))
    digests = {
        "tools": orjson.dumps(tools),
        "prompts": orjson.dumps(prompts),
        "resources": orjson.dumps(resources),
        "resourceTemplates": orjson.dumps(templates),
    }
    return RoutingTable(
        tools=tuple(tools),
        prompts=tuple(prompts),
        resources=tuple(resources),
        templates=tuple(templates),
        tool_routes=tool_routes,
        prompt_routes=prompt_routes,
        resource_routes=resource_routes,
        template_routes=tuple(template_routes),
        renames=tuple(renames),
        shadowed=tuple(shadowed),
        digests=digests,
    )


def check_table(table: RoutingTable) -> list[str]:
    """Problems that must never reach a client (the build should make them impossible)."""
    problems = [
        f"invalid advertised name {name!r}"
        for name in (*table.tool_routes, *table.prompt_routes)
        if not conventions.TOOL_NAME_RE.match(name)
    ]
    if len(table.tool_routes) != len(table.tools):
        problems.append("tool routes and advertised tools differ")
    if len(table.prompt_routes) != len(table.prompts):
        problems.append("prompt routes and advertised prompts differ")
    return problems
