"""The MCPServer ``spec`` as a typed, validated, immutable model.

The CRD's structural schema (crds/mcpservers.yaml) makes the API server reject
wrong types, but it cannot express every rule (a remote server has no image, a
stdio server in a sidecar bridge needs its command, a host rule needs a valid
port), and clusters or test servers that skip schema validation exist. So the
operator parses every spec it sees with this model, at the edge, and plans
only from the result. A spec that does not parse never reaches the planner:
its MCPServer is marked Degraded with one line per problem, each naming the
field (``spec.network.allowHosts[1]: port must be 1-65535, got 70000``), and
nothing it already runs is touched.

Field names follow Kubernetes conventions (camelCase on the wire, snake_case
in Python); unknown fields are errors, so a typo never silently means "default".
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from mcp_fleet.errors import Diagnostic, FleetConfigError

#: Kubernetes object names that can also be Service and StatefulSet names
#: (DNS-1035 label; 52 leaves room for the StatefulSet's pod-revision label).
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,50}[a-z0-9])?$")
ENV_NAME_RE = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
SECRET_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
QUANTITY_RE = re.compile(
    r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|[KMGTPE]i|[mkMGTPE])?$"
)
DURATION_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
HOST_RE = re.compile(r"^(\*\.)?[a-zA-Z0-9]([-a-zA-Z0-9.]{0,251}[a-zA-Z0-9])?$")


class Transport(StrEnum):
    """How the server speaks MCP: stdio (bridged to HTTP in the pod), or HTTP itself."""

    STDIO = "stdio"
    STREAMABLE_HTTP = "streamable-http"
    SSE = "sse"


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class EnvVar(_Model):
    """A plain environment variable (Docker catalog ``env`` entries look the same)."""

    name: str
    value: str = ""

    @field_validator("name")
    @classmethod
    def _env_name(cls, v: str) -> str:
        if not ENV_NAME_RE.match(v):
            raise ValueError(f"not a valid environment variable name: {v!r}")
        return v


class SecretRef(_Model):
    """One key of a Secret in the server's namespace, exposed as an environment variable."""

    name: str
    key: str
    env: str | None = None
    optional: bool = False

    @field_validator("name")
    @classmethod
    def _secret_name(cls, v: str) -> str:
        if not SECRET_NAME_RE.match(v):
            raise ValueError(f"not a valid Secret name: {v!r}")
        return v

    @property
    def env_name(self) -> str:
        return self.env or self.key

    @model_validator(mode="after")
    def _env(self) -> SecretRef:
        if not ENV_NAME_RE.match(self.env_name):
            raise ValueError(f"not a valid environment variable name: {self.env_name!r}")
        return self


Quantity = int | float | str


class Resources(_Model):
    """Requests and limits, as in a container spec; unset keys get the operator's defaults."""

    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)

    @field_validator("requests", "limits")
    @classmethod
    def _quantities(cls, v: dict[str, Quantity]) -> dict[str, Quantity]:
        for key, q in v.items():
            if isinstance(q, str) and not QUANTITY_RE.match(q):
                raise ValueError(f"{key}: not a Kubernetes quantity: {q!r}")
        return v


class Lifecycle(_Model):
    """``always`` keeps the replicas running; ``on-demand`` scales to zero after ``idleTimeout``."""

    mode: Literal["always", "on-demand"] = "always"
    idle_timeout: int | str = "10m"

    @property
    def idle_timeout_seconds(self) -> int:
        return parse_duration(self.idle_timeout)

    @field_validator("idle_timeout")
    @classmethod
    def _duration(cls, v: int | str) -> int | str:
        parse_duration(v)
        return v


@dataclass(frozen=True, slots=True)
class HostRule:
    """One parsed ``allowHosts`` entry: a CIDR (exact in a NetworkPolicy) or a DNS name."""

    cidr: str | None
    host: str | None
    port: int | None


class Network(_Model):
    """Egress: ``none`` (default), ``allowHosts`` (DNS + the listed hosts/CIDRs), ``open``."""

    mode: Literal["none", "allowHosts", "open"] | None = None
    allow_hosts: tuple[str, ...] = ()

    @property
    def effective_mode(self) -> str:
        if self.mode is not None:
            return self.mode
        return "allowHosts" if self.allow_hosts else "none"

    @property
    def rules(self) -> tuple[HostRule, ...]:
        return tuple(parse_host_rule(h) for h in self.allow_hosts)

    @field_validator("allow_hosts")
    @classmethod
    def _hosts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for entry in v:
            parse_host_rule(entry)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Network:
        if self.mode == "allowHosts" and not self.allow_hosts:
            raise ValueError("mode allowHosts needs at least one allowHosts entry")
        if self.mode in ("none", "open") and self.allow_hosts:
            raise ValueError(f"allowHosts is only used with mode allowHosts, not {self.mode}")
        return self


class Remote(_Model):
    """A server that runs elsewhere: the operator only probes it and publishes its URL."""

    url: str
    transport: Literal["streamable-http", "sse"] = "streamable-http"

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"expected an http:// or https:// URL, got {v!r}")
        return v


class Bridge(_Model):
    """How a stdio server is served over HTTP in its pod (see ``mcp_fleet.bridge.serve``)."""

    mode: Literal["sidecar", "inline"] = "sidecar"
    image: str | None = None


class SecurityContext(_Model):
    """The few pod security settings a server may change; everything else stays hardened."""

    run_as_user: int = Field(default=65534, ge=1)
    run_as_group: int = Field(default=65534, ge=0)
    fs_group: int | None = Field(default=None, ge=0)
    read_only_root_filesystem: bool = True


