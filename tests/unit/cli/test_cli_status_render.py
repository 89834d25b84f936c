"""`mcp-fleet status` reads well in a narrow terminal too.

Short columns never fold mid-word; on a terminal narrower than the table
needs, each server's message goes under the table on a line of its own
instead of a column squeezed to a few characters; process instances show
as ``pid N``.
"""

from __future__ import annotations

from mcp_fleet.cli.controller_cmds import render_status
from mcp_fleet.reconcile.snapshot import ServerStatus, StatusSnapshot
from mcp_fleet.status import ServerState
from rich.console import Console

MESSAGE = "process servers end with their controller, and this one ended with it"


def text_at(width: int) -> str:
    servers = (
        ServerStatus("calc", "enabled", ServerState.READY, "Initialized", "",
                     runtime="process", instance="pid:16496:1817420"),
        ServerStatus("notes", "enabled", ServerState.STOPPED, "ControllerExited", MESSAGE,
                     runtime="process"),
    )  # fmt: skip
    snap = StatusSnapshot(fleet="f", home="/h", updated_at=100.0, runtime="process",
                          controller_pid=1, servers=servers)  # fmt: skip
    console = Console(width=width, record=True, color_system=None)
    console.print(render_status(snap, alive=True, now=100.0, width=width))
    return console.export_text()


def test_narrow_terminal_puts_messages_under_the_table() -> None:
    text = text_at(80)
    lines = text.splitlines()
    assert "MESSAGE" not in text
    assert f"notes: {MESSAGE}" in " ".join(line.strip() for line in lines)
    assert any(line.startswith("calc ") and "Initialized" in line for line in lines)
    assert any(line.startswith("notes ") and "ControllerExited" in line for line in lines)
    assert "pid 16496" in text and "1817420" not in text


def test_wide_terminal_keeps_the_message_column() -> None:
    text = text_at(200)
    notes = next(line for line in text.splitlines() if line.startswith("notes "))
    assert "MESSAGE" in text and MESSAGE in notes
