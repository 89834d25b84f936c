"""Structured logging: one line per event, as text for people or JSON for machines.

Every event is a short name plus fields (``server``, ``reason``, ...), logged
with ``log_event(logger, level, event, **fields)``. The text form is
``2026-01-01T12:00:00Z INFO  state server=time from=Starting to=Ready
reason=Initialized``; ``--log-format json`` prints one JSON object per line
with the same keys, for log shippers.

Secrets: values never reach a log call on purpose, but a server's error
message might echo one back. ``SecretRedactor`` is a logging filter that
replaces every known secret value (the controller feeds it the values of
secrets.env) with ``***`` in the message, its arguments and its fields, as
a last line of defence. It sits on the handler, so it sees records from
every logger of the process.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Iterable
from typing import Any, Literal, TextIO

import orjson

LogFormat = Literal["text", "json"]
MASK = "***"
#: Shorter values are not redacted: masking "1" everywhere would garble every line.
MIN_SECRET_LENGTH = 4
_FIELDS = "fleet_fields"


def log_event(logger: logging.Logger, level: int, event: str, /, **fields: Any) -> None:
    """Log ``event`` with structured ``fields`` (rendered by ``FleetFormatter``)."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={_FIELDS: fields})


class SecretRedactor(logging.Filter):
    """Replaces known secret values with ``***`` in every record it sees."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: tuple[str, ...] = ()

    def set_secrets(self, values: Iterable[str]) -> None:
        found = {v for v in values if len(v) >= MIN_SECRET_LENGTH}
        # Longest first, so a secret containing another is masked whole.
        self._secrets = tuple(sorted(found, key=lambda v: (-len(v), v)))

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        fields = getattr(record, _FIELDS, None)
        if isinstance(fields, dict):
            setattr(record, _FIELDS, {k: self._redact_value(v) for k, v in fields.items()})
        return True

    def _redact_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, list | tuple):
            return [self._redact_value(v) for v in value]
        return value


class FleetFormatter(logging.Formatter):
    """Renders a record as one text line or one JSON object."""

    def __init__(self, fmt: LogFormat = "text") -> None:
        super().__init__()
        self.fmt = fmt

    def format(self, record: logging.LogRecord) -> str:
        ts = dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
        stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
        fields = getattr(record, _FIELDS, None) or {}
        event = record.getMessage()
        exc = record.exc_text or (self.formatException(record.exc_info) if record.exc_info else "")
        if self.fmt == "json":
            doc: dict[str, Any] = {
                "ts": stamp,
                "level": record.levelname.lower(),
                "logger": record.name,
                "event": event,
            }
            doc.update({k: v for k, v in fields.items() if k not in doc})
            if exc:
                doc["exception"] = exc
            return orjson.dumps(doc, default=str).decode()
        parts = [stamp, f"{record.levelname:<7}", event]
        parts += [f"{k}={_quote(v)}" for k, v in fields.items() if v is not None]
        line = " ".join(parts)
        if exc:
            line += " exception=" + _quote(exc)
        return line


def _quote(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if text and all(c not in text for c in ' "=\n\t'):
        return text
    return orjson.dumps(text).decode()


_redactor = SecretRedactor()


def redactor() -> SecretRedactor:
    """The process-wide redaction filter (the controller feeds it secret values)."""
    return _redactor


def setup_logging(
    *,
    fmt: LogFormat = "text",
    level: int | str = logging.INFO,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send mcp-fleet's logs (and libraries' warnings) to ``stream`` (stderr), one line each.

    Idempotent: a second call replaces the handler it installed before.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_mcp_fleet", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(FleetFormatter(fmt))
    handler.addFilter(_redactor)
    handler._mcp_fleet = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("mcp_fleet").setLevel(level)
    return handler
