"""Pydantic models of the fleet files, and pydantic errors as one-line diagnostics.

These models are the edge: they check types of what a YAML file holds and
nothing else (semantics such as "does the registry name a known server" are
the resolver's job, so one bad server never fails a whole file). They mirror
Docker's MCP Gateway formats field for field, plus our extensions, and use the
file's own spelling (``disableNetwork``, ``transport_type``) through aliases.

Validation is strict for booleans and numbers (``enabled: "yes please"`` is an
error, not ``True``) but, like Docker's Go YAML decoding, a scalar given where
a string is expected is taken as its text (``value: 8080`` is ``"8080"``).
Unknown keys are kept (``extra="allow"``) and reported as warnings by the
loaders, so newer catalogs still load.

``validation_diagnostics`` turns a ``ValidationError`` into diagnostics of the
form ``registry.yaml:7: registry.cisco-asa.enabled: expected true/false, got
"yes please"``, with the line looked up in the ``YamlDoc``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from mcp_fleet.config.yamlsource import YamlDoc, YamlPath
from mcp_fleet.errors import Diagnostic

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _scalar_text(value: Any) -> Any:
    """Take a number or boolean given for a string as its text (Docker does too)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _env_name(value: Any) -> Any:
    if isinstance(value, str) and not ENV_NAME_RE.match(value):
        raise ValueError("expected an environment variable name (letters, digits, _)")
    return value


def parse_duration(value: Any) -> float:
    """``30s``, ``5m``, ``1h``, ``1h30m``, ``250ms`` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m or 1h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("expected a positive duration")
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text and _DURATION_PART_RE.sub("", text) == "":
            return sum(
                float(num) * _UNIT_SECONDS[unit] for num, unit in _DURATION_PART_RE.findall(text)
            )
    raise ValueError("expected a duration like 30s, 5m or 1h")


def _version(value: Any) -> Any:
    return _scalar_text(value)


Text = Annotated[str, BeforeValidator(_scalar_text)]
EnvName = Annotated[str, BeforeValidator(_env_name), BeforeValidator(_scalar_text)]
Duration = Annotated[float, BeforeValidator(parse_duration)]


class Edge(BaseModel):
    """Base of every file model: strict types, unknown keys kept for warnings."""

    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=False, frozen=True)


class EnvModel(Edge):
    name: EnvName
    value: Text = ""


class SecretModel(Edge):
    name: Text
    env: EnvName | None = None
    required: bool = True
    description: Text = ""
    example: Text | None = None


class RemoteModel(Edge):
    url: Text | None = None
    transport_type: Text | None = None
    headers: dict[str, Text] = Field(default_factory=dict)


class ProcessModel(Edge):
    command: list[Text] = Field(min_length=1)
    env: dict[str, Text] = Field(default_factory=dict)
    cwd: Text | None = None


def _env_list(value: Any) -> Any:
    """Docker writes ``env`` as ``[{name, value}]``; a plain mapping is accepted too."""
    if isinstance(value, dict):
        return [{"name": k, "value": v} for k, v in value.items()]
    return value


def _tool_list(value: Any) -> Any:
    if isinstance(value, list):
        return [{"name": item} if isinstance(item, str) else item for item in value]
    return value


class CatalogEntryModel(Edge):
    """One server of a catalog's ``registry:`` map (Docker's fields plus ours)."""

    name: Text | None = None
    title: Text | None = None
    description: Text = ""
    categories: list[Text] = Field(default_factory=list)
    type: Text = "server"
    image: Text | None = None
    command: list[Text] = Field(default_factory=list)
    env: Annotated[list[EnvModel], BeforeValidator(_env_list)] = Field(default_factory=list)
    secrets: list[SecretModel] = Field(default_factory=list)
    volumes: list[Text] = Field(default_factory=list)
    user: Text | None = None
    disable_network: bool = Field(default=False, alias="disableNetwork")
    allow_hosts: list[Text] = Field(default_factory=list, alias="allowHosts")
    long_lived: bool = Field(default=False, alias="longLived")
    prefix: Text | None = None
    remote: RemoteModel | None = None
    sse_endpoint: Text | None = Field(default=None, alias="sseEndpoint")
    tools: Annotated[list[dict[str, Any]], BeforeValidator(_tool_list)] = Field(
        default_factory=list
    )
    config: dict[str, Any] | list[dict[str, Any]] | None = None
    # Our extensions.
    process: ProcessModel | None = None
    lifecycle: Literal["always", "on-demand"] | None = None
    idle_timeout: Duration | None = Field(default=None, alias="idleTimeout")
    sessions: Literal["shared", "per-client"] = "shared"
    cpus: float | None = Field(default=None, gt=0)
    memory: Text | None = None
    read_only: bool = Field(default=True, alias="readOnly")
    timeout: Duration | None = None
    transport: Literal["stdio", "streamable-http", "sse"] = "stdio"
    port: int | None = Field(default=None, ge=1, le=65535)


#: Docker catalog keys we read but do not act on: kept in ``extra`` without a warning.
DOCKER_INFORMATIONAL_KEYS = frozenset(
    {
        "icon",
        "readme",
        "metadata",
        "oauth",
        "policy",
        "extraHosts",
        "about",
        "source",
        "upstream",
        "dateAdded",
        "toolsUrl",
        "hidden",
        "ref",
    }
)


#: Our catalog keys that other parts read (``kubernetes``: MCPServer spec fields the
#: operator's registry ConfigMap mode merges over what it derives from the entry):
#: kept in ``extra`` without a warning.
EXTENSION_KEYS = frozenset({"kubernetes"})


class CatalogFileModel(Edge):
    version: Annotated[str, BeforeValidator(_version)] | None = None
    name: Text | None = None
    display_name: Text | None = Field(default=None, alias="displayName")
    registry: dict[str, Any] | None = None
    policy: Any = None


class RegistryEntryModel(Edge):
    """A registry entry: the guide's ``{catalog, enabled}`` or Docker's ``{ref, config}``."""

    catalog: Text | None = None
    enabled: bool = True
    ref: Text | None = None
    config: dict[str, Any] | None = None


class RegistryFileModel(Edge):
    registry: dict[str, Any] | None = None


# --- errors -----------------------------------------------------------------

_EXPECTED = {
    "bool_type": "expected true/false",
    "bool_parsing": "expected true/false",
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "missing": "required field is missing",
    "too_short": "expected a non-empty list",
    "greater_than": "expected a number greater than {gt}",
    "greater_than_equal": "expected a number of at least {ge}",
    "less_than_equal": "expected a number of at most {le}",
}


def describe(value: Any) -> str:
    """How a value is shown after ``got``: strings quoted, containers by kind."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return json.dumps(shown, ensure_ascii=False)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _expected(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected', '').replace(' or ', ', ')}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in _EXPECTED:
        shown = {k: describe(v) for k, v in ctx.items()}
        return _EXPECTED[kind].format(**shown)
    return str(error["msg"]).lower()


