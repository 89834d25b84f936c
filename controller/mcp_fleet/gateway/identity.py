"""Who is calling, what they may call, and the MCP errors that say "no".

The gateway (``callback.GatewayHandler``) hands an ``Identity`` to the
router's handler with every HTTP request it lets through (the ASGI form of
the status pages reads one from ``scope["state"][IDENTITY_KEY]``, with
``identity_from_scope``). The router asks ``identity.allows(server, tool)``
before forwarding a call, and answers ``forbidden_error(...)`` when it may
not: a JSON-RPC error object (not an HTTP 403, since the call rides inside an
MCP session that is otherwise fine), whose message names the identity, the
server and the tool.

Allow-lists use Docker's ``--tools`` syntax so one vocabulary serves both:
``*`` (everything), ``server`` or ``server:*`` (every tool, prompt and
resource of a server), ``server:tool`` (one tool). Tool names are the
server's own names, not the router's prefixed ones, so a grant does not
change meaning when a name collision appears or goes away. ``allows`` is a
set lookup or two: it runs on every call.

The error codes sit in JSON-RPC's implementation-defined band
(-32000..-32099), apart from the router's own: ``FORBIDDEN`` (-32040, an
HTTP 403 in spirit) and ``LIMITED`` (-32029, an HTTP 429 in spirit). Their
``data`` carries ``status`` (403 or 429) for clients that map errors to HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from mcp_fleet import conventions

#: Key of the identity in the ASGI scope's ``state`` dict.
IDENTITY_KEY: Final = "mcp_fleet_identity"
#: JSON-RPC error code for a call outside the caller's allow-list.
FORBIDDEN: Final = -32040
#: JSON-RPC error code for a call refused by a concurrency or rate limit.
LIMITED: Final = -32029
ALL: Final = "*"

IdentityKind = Literal["token", "oidc", "anonymous"]


class AuthError(Exception):
    """A request that cannot be let through: 401 (who are you?) or 403 (not you).

    ``description`` is shown to the client (JSON body and ``WWW-Authenticate``)
    and must never contain the presented credential.
    """

    def __init__(self, description: str, *, status: int = 401, error: str = "invalid_token"):
        super().__init__(description)
        self.description = description
        self.status = status
        self.error = error


class PatternError(ValueError):
    """An allow-list entry that is not ``*``, ``server``, ``server:*`` or ``server:tool``."""


def parse_pattern(text: str) -> tuple[str, str]:
    """``"github:create_issue"`` -> ``("github", "create_issue")``.

    ``"github"`` and ``"github:*"`` -> ``("github", "*")``; ``"*"`` -> ``("*", "*")``.
    """
    entry = text.strip()
    if entry == ALL:
        return ALL, ALL
    server, sep, tool = entry.partition(":")
    if not sep:
        tool = ALL
    if not conventions.SERVER_NAME_RE.match(server):
        raise PatternError(
            f"{text!r}: expected '*', 'server', 'server:*' or 'server:tool' "
            f"with a valid server name, got server {server!r}"
        )
    if tool != ALL and not conventions.TOOL_NAME_RE.match(tool):
        raise PatternError(
            f"{text!r}: tool name {tool!r} must match {conventions.TOOL_NAME_RE.pattern}"
        )
    return server, tool


@dataclass(frozen=True, slots=True)
class AllowList:
    """A set of grants, precomputed for O(1) checks."""

    everything: bool = False
    servers: frozenset[str] = frozenset()
    tools: frozenset[tuple[str, str]] = frozenset()
    #: Servers with at least one grant (whole or single tools): what the identity sees.
    visible: frozenset[str] = field(default=frozenset(), compare=False)

    @classmethod
    def parse(cls, patterns: Iterable[str]) -> AllowList:
        """Build from patterns; raises ``PatternError`` naming the bad entry."""
        everything = False
        servers: set[str] = set()
        tools: set[tuple[str, str]] = set()
        for text in patterns:
            server, tool = parse_pattern(text)
            if server == ALL:
                everything = True
            elif tool == ALL:
                servers.add(server)
            else:
                tools.add((server, tool))
        tools = {(s, t) for s, t in tools if s not in servers}
        return cls(
            everything=everything,
            servers=frozenset(servers),
            tools=frozenset(tools),
            visible=frozenset(servers | {s for s, _ in tools}),
        )

    @classmethod
    def all(cls) -> AllowList:
        return cls(everything=True)

    def allows(self, server: str, tool: str | None = None) -> bool:
        """May ``tool`` of ``server`` be called? ``tool=None`` asks for the whole server
        (prompts, resources, completions): only ``server``/``server:*``/``*`` grant that."""
        if self.everything or server in self.servers:
            return True
        return tool is not None and (server, tool) in self.tools

    def sees(self, server: str) -> bool:
        """Does any grant name ``server`` (so its entries belong in lists and the status page)?"""
        return self.everything or server in self.visible

    def patterns(self) -> list[str]:
        """The canonical, sorted patterns (what the tokens file stores)."""
        if self.everything:
            return [ALL]
        return sorted(self.servers) + sorted(f"{s}:{t}" for s, t in self.tools)

    def describe(self) -> str:
        """``all servers`` or ``github, time:get_current_time``."""
        return "all servers" if self.everything else (", ".join(self.patterns()) or "nothing")


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller (or the anonymous one when auth is not configured)."""

    name: str
    kind: IdentityKind
    allow: AllowList
    #: Which credential this is, beyond its name: a token's non-secret digest tag, so a
    #: token made anew under a revoked token's name is another owner ("" when the name
    #: alone says who it is).
    credential: str = field(default="", repr=False, compare=False)
    #: ``token:alice``, ``oidc:alice@example.com`` or ``anonymous`` (audit, errors, limits);
    #: computed once, as it is read several times per call.
    label: str = field(init=False, repr=False, compare=False)
    #: Who owns the sessions this identity opens: the label and the credential, so that
    #: sessions belong to the token, not to its name.
    owner: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        label = "anonymous" if self.kind == "anonymous" else f"{self.kind}:{self.name}"
        object.__setattr__(self, "label", label)
        owner = f"{label}#{self.credential}" if self.credential else label
        object.__setattr__(self, "owner", owner)

    def allows(self, server: str, tool: str | None = None) -> bool:
        return self.allow.allows(server, tool)

    def sees(self, server: str) -> bool:
        return self.allow.sees(server)


#: The identity of every request when no token exists and OIDC is not configured.
ANONYMOUS: Final = Identity(name="anonymous", kind="anonymous", allow=AllowList.all())


def identity_from_scope(scope: Mapping[str, Any]) -> Identity | None:
    """The identity at ``scope["state"][IDENTITY_KEY]``, if any."""
    state = scope.get("state")
    if state is None:
        return None
    found = state.get(IDENTITY_KEY)
    return found if isinstance(found, Identity) else None


def forbidden_error(identity: Identity, server: str, tool: str | None = None) -> dict[str, Any]:
    """The JSON-RPC ``error`` object for a call outside ``identity``'s allow-list."""
    what = f"tool {tool!r} of server {server!r}" if tool else f"server {server!r}"
    return {
        "code": FORBIDDEN,
        "message": f"Forbidden: {identity.label} is not allowed to use {what}",
        "data": {"status": 403, "identity": identity.label, "server": server, "tool": tool},
    }