class PodMetadata(_Model):
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class PodTemplate(_Model):
    """Overrides merged into the generated pod template (containers and volumes by name)."""

    metadata: PodMetadata = Field(default_factory=PodMetadata)
    spec: dict[str, Any] = Field(default_factory=dict)


class MCPServerSpec(_Model):
    """``MCPServer.spec``, validated. See crds/mcpservers.yaml for the user-facing docs."""

    image: str | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[EnvVar, ...] = ()
    secret_refs: tuple[SecretRef, ...] = ()
    transport: Transport = Transport.STDIO
    port: int = Field(default=8080, ge=1, le=65535)
    path: str | None = None
    resources: Resources = Field(default_factory=Resources)
    replicas: int = Field(default=1, ge=0, le=100)
    workload: Literal["Deployment", "StatefulSet"] = "Deployment"
    lifecycle: Lifecycle = Field(default_factory=Lifecycle)
    sessions: Literal["shared", "per-client"] = "shared"
    tools: tuple[str, ...] | None = None
    prefix: str | None = None
    network: Network = Field(default_factory=Network)
    pod_template: PodTemplate = Field(default_factory=PodTemplate)
    security_context: SecurityContext = Field(default_factory=SecurityContext)
    bridge: Bridge = Field(default_factory=Bridge)
    remote: Remote | None = None

    @property
    def http_path(self) -> str:
        if self.path:
            return self.path
        return "/sse" if self.transport is Transport.SSE else "/mcp"

    @field_validator("path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError(f"must start with '/', got {v!r}")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> MCPServerSpec:
        if self.remote is not None:
            if self.image:
                raise ValueError("set either image (run the server here) or remote, not both")
            return self
        if not self.image:
            raise ValueError("image is required unless remote is set")
        if self.transport is Transport.STDIO:
            argv = (*self.command, *self.args)
            if self.bridge.mode == "sidecar" and not self.command:
                raise ValueError(
                    "a stdio server bridged by the sidecar needs spec.command: the sidecar runs "
                    "the server's argv itself, and the image's entrypoint is not known here"
                )
            if self.bridge.mode == "inline" and not argv:
                raise ValueError("a stdio server with bridge.mode inline needs command or args")
            if self.sessions == "per-client" and self.bridge.mode != "inline":
                raise ValueError(
                    "sessions per-client needs bridge.mode inline: the bridge starts one server "
                    "process per client session, which it can only do in the server's container"
                )
        return self


def parse_duration(value: int | str) -> int:
    """Seconds from ``600``, ``"600"``, ``"10m"``, ``"1h30m"``; ValueError otherwise."""
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"must be at least 1 second, got {value}")
        return value
    text = value.strip()
    if text.isdigit():
        return parse_duration(int(text))
    m = DURATION_RE.match(text)
    if not text or m is None:
        raise ValueError(f"expected seconds or a duration such as 90s, 10m, 1h30m; got {value!r}")
    hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    return parse_duration(hours * 3600 + minutes * 60 + seconds)


def parse_host_rule(entry: str) -> HostRule:
    """Parse ``host[:port]``, ``cidr[:port]`` or ``[ipv6-cidr]:port`` (Docker's allowHosts form)."""
    text = entry.strip()
    port: int | None = None
    if text.startswith("["):
        addr, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"unclosed '[' in {entry!r}")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"expected ':port' after ']' in {entry!r}")
            port = _port(rest[1:], entry)
    elif text.count(":") == 1:
        addr, _, port_text = text.partition(":")
        port = _port(port_text, entry)
    else:
        addr = text
    try:
        network = ipaddress.ip_network(addr, strict=False)
    except ValueError:
        if not HOST_RE.match(addr):
            raise ValueError(f"not a host name, IP address or CIDR: {entry!r}") from None
        return HostRule(cidr=None, host=addr.lower(), port=port)
    return HostRule(cidr=str(network), host=None, port=port)


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"port must be 1-65535, got {text!r} in {entry!r}")
    return int(text)


def validate_name(name: str) -> list[Diagnostic]:
    """The MCPServer's own name becomes Service and workload names: DNS-1035, <= 52 chars."""
    if NAME_RE.match(name):
        return []
    return [
        Diagnostic(
            "must be a lower-case DNS label that starts with a letter and has at most 52 "
            f"characters (it names the Service and the workload), got {name!r}",
            field="metadata.name",
            server=name,
        )
    ]


def parse_spec(raw: Mapping[str, Any] | None, *, name: str) -> MCPServerSpec:
    """Validate ``raw`` (the object's ``spec``); raise ``FleetConfigError`` naming each field."""
    problems = validate_name(name)
    try:
        spec = MCPServerSpec.model_validate(dict(raw or {}))
    except ValidationError as exc:
        problems.extend(_diagnostics(exc, name=name))
        raise FleetConfigError(problems) from None
    if problems:
        raise FleetConfigError(problems)
    return spec


def _diagnostics(exc: ValidationError, *, name: str) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for err in exc.errors(include_url=False):
        field = "spec" + "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in err["loc"]
        )
        # Drop pydantic's union-member and validator markers from the path.
        field = re.sub(r"\.(function-after|function-before|int|str|float)\[[^\]]*\]", "", field)
        field = re.sub(r"\.(int|str|float)$", "", field)
        kind = err["type"]
        if kind == "extra_forbidden":
            message = "unknown field"
        elif kind == "missing":
            message = "required"
        elif kind in ("literal_error", "enum"):
            expected = err.get("ctx", {}).get("expected", "")
            message = f"expected {expected}, got {err['input']!r}"
        else:
            message = str(err["msg"]).removeprefix("Value error, ")
            if kind not in ("value_error", "assertion_error"):
                message += f", got {_short(err['input'])}"
        out.append(Diagnostic(message, field=field, server=name))
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
