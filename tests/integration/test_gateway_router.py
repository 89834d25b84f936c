"""The team gateway in front of ``mcp-fleet up``: auth, allow-lists, rebinding, metrics, audit.

One ``mcp-fleet up`` runs the example fleet (``mcp-fleet init``: calc, notes,
time as local processes) over streamable HTTP with an audit log, after two
tokens were made with ``mcp-fleet token create``: ``admin`` for everything
and ``alice`` for ``--servers calc``. The official MCP client and plain HTTP
requests then check what a team shares: 401 without a token or with a bad
one, a restricted token that neither sees nor calls other servers' tools,
sessions that belong to their identity, DNS-rebinding Host/Origin refused,
probes, ``/metrics`` counting exactly the calls made, and an audit log with
one line per call and no secret in it or anywhere in the output. Two more
runs check refusals at start: a non-loopback address without auth (exit 2)
and a port in use (nothing started). Over stdio, where the client launched
the router and nobody is authenticated, ``--audit-log`` still records calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from prometheus_client.parser import text_string_to_metric_families
from router_support import (
    PY,
    ROOT,
    ClientRunner,
    stdio_client_to_router,
    text_of,
    tool_names,
    until_tools,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

CLI = [sys.executable, "-c", "from mcp_fleet.cli.main import app; app()"]
CALC_TOOLS = {"add", "subtract", "multiply", "divide", "echo"}
#: An argument value that must never reach the audit log or any output.
SECRET_ARGUMENT = "argsecret-" + secrets.token_hex(12)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


class Gateway:
    """A running ``mcp-fleet up`` and what the tests know about it."""

    def __init__(self, tmp: Path) -> None:
        self.home = tmp / "fleet"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/mcp"
        self.audit = tmp / "audit" / "calls.jsonl"
        self.out = tmp / "up.out"
        self.err = tmp / "up.err"
        #: Calls made (tools/call, prompts/get, resources/read, refused ones too).
        self.calls = 0
        self.proc: subprocess.Popen[bytes] | None = None
        assert cli("init", "--dir", str(self.home)).returncode == 0
        admin = cli("token", "create", "admin", "--dir", str(self.home))
        alice = cli("token", "create", "alice", "--servers", "calc", "--dir", str(self.home))
        assert admin.returncode == 0 and alice.returncode == 0, admin.stderr + alice.stderr
        self.admin, self.alice = admin.stdout.strip(), alice.stdout.strip()

    def start(self) -> None:
        args = ["up", "--dir", str(self.home), "--port", str(self.port)]
        args += ["--audit-log", str(self.audit), "--audit-arguments"]
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen([*CLI, *args], cwd=ROOT, stdout=out, stderr=err)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.err.read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError("mcp-fleet up never became ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def headers(self, token: str | None) -> dict[str, str]:
        base = {"accept": "application/json, text/event-stream"}
        return {**base, "authorization": f"Bearer {token}"} if token else base

    @contextlib.asynccontextmanager
    async def client(self, token: str) -> AsyncIterator[Any]:
        @contextlib.asynccontextmanager
        async def connect() -> AsyncIterator[Any]:
            http = create_mcp_http_client(headers={"authorization": f"Bearer {token}"})
            async with http, streamable_http_client(self.url, http_client=http) as streams:
                yield streams

        runner = ClientRunner(connect)
        try:
            yield await runner.session()
        finally:
            await runner.aclose()

    async def call(self, session: Any, name: str, arguments: dict[str, Any]) -> Any:
        self.calls += 1
        return await session.call_tool(name, arguments)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("gateway"))
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


INIT = orjson.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
)


async def test_no_token_or_a_bad_one_gets_401_and_a_good_one_a_session(gateway: Gateway) -> None:
    async with httpx.AsyncClient() as http:
        anonymous = await http.post(gateway.url, content=INIT, headers=gateway.headers(None))
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        assert "Bearer" in anonymous.json()["message"]
        bad = await http.post(
            gateway.url, content=INIT, headers=gateway.headers("mcpf_" + secrets.token_hex(20))
        )
        assert bad.status_code == 401 and bad.json()["error"] == "invalid_token"
    async with gateway.client(gateway.admin) as session:
        names = await tool_names(session)
        assert CALC_TOOLS | {"get_current_time", "add_note"} <= names
        assert text_of(await gateway.call(session, "add", {"a": 2, "b": 3})) == "5"


async def test_a_token_for_calc_sees_and_calls_only_calc(gateway: Gateway) -> None:
    async with gateway.client(gateway.admin) as session:
        assert (await session.list_prompts()).prompts  # the notes server's prompt
        assert (await session.list_resource_templates()).resource_templates
    async with httpx.AsyncClient() as http:
        init = await http.post(gateway.url, content=INIT, headers=gateway.headers(gateway.admin))
        assert "notes: Keep short notes" in init.json()["result"]["instructions"]
        init = await http.post(gateway.url, content=INIT, headers=gateway.headers(gateway.alice))
        assert "notes" not in init.json()["result"].get("instructions", "")
    async with gateway.client(gateway.alice) as session:
        assert await tool_names(session) == CALC_TOOLS
        assert not (await session.list_prompts()).prompts
        assert not (await session.list_resource_templates()).resource_templates
        assert text_of(await gateway.call(session, "multiply", {"a": 6, "b": 7})) == "42"
        with pytest.raises(MCPError) as refused:
            await gateway.call(session, "get_current_time", {"timezone": "UTC"})
        # Refused as if unknown: a restricted token learns nothing of other servers' tools
        # (the audit log and metrics still count it as forbidden).
        assert refused.value.code == -32602
        assert refused.value.message == "Unknown tool: get_current_time"
        gateway.calls += 1  # a prompts/get is a call too
        with pytest.raises(MCPError) as prompt:
            await session.get_prompt("summarize_notes")
        assert prompt.value.code == -32602
        assert prompt.value.message == "Unknown prompt: summarize_notes"


async def test_a_session_belongs_to_the_identity_that_opened_it(gateway: Gateway) -> None:
    async with httpx.AsyncClient() as http:
        opened = await http.post(gateway.url, content=INIT, headers=gateway.headers(gateway.admin))
        assert opened.status_code == 200
        sid = opened.headers["mcp-session-id"]
        ping = b'{"jsonrpc":"2.0","id":2,"method":"ping"}'
        stolen = await http.post(
            gateway.url,
            content=ping,
            headers={**gateway.headers(gateway.alice), "mcp-session-id": sid},
        )
        assert stolen.status_code == 403 and "another identity" in stolen.text
        own = await http.post(
            gateway.url,
            content=ping,
            headers={**gateway.headers(gateway.admin), "mcp-session-id": sid},
        )
        assert own.status_code == 200 and own.json()["result"] == {}


async def test_rebinding_host_and_origin_are_refused(gateway: Gateway) -> None:
    admin = gateway.headers(gateway.admin)
    async with httpx.AsyncClient() as http:
        evil_origin = await http.post(
            gateway.url, content=INIT, headers={**admin, "origin": "http://evil.example"}
        )
        assert evil_origin.status_code == 403 and "Origin" in evil_origin.json()["message"]
        evil_host = await http.post(
            gateway.url, content=INIT, headers={**admin, "host": f"evil.example:{gateway.port}"}
        )
        assert evil_host.status_code == 403 and "Host" in evil_host.json()["message"]
        local_page = await http.post(
            gateway.url, content=INIT, headers={**admin, "origin": "http://localhost:6274"}
        )
        assert local_page.status_code == 200


async def test_probes_and_status_answer(gateway: Gateway) -> None:
    async with httpx.AsyncClient() as http:
        health = await http.get(f"{gateway.base}/healthz")
        assert health.status_code == 200 and health.text == "ok"
        ready = await http.get(f"{gateway.base}/readyz")
        assert ready.status_code == 200 and ready.json() == {"ready": True}
        assert (await http.get(f"{gateway.base}/api/status")).status_code == 401
        status = await http.get(
            f"{gateway.base}/api/status", headers=gateway.headers(gateway.alice)
        )
        servers = status.json()["servers"]
        assert [s["name"] for s in servers] == ["calc"]
        assert servers[0]["state"] == "Ready" and set(servers[0]["tools"]) == CALC_TOOLS


def _calls(text: str) -> dict[tuple[str, str, str], float]:
    out: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "mcp_fleet_calls_total":
                labels = sample.labels
                out[(labels["server"], labels["tool"], labels["outcome"])] = sample.value
    return out


async def test_metrics_count_exactly_the_calls_made(gateway: Gateway) -> None:
    metrics_url = f"{gateway.base}/metrics"
    async with httpx.AsyncClient() as http:
        assert (await http.get(metrics_url)).status_code == 401
        before = _calls((await http.get(metrics_url, headers=gateway.headers(gateway.admin))).text)
        async with gateway.client(gateway.admin) as session:
            for i in range(3):
                await gateway.call(session, "add", {"a": i, "b": 1})
            result = await gateway.call(session, "divide", {"a": 1, "b": 0})
            assert result.is_error
            await gateway.call(session, "echo", {"text": "hello", "api_key": SECRET_ARGUMENT})
        async with gateway.client(gateway.alice) as session:
            with pytest.raises(MCPError):
                await gateway.call(session, "add_note", {"title": "t", "text": "x"})
        text = (await http.get(metrics_url, headers=gateway.headers(gateway.admin))).text
    after = _calls(text)
    delta = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
    assert delta == {
        ("calc", "add", "ok"): 3,
        ("calc", "divide", "tool_error"): 1,
        ("calc", "echo", "ok"): 1,
        ("notes", "add_note", "forbidden"): 1,
    }
    assert 'mcp_fleet_backend_state{mcp_fleet_backend_state="Ready",server="calc"} 1.0' in text
    assert "mcp_fleet_reconcile_passes_total" in text


async def test_audit_log_has_one_line_per_call_and_no_secret(gateway: Gateway) -> None:
    async with gateway.client(gateway.admin) as session:
        await gateway.call(session, "echo", {"text": "last", "password": SECRET_ARGUMENT})
    async with gateway.client(gateway.alice) as session:
        with pytest.raises(MCPError):
            await gateway.call(session, "read_note", {"title": SECRET_ARGUMENT})
    gateway.stop()  # the audit log is flushed and closed on the way out
    log = gateway.audit.read_text()
    lines = [orjson.loads(line) for line in log.splitlines()]
    assert len(lines) == gateway.calls
    for line in lines:
        assert {"time", "identity", "session", "server", "tool", "duration_ms", "outcome"} <= set(
            line
        )
        assert line["identity"] in ("token:admin", "token:alice")
    refused = [line for line in lines if line["outcome"] == "forbidden"]
    assert refused and all(line["identity"] == "token:alice" for line in refused)
    echoed = [line["arguments"] for line in lines if line["tool"] == "echo"]
    assert {"text": "last", "password": "***"} in echoed
    for arguments in echoed:  # values kept, secret-named keys masked
        assert arguments["text"] in ("hello", "last")
        assert all(v == "***" for k, v in arguments.items() if k != "text")
    everything = log + gateway.out.read_text() + gateway.err.read_text()
    for secret in (gateway.admin, gateway.alice, SECRET_ARGUMENT):
        assert secret not in everything
    assert gateway.audit.stat().st_mode & 0o077 == 0


def test_a_non_loopback_address_without_auth_refuses_to_start(tmp_path: Path) -> None:
    done = cli("up", "--dir", str(tmp_path), "--host", "0.0.0.0", "--port", str(free_port()))
    assert done.returncode == 2, done.stderr
    assert "without authentication" in done.stderr and "--allow-unauthenticated" in done.stderr


def test_a_port_in_use_fails_before_any_server_starts(tmp_path: Path) -> None:
    home = tmp_path / "fleet"
    assert cli("init", "--dir", str(home)).returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli("up", "--dir", str(home), "--port", str(port))
    assert done.returncode == 1 and "cannot listen" in done.stderr, done.stderr
    assert not [line for line in done.stderr.splitlines() if line.startswith("ready")]
    assert not (home / ".state" / "status.json").exists()


async def test_stdio_calls_are_audited_too(tmp_path: Path) -> None:
    audit = tmp_path / "stdio-audit.jsonl"
    calc = {"calc": [PY, "-m", "mcp_fleet.examples.servers.calc"]}
    async with stdio_client_to_router(calc, "--audit-log", str(audit)) as (session, _):
        await until_tools(session, {"add"})
        assert text_of(await session.call_tool("add", {"a": 1, "b": 2})) == "3"
        assert (await session.call_tool("divide", {"a": 1, "b": 0})).is_error
    deadline = time.monotonic() + 10
    while len(audit.read_text().splitlines() if audit.exists() else ()) < 2:
        assert time.monotonic() < deadline, "audit lines never written"
        await asyncio.sleep(0.05)
    lines = [orjson.loads(line) for line in audit.read_text().splitlines()]
    assert [(x["identity"], x["session"], x["tool"], x["outcome"]) for x in lines] == [
        ("anonymous", "stdio", "add", "ok"),
        ("anonymous", "stdio", "divide", "tool_error"),
    ]
    refused = cli("router", "--server", "calc=true", "--audit-log", "-")
    assert refused.returncode == 2 and "stdout carries the protocol" in refused.stderr


async def test_oversized_and_stalled_requests_are_cut_off() -> None:
    from mcp_fleet.router.http_server import Request, Responder, start_server

    seen: list[bytes] = []

    def handler(request: Request, responder: Responder) -> None:
        seen.append(request.body)
        responder.respond(200, [], b"ok")

    server, _ = await start_server(
        handler, host="127.0.0.1", port=0, max_body_bytes=1024, request_timeout=0.5
    )
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # Refused on the headers alone: the body is never waited for.
        writer.write(b"POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-length: 999999\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 413") and b"1024 bytes" in answer
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
        started = time.monotonic()
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 3
        writer.close()
        assert seen == []
    finally:
        server.close()
