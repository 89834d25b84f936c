"""Findings of an outside review of ``mcp-fleet up``, each attack run against a real one.

- A legacy SSE session's id sent to ``/mcp`` (POST, GET, DELETE), or a
  streamable session's id sent to ``/messages``, gets a prompt 400 naming
  the right place; the POST used to hang forever (its answer went to the SSE
  stream), a GET took the legacy stream over. Both sessions go on working.
- Arguments nested deeper than 128 levels get a parse error at once and log
  nothing; a thousand levels used to log a full traceback per call (the
  router serialises a forwarded call again and orjson stops at 254). A call
  exactly at the limit is forwarded and audited, arguments included. A
  backend answering deeper than can be forwarded gets its call an error
  naming the server and one warning line, not a traceback and a hung call.
- A catalog grown past the size limit (8 MiB; here a sparse 400 MB file) is
  refused before it is read: the error names the file in the log and the
  status, the running server keeps serving, untouched, the controller's
  peak memory does not move; fixed, the file loads again.

(The fourth finding, volumes of ``process:`` entries, is proved in
test_security_path_traversal.py.)
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from faults_support import memory_kib
from support import until
from support.fleet_up import (
    ECHO,
    PY,
    auth_headers,
    create_token,
    mcp_client,
    process_entry,
    running_up,
    tool_text,
    write_fleet,
)

pytestmark = [pytest.mark.timeout(120)]

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "review", "version": "1"},
    },
}
PING = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
TOO_DEEP = "Parse error: arrays and objects nested deeper than 128 levels"

#: A stdio MCP server whose ``deep`` tool answers 600 levels deep, its answer not starting
#: with ``{"jsonrpc":"2.0","id":`` (so the router cannot swap the id in place: it has to
#: serialise the answer again, which orjson cannot past 254 levels).
DEEP_SERVER = textwrap.dedent(
    """
    import json, sys
    DEEP = '{"x":' * 600 + '1' + '}' * 600
    RESULTS = {
        "initialize": '{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},'
                      '"serverInfo":{"name":"deep","version":"1"}}',
        "tools/list": '{"tools":[{"name":"deep","inputSchema":{"type":"object"}}]}',
        "tools/call": '{"content":[],"structuredContent":' + DEEP + '}',
    }
    for line in sys.stdin:
        msg = json.loads(line)
        if "id" not in msg or "method" not in msg:
            continue
        result = RESULTS.get(msg["method"], "{}")
        tail = ',"jsonrpc":"2.0","id":' + json.dumps(msg["id"]) + '}\\n'
        sys.stdout.write('{"result":' + result + tail)
        sys.stdout.flush()
    """
)


def nested_call(depth: int, *, rid: int = 7) -> bytes:
    """A ``tools/call`` of echo ``depth`` levels deep (the message itself is level 1)."""
    inner = depth - 3  # message, params, arguments
    text = '{"a":' * inner + '"x"' + "}" * inner
    body = (
        f'{{"jsonrpc":"2.0","id":{rid},"method":"tools/call",'
        f'"params":{{"name":"echo","arguments":{{"text":{text}}}}}}}'
    )
    return body.encode()


async def open_session(http: httpx.AsyncClient, url: str, token: str) -> dict[str, str]:
    """Initialize a streamable HTTP session by hand; the headers of its later requests."""
    r = await http.post(url, headers=auth_headers(token), json=INIT)
    assert r.status_code == 200, r.text
    headers = {
        **auth_headers(token),
        "mcp-session-id": r.headers["mcp-session-id"],
        "mcp-protocol-version": "2025-06-18",
    }
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await http.post(url, headers=headers, json=note)).status_code == 202
    return headers


def answer(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC answer of a POST, whether plain JSON or the last event of an SSE stream."""
    if response.headers["content-type"].startswith("text/event-stream"):
        events = [ln[6:] for ln in response.text.splitlines() if ln.startswith("data: ")]
        return dict(json.loads(events[-1]))
    return dict(response.json())


