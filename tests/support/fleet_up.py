"""A real ``mcp-fleet up`` in a subprocess, its tokens, and official MCP clients to it.

The security and integration tests attack and use the product as a user
runs it: a fleet directory on disk, ``mcp-fleet up`` as its own process
(``--port 0``: the URL is read from its log), tokens made with ``mcp-fleet
token create``, and the official MCP client with a bearer header::

    home = write_fleet(tmp_path, {"echo": process_entry(ECHO)})
    token = create_token(home, "alice", "--servers", "echo")
    async with running_up(home) as up:
        async with mcp_client(up.url, token) as session:
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

ROOT = Path(__file__).resolve().parents[2]
SERVERS = ROOT / "tests" / "servers"
PY = sys.executable
LAUNCH = "from mcp_fleet.cli.main import app\napp()\n"
ECHO = [PY, str(SERVERS / "echo_server.py")]


def process_entry(command: Sequence[str], *, env: Mapping[str, str] | None = None) -> str:
    """The catalog lines (under a server's name) of a local-process server."""
    quoted = ", ".join('"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"' for a in command)
    text = f"    description: test server\n    process:\n      command: [{quoted}]\n"
    if env:
        text += "      env:\n" + "".join(f'        {k}: "{v}"\n' for k, v in env.items())
    return text


def write_fleet(tmp: Path, servers: Mapping[str, str], *, name: str = "fleet") -> Path:
    """A fleet directory: one catalog holding ``servers`` (name -> catalog lines), all enabled."""
    home = tmp / name
    (home / "catalogs").mkdir(parents=True, exist_ok=True)
    body = "".join(f"  {server}:\n{lines}" for server, lines in servers.items())
    (home / "catalogs" / "test.yaml").write_text(f'version: "2"\nregistry:\n{body}')
    enabled = "".join(f"  {server}: {{}}\n" for server in servers)
    (home / "registry.yaml").write_text(f"registry:\n{enabled}")
    return home


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``mcp-fleet ARGS`` (the installed code), failing the test on a non-zero exit."""
    done = subprocess.run(
        [PY, "-c", LAUNCH, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 0, f"mcp-fleet {' '.join(args)}: {done.stderr}"
    return done


def create_token(home: Path, name: str, *limits: str) -> str:
    """``mcp-fleet token create NAME LIMITS``: the token it prints."""
    return cli("token", "create", name, *limits, "--dir", str(home)).stdout.strip().split()[-1]


@dataclass
class Up:
    """One ``mcp-fleet up`` process: its MCP URL, base URL and what it logged."""

    proc: asyncio.subprocess.Process
    url: str = ""
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @property
    def base(self) -> str:
        return self.url.rsplit("/", 1)[0]

    def log(self) -> str:
        return "\n".join(self.lines)


async def start_up(
    home: Path, *extra: str, env: Mapping[str, str] | None = None, preamble: str = ""
) -> Up:
    """Start ``mcp-fleet up --port 0 --dir HOME EXTRA`` and wait until it listens.

    ``preamble`` is Python run in the process first (e.g. to lower a resource limit).
    """
    proc = await asyncio.create_subprocess_exec(
        PY, "-c", preamble + LAUNCH, "up", "--port", "0", "--dir", str(home), *extra,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, cwd=str(ROOT), env={**os.environ, **(env or {})},
    )  # fmt: skip
    up = Up(proc)
    url: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def read() -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            up.lines.append(text)
            found = re.search(r" on (http://\S+/mcp)", text)
            if found and not url.done():
                url.set_result(found.group(1))
        if not url.done():
            url.set_exception(AssertionError("up exited:\n" + "\n".join(up.lines[-40:])))

    up.reader = asyncio.create_task(read())
    up.url = await asyncio.wait_for(url, 90)
    return up


async def stop_up(up: Up, *, sig: int = signal.SIGTERM) -> None:
    if up.proc.returncode is None:
        up.proc.send_signal(sig)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(up.proc.wait(), 30)
    if up.proc.returncode is None:
        up.proc.kill()
        await up.proc.wait()
    if up.reader is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(up.reader, 5)


@contextlib.asynccontextmanager
async def running_up(
    home: Path, *extra: str, env: Mapping[str, str] | None = None
) -> AsyncIterator[Up]:
    """``mcp-fleet up`` for the duration of the block (see ``start_up``)."""
    up = await start_up(home, *extra, env=env)
    try:
        yield up
    finally:
        await stop_up(up)


@contextlib.asynccontextmanager
async def mcp_client(url: str, token: str | None = None) -> AsyncIterator[ClientSession]:
    """An initialized official MCP client session over streamable HTTP (bearer ``token``)."""
    headers = {"authorization": f"Bearer {token}"} if token else None
    http = create_mcp_http_client(headers=headers)
    async with (
        http,
        streamable_http_client(url, http_client=http) as (read, write, *_),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def auth_headers(token: str | None) -> dict[str, str]:
    """Headers of a raw MCP POST (for httpx) with ``token``."""
    base = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    return {**base, "authorization": f"Bearer {token}"} if token else base


def tool_text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)
