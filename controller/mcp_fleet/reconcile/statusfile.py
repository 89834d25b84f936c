"""The status file: how ``mcp-fleet status`` in another process sees the controller.

After every pass the controller writes ``<fleet dir>/.state/status.json``
atomically (a temporary file in the same directory, fsync, rename), so a
reader sees either the previous or the new status, never half of one. A
file is simpler than a socket: it needs no server, survives the controller
(a stopped controller's last status is still readable, flagged as stale),
and works for every runtime. Its permissions are 0600, like secrets.env,
in a ``.state`` directory of mode 0700 (``private_files``).

Format (``version`` 1; keys are only ever added)::

    {
      "version": 1,
      "fleet": "my-fleet-1a2b3c4d",        # ownership label value
      "home": "/home/me/.mcp-fleet",
      "updated_at": 1767225600.0,          # Unix time of the pass
      "runtime": "process",                # the controller's --runtime
      "controller_pid": 4242,
      "file_errors": [Diagnostic...],      # non-empty: files broken, last good state in use
      "warnings": [Diagnostic...],
      "runtime_errors": {"docker": "..."}, # runtimes that could not be observed
      "pending": ["create server:x ..."],  # what the next pass would still do
      "all_ready": true,                   # every enabled server Ready (or cold, or per-client)
      "servers": [{"name", "desired", "state", "reason", "message", "runtime",
                   "instance", "restarts", "started_at", "exit_code",
                   "stderr_tail", "config_hash",
                   "session_instances"}...]    # per-client servers under ``up``: how many
    }                                          # session instances run (else null)

A ``sessions: per-client`` server is ``Stopped`` with reason ``PerClient``:
the controller never runs a shared instance of it. ``mcp-fleet up``, whose
router starts one instance per client session, fills ``session_instances``
and says the count in ``message``; a reader of an older file finds no key.

A Diagnostic is ``{"severity", "file", "line", "field", "server", "message",
"text"}``. Secret values never appear: every string is passed through the
process's secret redactor before writing, as a last line of defence.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import orjson

from mcp_fleet import conventions
from mcp_fleet.logsetup import redactor
from mcp_fleet.private_files import private_dir
from mcp_fleet.reconcile.snapshot import StatusSnapshot


def status_path(state_dir: Path) -> Path:
    return state_dir / conventions.STATUS_FILE


def write_status(path: Path, snapshot: StatusSnapshot) -> None:
    """Write ``snapshot`` to ``path`` atomically (tmp file, fsync, rename), mode 0600."""
    private_dir(path.parent)
    data = orjson.dumps(redactor().redact_document(snapshot.to_json()), option=orjson.OPT_INDENT_2)
    fd, tmp = tempfile.mkstemp(prefix=".status-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data + b"\n")
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise


def read_status(path: Path) -> StatusSnapshot | None:
    """The last status written, or None when no controller ever ran here."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    doc = orjson.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a status document")
    return StatusSnapshot.from_json(doc)


def controller_alive(snapshot: StatusSnapshot) -> bool:
    """Whether the process that wrote ``snapshot`` still runs."""
    pid = snapshot.controller_pid
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