async def sse_data(lines: AsyncIterator[str]) -> str:
    """The next ``data:`` of a legacy SSE stream."""
    async for line in lines:
        if line.startswith("data: "):
            return line[6:]
    raise AssertionError("the SSE stream ended")


# -- a. legacy and streamable session ids do not mix -------------------------------------


async def test_session_ids_of_the_other_wire_get_a_prompt_400_and_both_sessions_go_on(
    tmp_path: Path,
) -> None:
    home = write_fleet(tmp_path, {"echo": process_entry(ECHO)})
    token = create_token(home, "alice", "--servers", "echo")
    stranger = create_token(home, "bob", "--servers", "echo")
    async with running_up(home) as up, httpx.AsyncClient(timeout=10) as http:
        sse_headers = {"authorization": f"Bearer {token}", "accept": "text/event-stream"}
        async with http.stream("GET", up.base + "/sse", headers=sse_headers) as sse:
            lines = sse.aiter_lines()
            endpoint = await sse_data(lines)
            legacy = endpoint.split("session_id=", 1)[1]
            right_place = f"/messages?session_id={legacy}, not to /mcp"
            mistaken = {**auth_headers(token), "mcp-session-id": legacy}

            # A POST (request or notification) to /mcp: answered at once, not left hanging.
            for body in (PING, {"jsonrpc": "2.0", "method": "notifications/initialized"}):
                r = await http.post(up.url, headers=mistaken, json=body)
                assert r.status_code == 400, r.text
                assert r.json()["error"]["code"] == -32600
                assert right_place in r.json()["error"]["message"]
            # GET would have taken the legacy stream over; DELETE would have ended it.
            for method in ("GET", "DELETE"):
                r = await http.request(method, up.url, headers=mistaken)
                assert (r.status_code, right_place in r.text) == (400, True), r.text

            # The legacy session is intact: its answers still come on its stream.
            r = await http.post(up.base + endpoint, headers=auth_headers(token), json=INIT)
            assert r.status_code == 202, r.text
            first = json.loads(await sse_data(lines))
            assert first["id"] == 1 and "protocolVersion" in first["result"], first

        # The reverse: a streamable session's id at /messages.
        headers = await open_session(http, up.url, token)
        streamable = headers["mcp-session-id"]
        messages = f"{up.base}/messages?session_id={streamable}"
        r = await http.post(messages, headers=auth_headers(token), json=PING)
        assert r.status_code == 400
        assert "streamable HTTP session: post its messages to /mcp" in r.text
        r = await http.post(messages, headers=auth_headers(stranger), json=PING)
        assert (r.status_code, r.text) == (404, "Session not found")  # nothing told to others
        r = await http.post(up.url, headers=headers, json=PING)
        assert answer(r) == {"jsonrpc": "2.0", "id": 2, "result": {}}
    assert "Traceback" not in up.log()


# -- b. nesting ---------------------------------------------------------------------------


