"""Check a server's settings against the ``config`` schema its catalog entry declares.

Docker's catalogs describe what a server needs to be told (a host, a list of
paths...) as a list of JSON schemas under ``config``, each with a ``name``:
the key of ``config.yaml`` (or of the registry entry's inline ``config``)
that holds the values. The gateway refuses to start a server whose settings
do not satisfy them; so do we, the way a missing secret is handled: the
server gets a problem naming the file, the line and the field, it does not
run, and the rest of the fleet is not affected.

Messages never quote the offending value, only its kind (``got a string``)
and what the schema wanted: settings are not secrets, but people paste
tokens into the wrong file, and an error message is logged and shown.

A schema that is itself not valid JSON Schema is the catalog's fault, not
the settings': it is reported once as a warning and nothing is checked
against it, so a newer or sloppier catalog does not stop servers that ran
before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from mcp_fleet.errors import Diagnostic, Severity

#: Where a settings path (server key first) is written: a diagnostic maker.
Locate = Callable[[tuple[str | int, ...], str], Diagnostic]


def sub_schemas(schema: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Each schema of an entry's ``config`` (a list in the catalog becomes ``allOf``)."""
    parts = schema.get("allOf") if set(schema) == {"allOf"} else None
    if isinstance(parts, Sequence) and not isinstance(parts, str):
        yield from (p for p in parts if isinstance(p, Mapping))
    else:
        yield schema


def check_config(
    server: str,
    schema: Mapping[str, Any],
    config: Mapping[str, Any],
    *,
    locate: Locate,
    catalog_problem: Callable[[str], Diagnostic],
) -> list[Diagnostic]:
    """Problems of ``server``'s settings (``config`` holds every server's) against ``schema``."""
    from jsonschema import exceptions, validators

    problems: list[Diagnostic] = []
    for part in sub_schemas(schema):
        key = part.get("name") if isinstance(part.get("name"), str) else server
        body = {k: v for k, v in part.items() if k not in ("name", "description")}
        if not body:
            continue
        cls = validators.validator_for(body)
        try:
            cls.check_schema(body)
        except exceptions.SchemaError as exc:
            problems.append(
                catalog_problem(f"config schema {key!r} is not valid JSON Schema: {exc.message}")
            )
            continue
        values = config.get(str(key), {})
        errors = sorted(cls(body).iter_errors(values), key=lambda e: list(e.absolute_path))
        for error in errors:
            path = tuple(error.absolute_path)
            problems.append(locate((str(key), *path), _message(error)))
    return problems


def _message(error: Any) -> str:
    """What is wrong, in the schema's words, without the value itself."""
    validator, wanted, instance = error.validator, error.validator_value, error.instance
    if validator == "required":
        missing = [
            name for name in wanted if isinstance(instance, Mapping) and name not in instance
        ]
        names = ", ".join(missing) or ", ".join(map(str, wanted))
        return f"missing required setting {names} (the catalog's config schema asks for it)"
    if validator == "type":
        kinds = wanted if isinstance(wanted, list) else [wanted]
        return f"expected {' or '.join(map(str, kinds))}, got {describe_kind(instance)}"
    if validator == "enum":
        allowed = ", ".join(map(_short, wanted))
        return f"expected one of {allowed}"
    if validator == "additionalProperties":
        return "has settings the catalog's config schema does not allow"
    return f"does not satisfy the catalog's config schema ({validator}: {_short(wanted)})"


def describe_kind(value: Any) -> str:
    """The JSON kind of a value (never the value: see the module docstring)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, Sequence):
        return "a list"
    return type(value).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def warning(diag: Diagnostic) -> Diagnostic:
    """The same diagnostic as a warning (a broken schema does not stop the server)."""
    return Diagnostic(
        message=diag.message,
        file=diag.file,
        line=diag.line,
        field=diag.field,
        severity=Severity.WARNING,
        server=diag.server,
    )
