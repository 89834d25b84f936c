"""The audit log: one JSON line per call, who called what and how it went.

A line (keys always present, in this order)::

    {"time": "2026-01-01T12:00:00.123Z", "identity": "token:alice", "session": "9f2c...",
     "method": "tools/call", "server": "github", "tool": "create_issue",
     "duration_ms": 41.7, "outcome": "ok", "request_bytes": 312, "response_bytes": 2048}

plus ``error`` (the error message, when the call failed) and ``arguments``
(only with ``log_arguments=True``). Argument values are not logged by
default: they are where secrets and personal data travel. When asked for,
they are logged with the value of every key that names a secret
(``password``, ``token``, ``api_key``, ``authorization``...) replaced by
``***``, every known secret value (the fleet's secrets.env, through
``logsetup.redactor()``) masked wherever it appears, and the whole cut to
``max_argument_bytes``. The error message is masked the same way. The
gateway's own bearer tokens never reach an audit call.

Cheap on the hot path: ``record`` builds a small tuple and appends it to a
deque (no formatting, no I/O, no lock, no thread wake-up but the first
after the writer went idle); a background thread wakes for that first
entry, lets a batch gather for ``batch_seconds``, turns the batch into JSON
(orjson) and writes it in one go, to a rotating file (mode 0600;
``max_bytes`` x ``backup_count``, rotated between lines) or to
stdout/stderr. Waking and writing once per line instead cost the router
more CPU per call than the rest of the gateway together. If the writer
falls behind by ``queue_size`` entries, new entries are dropped and
counted, and the log says so in a line of its own (``{"event":
"audit_dropped", "count": N}``) rather than blocking calls.
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import orjson

from mcp_fleet.logsetup import MASK, SecretRedactor, redactor

FILE_MODE: Final = 0o600
#: Keys whose values are masked when arguments are logged (case-insensitive, anywhere in the key).
SECRET_KEY_RE: Final = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[_-]?key|apikey|auth|credential|"
    r"private[_-]?key|cookie|session[_-]?id|signature|bearer",
    re.IGNORECASE,
)

Destination = Path | Literal["stdout", "stderr"]


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """Where audit lines go and what they hold (``destination=None``: no audit log)."""

    destination: Destination | None = None
    log_arguments: bool = False
    max_bytes: int = 50 * 1024 * 1024
    backup_count: int = 5
    queue_size: int = 10_000
    max_argument_bytes: int = 4096
    #: How long the writer lets entries gather before writing them together.
    batch_seconds: float = 0.05


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating file whose every generation is created with mode 0600."""

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        return open(fd, "a", encoding=self.encoding)


