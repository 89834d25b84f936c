"""Error and diagnostic types: every problem names its file, line and field.

Users fix files, not stack traces. A ``Diagnostic`` carries where the problem
is (``file:line``), which field (a dotted path such as
``registry.cisco-asa.enabled``) and what was expected, and renders as the one
line the user reads::

    registry.yaml:7: registry.cisco-asa.enabled: expected true/false, got "yes please"

``FleetConfigError`` is the one exception type the loaders raise; the CLI maps
it to exit code 2 and the controller keeps its last good state when it sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from mcp_fleet.status import REASON_RUNTIME_ERROR


class Severity(StrEnum):
    """How bad a diagnostic is: errors block a file (or a server), warnings inform."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem found in a fleet file, pointing at the place to fix."""

    message: str
    file: Path | None = None
    line: int | None = None
    field: str | None = None
    severity: Severity = Severity.ERROR
    server: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file.name if self.line is None else f"{self.file.name}:{self.line}"
            where += ": "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"

    def to_json(self) -> dict[str, object]:
        """The stable JSON form used by ``--json`` outputs and the status file."""
        return {
            "severity": self.severity.value,
            "file": str(self.file) if self.file else None,
            "line": self.line,
            "field": self.field,
            "server": self.server,
            "message": self.message,
            "text": str(self),
        }


class FleetError(Exception):
    """Base class of mcp-fleet's own errors (anything else is a bug)."""


class FleetConfigError(FleetError):
    """A fleet file is invalid; carries one or more diagnostics.

    The message is the diagnostics, one per line, so ``str(err)`` is what the
    user should see.
    """

    def __init__(self, diagnostics: list[Diagnostic] | Diagnostic) -> None:
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class RuntimeFailure(FleetError):
    """A runtime could not do what it was asked (daemon down, image missing...).

    ``reason`` is the status reason (``status`` vocabulary) the controller
    reports for the failure: ``RuntimeError`` unless a subclass says better
    (``ImageUnavailable``, ``InvalidSpec``...) or the raiser passes one.
    """

    reason: str = REASON_RUNTIME_ERROR

    def __init__(self, *args: object, reason: str | None = None) -> None:
        super().__init__(*args)
        if reason is not None:
            self.reason = reason