def _clean_loc(loc: tuple[Any, ...]) -> YamlPath:
    """Drop pydantic's union/validator markers from an error location."""
    out: list[str | int] = []
    for part in loc:
        if isinstance(part, int) or not (
            part.startswith(("function-", "list[", "dict[", "json-or-python"))
            or part in {"str", "int", "float", "bool", "none", "lax-or-strict", "strict"}
        ):
            out.append(part)
    return tuple(out)


def validation_diagnostics(
    exc: ValidationError, doc: YamlDoc, at: YamlPath, *, server: str | None = None
) -> list[Diagnostic]:
    """One diagnostic per distinct field, each with its line and ``expected ..., got ...``."""
    seen: set[YamlPath] = set()
    out: list[Diagnostic] = []
    for error in exc.errors():
        path = (*at, *_clean_loc(tuple(error["loc"])))
        if path in seen:
            continue  # a union reports one error per branch; the first is enough
        seen.add(path)
        expected = _expected(error)
        if error["type"] == "missing":
            message = expected
        else:
            message = f"{expected}, got {describe(error.get('input'))}"
        out.append(doc.diag(path, message, server=server))
    return sorted(out, key=lambda d: d.line or 0)


def extra_keys(model: BaseModel, at: YamlPath) -> Iterator[tuple[YamlPath, str]]:
    """``(path, key)`` of every unknown key in ``model`` and its nested models."""
    for key in model.model_extra or {}:
        yield (*at, key), key
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        here = (*at, info.alias or name)
        if isinstance(value, BaseModel):
            yield from extra_keys(value, here)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from extra_keys(item, (*here, i))