def redact_arguments(value: Any, secrets: SecretRedactor) -> Any:
    """``value`` with secret-named keys masked and known secret values masked in strings."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = str(key)
            out[name] = MASK if SECRET_KEY_RE.search(name) else redact_arguments(item, secrets)
        return out
    if isinstance(value, list | tuple):
        return [redact_arguments(v, secrets) for v in value]
    if isinstance(value, str):
        return secrets.redact(value)
    return value


class AuditLog:
    """Receives call records on the event loop, writes them from a thread."""

    def __init__(self, settings: AuditSettings, *, secrets: SecretRedactor | None = None) -> None:
        self.settings = settings
        self.enabled = settings.destination is not None
        self._secrets = secrets or redactor()
        self._queue: deque[tuple[Any, ...]] = deque()
        self._wake = threading.Event()
        self._busy = False
        self._stopping = False
        self._second = -1
        self._second_text = ""
        self.dropped = 0
        self._reported = 0
        self._handler: logging.Handler | None = None
        self._thread: threading.Thread | None = None
        if self.enabled:
            self._handler = self._make_handler(settings)
            self._handler.setFormatter(logging.Formatter("%(message)s"))
            self._thread = threading.Thread(target=self._run, name="mcp-fleet-audit", daemon=True)
            self._thread.start()

    @staticmethod
    def _make_handler(settings: AuditSettings) -> logging.Handler:
        dest = settings.destination
        if dest == "stdout":
            return logging.StreamHandler(sys.stdout)
        if dest == "stderr":
            return logging.StreamHandler(sys.stderr)
        assert isinstance(dest, Path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        return _PrivateRotatingFileHandler(
            dest, maxBytes=settings.max_bytes, backupCount=settings.backup_count, encoding="utf-8"
        )

    def record(
        self,
        *,
        identity: str,
        session: str | None,
        server: str,
        tool: str | None,
        duration_ms: float,
        outcome: str,
        request_bytes: int = 0,
        response_bytes: int = 0,
        method: str = "tools/call",
        error: str | None = None,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue one call's line; never blocks, never raises."""
        if not self.enabled:
            return
        args: bytes | None = None
        if arguments is not None and self.settings.log_arguments:
            try:
                args = orjson.dumps(arguments)  # a snapshot: the caller may reuse the dict
            except TypeError:
                args = None
        entry = (time.time(), identity, session, method, server, tool, duration_ms, outcome,
                 request_bytes, response_bytes, error, args)  # fmt: skip
        if len(self._queue) >= self.settings.queue_size:
            self.dropped += 1
            return
        self._queue.append(entry)
        if not self._wake.is_set():
            self._wake.set()

    def _line(self, entry: tuple[Any, ...]) -> bytes:
        (stamp, identity, session, method, server, tool, duration_ms, outcome,
         request_bytes, response_bytes, error, args) = entry  # fmt: skip
        second = int(stamp)
        if second != self._second:  # formatting a time costs more than the rest of the line
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        doc: dict[str, Any] = {
            "time": f"{self._second_text}{min(999, int((stamp - second) * 1000)):03d}Z",
            "identity": identity,
            "session": session,
            "method": method,
            "server": server,
            "tool": tool,
            "duration_ms": round(float(duration_ms), 3),
            "outcome": outcome,
            "request_bytes": request_bytes,
            "response_bytes": response_bytes,
        }
        if error is not None:
            doc["error"] = self._secrets.redact(str(error))
        if args is not None:
            redacted = redact_arguments(orjson.loads(args), self._secrets)
            text = orjson.dumps(redacted)
            if len(text) > self.settings.max_argument_bytes:
                doc["arguments_truncated"] = text[: self.settings.max_argument_bytes].decode(
                    "utf-8", "ignore"
                )
            else:
                doc["arguments"] = redacted
        return orjson.dumps(doc)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            self._drain()
            if self._stopping and not self._queue:
                break
            time.sleep(self.settings.batch_seconds)  # let the next batch gather

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            self._busy = True
            lines: list[str] = []
            for _ in range(min(len(queue), 1000)):
                try:
                    lines.append(self._line(queue.popleft()).decode())
                except Exception:  # a bad entry must not stop the log
                    logging.getLogger(__name__).exception("audit line not written")
            if self.dropped != self._reported:
                count, self._reported = self.dropped - self._reported, self.dropped
                lines.append(orjson.dumps({"event": "audit_dropped", "count": count}).decode())
            try:
                self._write(lines)
            except Exception:
                logging.getLogger(__name__).exception("audit lines not written")
        self._busy = False

    def _write(self, lines: list[str]) -> None:
        handler = self._handler
        assert isinstance(handler, logging.StreamHandler)
        handler.acquire()
        try:
            if isinstance(handler, logging.handlers.RotatingFileHandler) and handler.maxBytes > 0:
                self._write_rotating(handler, lines)
            else:
                handler.stream.write("".join(line + "\n" for line in lines))
                handler.stream.flush()
        finally:
            handler.release()

    @staticmethod
    def _write_rotating(handler: logging.handlers.RotatingFileHandler, lines: list[str]) -> None:
        """Write ``lines``, starting a new file before a line that would pass ``maxBytes``."""
        if handler.stream is None:
            handler.stream = handler._open()
        stream = handler.stream
        size = stream.tell()
        chunk: list[str] = []
        for line in lines:
            n = len(line.encode()) + 1
            if size > 0 and size + n > handler.maxBytes:
                stream.write("".join(chunk))
                chunk = []
                handler.doRollover()
                stream = handler.stream
                size = 0
            chunk.append(line + "\n")
            size += n
        stream.write("".join(chunk))
        stream.flush()

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every queued line is written (tests, shutdown)."""
        self._wake.set()
        deadline = time.monotonic() + timeout
        while (self._queue or self._busy) and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, stop the writer, close the file. Idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping = True
        self._wake.set()
        thread.join(timeout)
        if self._handler is not None:
            self._handler.close()
        self.enabled = False
