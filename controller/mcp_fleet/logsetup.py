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

A value is also masked as a server may spell it when it prints it inside
something else (``secret_forms``): JSON-escaped (``json.dumps(v)[1:-1]``),
``repr``-escaped (of the text and of its UTF-8 bytes), URL-encoded
(``quote``, ``quote(safe="")``, ``quote_plus``) and base64 (standard and
URL-safe, with and without padding, and the part of it that does not depend
on what precedes the value, so ``Basic base64("user:" + v)`` is caught too).
The forms are computed once per ``set_secrets``, not per line.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import sys
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TextIO

import orjson

LogFormat = Literal["text", "json"]
MASK = "***"
#: Shorter values are not redacted: masking "1" everywhere would garble every line.
MIN_SECRET_LENGTH = 4
#: Base64 forms shorter than this are not masked: 5 characters of base64 match by chance.
MIN_ENCODED_LENGTH = 6
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
        """Mask ``values`` (and their escaped forms) from now on, instead of the previous ones."""
        found = {f for v in values if len(v) >= MIN_SECRET_LENGTH for f in secret_forms(v)}
        # Longest first, so a secret containing another is masked whole.
        self._secrets = tuple(sorted(found, key=lambda v: (-len(v), v)))

    @property
    def forms(self) -> tuple[str, ...]:
        """Every string masked (the values and their escaped forms), longest first."""
        return self._secrets

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def redact_document(self, value: Any) -> Any:
        """A copy of ``value`` (JSON-like: dicts, lists, strings...) with its strings redacted."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, list | tuple):
            return [self.redact_document(v) for v in value]
        if isinstance(value, Mapping):
            return {k: self.redact_document(v) for k, v in value.items()}
        return value

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


def secret_forms(value: str) -> frozenset[str]:
    """``value`` and the ways a server may spell it inside other text (see the module doc).

    Forms shorter than ``MIN_SECRET_LENGTH`` (base64: ``MIN_ENCODED_LENGTH``) are left out.
    """
    raw = value.encode("utf-8", "surrogatepass")
    texts = {
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        repr(value)[1:-1],
        repr(raw)[2:-1],
        urllib.parse.quote(value),
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
    }
    encoded: set[str] = set()
    for shift in range(3):
        # The value after ``shift`` bytes (mod 3) of anything: the characters that only
        # depend on the value run from ceil(8 * shift / 6) to floor(8 * (shift + n) / 6).
        text = base64.b64encode(b"\0" * shift + raw).decode()
        core = text[(8 * shift + 5) // 6 : 8 * (shift + len(raw)) // 6]
        whole = {text, text.rstrip("=")} if shift == 0 else set()
        for form in {core, *whole}:
            encoded |= {form, form.translate(_URLSAFE)}
    return frozenset(
        {f for f in texts if len(f) >= MIN_SECRET_LENGTH}
        | {f for f in encoded if len(f) >= MIN_ENCODED_LENGTH}
    )


_URLSAFE = str.maketrans("+/", "-_")


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
