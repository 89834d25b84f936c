"""OpenTelemetry tracing through the real router, exported over OTLP/HTTP to a local collector.

``mcp-fleet up`` runs as a user would run it with tracing on: nothing but the
standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` in its environment, pointing at a
tiny collector this test runs on 127.0.0.1 (an ``http.server`` that keeps
every ``POST /v1/traces``). The fleet has one on-demand process server whose
``trace_context`` tool returns the trace context it received in
``params._meta``, so the test sees both ends of the propagation. The
official MCP client sends a ``traceparent`` HTTP header on every request and,
for one call, its own context in ``params._meta``. The spans that arrive are
decoded with the OTLP protobuf definitions and checked: names, kinds, the
MCP attributes, parents and links, the tool error, the cold start, and the
resource's service name.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from router_support import PY, ROOT, ClientRunner, text_of
from support import free_port, until_sync

pytestmark = [pytest.mark.timeout(90), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

LAUNCH = "from mcp_fleet.cli.main import app\napp()\n"
HEADER_TRACE = "0af7651916cd43dd8448eb211c80319c"
HEADER_SPAN = "b7ad6b7169203331"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"

#: A server whose tool answers with the trace context it was sent.
META_SERVER = """
import json
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("meta")


@server.tool()
def trace_context(ctx: Context) -> str:
    meta = dict(ctx.request_context.meta or {})
    return json.dumps({key: meta.get(key) for key in ("traceparent", "tracestate")})


@server.tool()
def fail() -> str:
    raise ValueError("this tool always fails")


server.run("stdio")
"""


class Collector:
    """An OTLP/HTTP trace receiver on 127.0.0.1 that keeps what it is sent."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                collector.paths.append(self.path)
                collector.requests.append(request)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self) -> list[Span]:
        return [
            span
            for request in list(self.requests)
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]

    def service_names(self) -> set[str]:
        return {
            attrs(rs.resource.attributes).get("service.name", "")
            for request in list(self.requests)
            for rs in request.resource_spans
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def attrs(values: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in values:
        assert isinstance(kv, KeyValue)
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


def write_fleet(home: Path) -> None:
    (home / "catalogs").mkdir(parents=True)
    server = home / "meta_server.py"
    server.write_text(META_SERVER)
    (home / "catalogs" / "test.yaml").write_text(
        'version: "2"\nregistry:\n'
        f'  meta:\n    description: meta\n    process:\n      command: ["{PY}", "{server}"]\n'
        "    lifecycle: on-demand\n    tools: [trace_context, fail]\n"
    )
    (home / "registry.yaml").write_text("registry:\n  meta:\n    catalog: test\n")


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.close()


@contextlib.contextmanager
def traced_up(tmp: Path, collector: Collector) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    home = tmp / "fleet"
    write_fleet(home)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    err = tmp / "up.err"
    with err.open("wb") as stderr:
        proc = subprocess.Popen(
            [PY, "-c", LAUNCH, "up", "--dir", str(home), "--port", str(port)],
            cwd=ROOT, env=env, stderr=stderr,
        )  # fmt: skip
    try:

        def ready() -> bool:
            assert proc.poll() is None, err.read_text()
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            return False

        until_sync(ready, within=40, every=0.1, what="mcp-fleet up ready")
        yield f"http://127.0.0.1:{port}/mcp", proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def hex_id(raw: bytes) -> str:
    return raw.hex()


def named(spans: list[Span], name: str) -> list[Span]:
    return [s for s in spans if s.name == name]


async def test_calls_through_the_router_are_traced_and_propagated(
    tmp_path: Path, collector: Collector
) -> None:
    header = f"00-{HEADER_TRACE}-{HEADER_SPAN}-01"
    with traced_up(tmp_path, collector) as (url, proc):

        @contextlib.asynccontextmanager
        async def connect() -> Any:
            http = create_mcp_http_client(headers={"traceparent": header})
            async with http, streamable_http_client(url, http_client=http) as streams:
                yield streams

        runner = ClientRunner(connect)
        try:
            session = await runner.session()
            # A cold on-demand server: the first call starts it.
            by_header = json.loads(text_of(await session.call_tool("trace_context", {})))
            by_meta = json.loads(
                text_of(
                    await session.call_tool(
                        "trace_context",
                        {},
                        meta={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"},
                    )
                )
            )
            failed = await session.call_tool("fail", {})
            assert failed.is_error
        finally:
            await runner.aclose()
        # Spans are exported in batches every 100 ms; the rest when the process exits.
        for _ in range(100):
            if len(named(collector.spans(), "tools/call trace_context")) >= 2 and named(
                collector.spans(), "tools/call fail"
            ):
                break
            await asyncio.sleep(0.1)
        proc.terminate()
        proc.wait(15)

    spans = collector.spans()
    assert set(collector.paths) == {"/v1/traces"}
    assert collector.service_names() == {"mcp-fleet"}
    calls = named(spans, "tools/call trace_context")
    assert len(calls) == 2, [s.name for s in spans]
    first, second = sorted(calls, key=lambda s: s.start_time_unix_nano)

    # The HTTP header's context is the parent of the first call's span...
    assert first.kind == Span.SpanKind.SPAN_KIND_SERVER
    assert hex_id(first.trace_id) == HEADER_TRACE
    assert hex_id(first.parent_span_id) == HEADER_SPAN
    # ...and the server got the router span's context in params._meta.
    assert by_header["traceparent"] == f"00-{HEADER_TRACE}-{hex_id(first.span_id)}-01"
    a = attrs(first.attributes)
    assert a["mcp.method.name"] == "tools/call"
    assert a["gen_ai.operation.name"] == "execute_tool"
    assert a["gen_ai.tool.name"] == "trace_context"
    assert a["mcp_fleet.server"] == "meta"
    assert a["mcp_fleet.identity"] == "anonymous"
    assert a["mcp_fleet.outcome"] == "ok"
    assert a["network.transport"] == "tcp"
    assert a["mcp.session.id"] and a["jsonrpc.request.id"]
    assert a["mcp_fleet.request.size"] > 0 and a["mcp_fleet.response.size"] > 0

    # With context in params._meta, that is the parent and the header a link.
    assert hex_id(second.trace_id) == CLIENT_TRACE
    assert hex_id(second.parent_span_id) == CLIENT_SPAN
    assert [hex_id(link.span_id) for link in second.links] == [HEADER_SPAN]
    assert by_meta["traceparent"] == f"00-{CLIENT_TRACE}-{hex_id(second.span_id)}-01"
    assert attrs(second.attributes)["mcp.session.id"] == a["mcp.session.id"]

    [fail] = named(spans, "tools/call fail")
    assert attrs(fail.attributes)["error.type"] == "tool_error"
    assert fail.status.code == Status.StatusCode.STATUS_CODE_ERROR

    [cold] = named(spans, "cold_start meta")
    assert attrs(cold.attributes)["mcp_fleet.server"] == "meta"
    assert cold.end_time_unix_nano > cold.start_time_unix_nano
    # The first call waited for the cold start: it began before the start and ended after.
    assert first.start_time_unix_nano <= cold.end_time_unix_nano <= first.end_time_unix_nano
