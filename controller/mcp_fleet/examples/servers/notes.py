"""An MCP server keeping short notes in memory, built on the official ``mcp`` SDK.

It exists to show a realistic server in the example fleet: several tools, a
resource template (``note://{title}``) and a prompt. Notes live as long as
the process, and every client of a shared backend sees the same notes, which
makes the router's session sharing visible. Run with
``python -m mcp_fleet.examples.servers.notes`` (stdio).
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

server = MCPServer(
    name="notes",
    title="Notes",
    instructions="Keep short notes: add_note, list_notes, read_note, delete_note.",
    version="1.0.0",
)
_notes: dict[str, str] = {}


@server.tool()
def add_note(title: str, text: str) -> str:
    """Add (or replace) the note called ``title``."""
    replaced = title in _notes
    _notes[title] = text
    return f"{'replaced' if replaced else 'added'} note {title!r}"


@server.tool()
def list_notes() -> list[str]:
    """The titles of every note, sorted."""
    return sorted(_notes)


@server.tool()
def read_note(title: str) -> str:
    """The text of the note called ``title``."""
    if title not in _notes:
        raise ValueError(f"no note called {title!r}")
    return _notes[title]


@server.tool()
def delete_note(title: str) -> str:
    """Delete the note called ``title``."""
    if _notes.pop(title, None) is None:
        raise ValueError(f"no note called {title!r}")
    return f"deleted note {title!r}"


@server.resource("note://{title}", name="note", mime_type="text/plain")
def note_resource(title: str) -> str:
    """A note as a resource."""
    return _notes.get(title, "")


@server.prompt()
def summarize_notes() -> str:
    """Ask the model to summarise every note."""
    body = "\n".join(f"- {t}: {x}" for t, x in sorted(_notes.items())) or "(no notes)"
    return f"Summarise these notes in three sentences:\n{body}"


def main() -> None:
    server.run()


if __name__ == "__main__":
    main()