async def test_deep_nesting_gets_a_clean_error_and_no_traceback(tmp_path: Path) -> None:
    deep_server = tmp_path / "deep_server.py"
    deep_server.write_text(DEEP_SERVER)
    home = write_fleet(
        tmp_path,
        {"echo": process_entry(ECHO), "deep": process_entry([PY, str(deep_server)])},
    )
    token = create_token(home, "alice", "--servers", "echo,deep")
    audit = tmp_path / "audit.log"
    extra = ("--audit-log", str(audit), "--audit-arguments")
    async with running_up(home, *extra) as up, httpx.AsyncClient(timeout=10) as http:
        headers = await open_session(http, up.url, token)

        async def both_listed() -> bool:
            listed = {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}
            r = await http.post(up.url, headers=headers, json=listed)
            names = {t["name"] for t in answer(r).get("result", {}).get("tools", [])}
            return {"echo", "deep"} <= names

        await until(both_listed, what="echo and deep listed", context=up.log)

        for depth in (129, 255, 1000, 1025, 100_000):
            r = await http.post(up.url, headers=headers, content=nested_call(depth))
            assert r.status_code == 400, (depth, r.text)
            assert r.json()["error"] == {"code": -32700, "message": TOO_DEEP}, depth

        # Exactly at the limit: forwarded (echo refuses an object for its text) and audited.
        r = await http.post(up.url, headers=headers, content=nested_call(128, rid=8))
        assert r.status_code == 200 and answer(r)["id"] == 8, r.text

        def audited() -> list[dict[str, Any]]:
            lines = audit.read_text().splitlines() if audit.exists() else []
            return [d for d in map(json.loads, lines) if d.get("tool") == "echo"]

        (line,) = await until(audited, what="the audit line of the call at the limit")
        assert "arguments" in line or "arguments_truncated" in line, line

        # A backend answering deeper than can be forwarded: an error naming it, no hang.
        call = {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                "params": {"name": "deep", "arguments": {}}}  # fmt: skip
        r = await http.post(up.url, headers=headers, json=call)
        error = answer(r)["error"]
        assert (
            error["code"] == -32603 and "server 'deep' sent an invalid response" in error["message"]
        ), error
        warned = "server deep sent an invalid message (#1): response nested too deep to forward"
        await until(lambda: warned in up.log(), what="the warning", context=up.log)

        # Everything still works, and the whole log holds that one warning, no traceback.
        async with mcp_client(up.url, token) as session:
            result = await session.call_tool("echo", {"text": "still here"})
            assert tool_text(result) == "still here"
    log = up.log()
    assert "Traceback" not in log and "failed to handle" not in log, log
    assert [ln for ln in up.lines if "deep" in ln and "WARNING" in ln] == [
        ln for ln in up.lines if warned in ln
    ]
    assert len([ln for ln in up.lines if "nested" in ln]) == 1, log


# -- d. oversized fleet files ------------------------------------------------------------


def status(home: Path) -> dict[str, Any]:
    path = home / ".state" / "status.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


def echo_instance(home: Path) -> str | None:
    for server in status(home).get("servers", []):
        if server["name"] == "echo" and server["state"] == "Ready":
            return str(server["instance"])
    return None


async def test_a_catalog_grown_past_the_limit_is_refused_and_the_fleet_runs_on(
    tmp_path: Path,
) -> None:
    home = write_fleet(tmp_path, {"echo": process_entry(ECHO)})
    catalog = home / "catalogs" / "test.yaml"
    token = create_token(home, "alice", "--servers", "echo")
    async with running_up(home) as up, mcp_client(up.url, token) as session:
        instance = await until(lambda: echo_instance(home), what="echo Ready", context=up.log)
        assert tool_text(await session.call_tool("echo", {"text": "before"})) == "before"
        peak_before = memory_kib(up.proc.pid)["VmHWM"]

        good_size = catalog.stat().st_size
        os.truncate(catalog, 400 * 1024 * 1024)  # sparse: 400 MB the loader must never read
        refused = "test.yaml: file too large, not read: 419430400 bytes, the limit is 8388608"
        await until(lambda: refused in up.log(), what="the refusal logged", context=up.log)
        errors = await until(lambda: status(home).get("file_errors"), what="status file error")
        assert errors[0]["file"] == str(catalog) and refused in errors[0]["text"], errors

        assert tool_text(await session.call_tool("echo", {"text": "during"})) == "during"
        assert echo_instance(home) == instance  # the same process, never restarted
        grown = memory_kib(up.proc.pid)["VmHWM"] - peak_before
        assert grown < 64 * 1024, f"peak RSS grew by {grown} KiB"

        os.truncate(catalog, good_size)
        await until(lambda: status(home).get("file_errors") == [], what="loaded again")
        assert echo_instance(home) == instance
        assert tool_text(await session.call_tool("echo", {"text": "after"})) == "after"
