"""OpenTelemetry spans of calls through the guard: names, attributes, parents, propagation.

The spans are made by the real OpenTelemetry SDK into an in-memory exporter
(no global tracer provider is installed, so tests stay independent). With
tracing off, a fresh interpreter shows that nothing of OpenTelemetry is
imported and no span is made.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from mcp_fleet.gateway.guard import CallGuard, CallTicket
from mcp_fleet.gateway.identity import LIMITED, AllowList, Identity
from mcp_fleet.gateway.limits import Limiter, LimitSettings
from mcp_fleet.gateway.metrics import FleetMetrics
from mcp_fleet.gateway.tracing import CallTracer, TracingUnavailableError, setup, wanted
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
HEADER_TRACE = "0af7651916cd43dd8448eb211c80319c"
HEADER_SPAN = "b7ad6b7169203331"


def traceparent(trace_id: str, span_id: str) -> str:
    return f"00-{trace_id}-{span_id}-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> Iterator[CallTracer]:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield CallTracer(provider)
    provider.shutdown()


def token(name: str, *servers: str) -> Identity:
    return Identity(name, "token", AllowList.parse(servers or ["*"]))


def guard_with(tracer: CallTracer | None, limits: LimitSettings | None = None) -> CallGuard:
    metrics = FleetMetrics(registry=CollectorRegistry(), process_collectors=False)
    return CallGuard(metrics=metrics, limiter=Limiter(limits or LimitSettings()), tracer=tracer)


def call(name: str, *, meta: dict[str, Any] | None = None, mid: int = 7) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": {"text": "hi"}}
    if meta is not None:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": mid, "method": "tools/call", "params": params}


def only(exporter: InMemorySpanExporter) -> ReadableSpan:
    spans = exporter.get_finished_spans()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def test_a_call_is_a_server_span_with_the_mcp_attributes(
    tracer: CallTracer, exporter: InMemorySpanExporter
) -> None:
    guard = guard_with(tracer)
    message = call("echo")
    headers = {"traceparent": traceparent(HEADER_TRACE, HEADER_SPAN)}
    ticket = guard.begin(
        token("alice"), "sess-1", "echo", "echo",
        request_bytes=120, message=message, headers=headers,
    )  # fmt: skip
    assert isinstance(ticket, CallTicket)
    assert exporter.get_finished_spans() == ()  # open until the answer goes out
    ticket.finish(outcome="ok", response_bytes=64, reply=b'{"result":{}}')
    span = only(exporter)
    assert span.name == "tools/call echo"
    assert span.kind is SpanKind.SERVER
    assert dict(span.attributes or {}) == {
        "mcp.method.name": "tools/call",
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "echo",
        "jsonrpc.request.id": "7",
        "mcp.session.id": "sess-1",
        "network.transport": "tcp",
        "mcp_fleet.server": "echo",
        "mcp_fleet.identity": "token:alice",
        "mcp_fleet.request.size": 120,
        "mcp_fleet.outcome": "ok",
        "mcp_fleet.response.size": 64,
    }
    assert span.status.status_code is StatusCode.UNSET
    # The HTTP request's traceparent is the parent.
    assert span.parent is not None and span.parent.is_remote
    assert format(span.context.trace_id, "032x") == HEADER_TRACE
    assert format(span.parent.span_id, "016x") == HEADER_SPAN
    # The forwarded request carries the router span's own context.
    sent = message["params"]["_meta"]["traceparent"]
    assert sent == traceparent(HEADER_TRACE, format(span.context.span_id, "016x"))


def test_meta_context_is_the_parent_and_the_header_a_link(
    tracer: CallTracer, exporter: InMemorySpanExporter
) -> None:
    guard = guard_with(tracer)
    message = call("echo", meta={"traceparent": traceparent(CLIENT_TRACE, CLIENT_SPAN),
                                 "progressToken": 3})  # fmt: skip
    headers = {"traceparent": traceparent(HEADER_TRACE, HEADER_SPAN)}
    ticket = guard.begin(None, None, "echo", "echo", message=message, headers=headers)
    assert isinstance(ticket, CallTicket)
    ticket.finish(outcome="ok")
    span = only(exporter)
    assert format(span.context.trace_id, "032x") == CLIENT_TRACE
    assert span.parent is not None and format(span.parent.span_id, "016x") == CLIENT_SPAN
    assert [format(link.context.span_id, "016x") for link in span.links] == [HEADER_SPAN]
    meta = message["params"]["_meta"]
    assert meta["progressToken"] == 3  # the client's own keys stay
    assert meta["traceparent"].split("-")[1:3] == [
        CLIENT_TRACE,
        format(span.context.span_id, "016x"),
    ]
    assert "mcp.session.id" not in (span.attributes or {})
    assert (span.attributes or {})["mcp_fleet.identity"] == "anonymous"


def test_without_any_context_the_span_starts_a_trace(
    tracer: CallTracer, exporter: InMemorySpanExporter
) -> None:
    guard = guard_with(tracer)
    message = {"jsonrpc": "2.0", "id": "r-1", "method": "resources/read",
               "params": {"uri": "notes://all"}}  # fmt: skip
    ticket = guard.begin(None, "s", "notes", None, method="resources/read", message=message)
    assert isinstance(ticket, CallTicket)
    ticket.finish(outcome="ok")
    span = only(exporter)
    assert span.parent is None
    assert span.name == "resources/read"  # no high-cardinality URI in the name
    attributes = span.attributes or {}
    assert attributes["mcp.resource.uri"] == "notes://all"
    assert attributes["jsonrpc.request.id"] == "r-1"
    assert "gen_ai.operation.name" not in attributes


@pytest.mark.parametrize(
    ("outcome", "reply", "error_type", "status_code"),
    [
        ("error", b'{"jsonrpc":"2.0","id":7,"error":{"code":-32602,"message":"bad"}}', "-32602",
         "-32602"),
        ("timeout", b'{"jsonrpc":"2.0","id":7,"error":{"code":-32001,"message":"late"}}',
         "-32001", "-32001"),
        ("tool_error", b'{"jsonrpc":"2.0","id":7,"result":{"isError":true}}', "tool_error", None),
        ("cancelled", None, "cancelled", None),
    ],
)  # fmt: skip
def test_a_failed_call_has_an_error_type_and_status(
    tracer: CallTracer,
    exporter: InMemorySpanExporter,
    outcome: str,
    reply: bytes | None,
    error_type: str,
    status_code: str | None,
) -> None:
    ticket = guard_with(tracer).begin(None, None, "echo", "echo", message=call("echo"))
    assert isinstance(ticket, CallTicket)
    ticket.finish(outcome=outcome, error="it went wrong", reply=reply)
    ticket.finish(outcome="ok")  # idempotent: the span ends once
    span = only(exporter)
    attributes = span.attributes or {}
    assert attributes["error.type"] == error_type
    assert attributes.get("rpc.response.status_code") == status_code
    assert attributes["mcp_fleet.outcome"] == outcome
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "it went wrong"


def test_refused_calls_are_spans_too(tracer: CallTracer, exporter: InMemorySpanExporter) -> None:
    guard = guard_with(tracer, LimitSettings(identity_concurrency=1))
    first = guard.begin(token("bob"), None, "echo", "echo", message=call("echo"))
    assert isinstance(first, CallTicket)
    refused = guard.begin(token("bob"), None, "echo", "echo", message=call("echo", mid=8))
    assert isinstance(refused, dict) and refused["code"] == LIMITED
    limited = only(exporter)
    assert limited.name == "tools/call echo"
    attributes = limited.attributes or {}
    assert attributes["mcp_fleet.outcome"] == "limited"
    assert attributes["mcp_fleet.limit"] == "identity-concurrency"
    assert attributes["error.type"] == str(LIMITED)
    assert attributes["jsonrpc.request.id"] == "8"
    assert limited.status.description == refused["message"]
    exporter.clear()
    calc_only = token("carol", "calc")
    forbidden = guard.begin(calc_only, None, "echo", "echo", message=call("echo"))
    assert isinstance(forbidden, dict)
    assert (only(exporter).attributes or {})["mcp_fleet.outcome"] == "forbidden"


def test_a_cold_start_is_a_span_of_its_duration(
    tracer: CallTracer, exporter: InMemorySpanExporter
) -> None:
    tracer.cold_start("notes", 0.25)
    span = only(exporter)
    assert span.name == "cold_start notes"
    assert span.kind is SpanKind.INTERNAL
    assert span.end_time is not None and span.start_time is not None
    assert span.end_time - span.start_time == 250_000_000
    assert (span.attributes or {})["mcp_fleet.server"] == "notes"


@pytest.mark.parametrize(
    ("flag", "env", "expected"),
    [
        (None, {}, False),
        (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        (None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        (None, {"OTEL_TRACES_EXPORTER": "console"}, True),
        (None, {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, False),
        (None, {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
        (False, {"OTEL_TRACES_EXPORTER": "otlp"}, False),
        (True, {}, True),
    ],
)
def test_when_tracing_is_wanted(flag: bool | None, env: dict[str, str], expected: bool) -> None:
    assert wanted(flag, env) is expected


def test_otel_flag_with_an_unusable_exporter_is_an_error() -> None:
    with pytest.raises(TracingUnavailableError, match="unknown span exporter 'zipkin-ish'"):
        setup(True, environ={"OTEL_TRACES_EXPORTER": "zipkin-ish"})
    assert setup(None, environ={}) is None


def test_with_tracing_off_nothing_of_opentelemetry_is_loaded() -> None:
    """The whole gateway, a call through its guard and the router's stdio guard: no import."""
    script = textwrap.dedent(
        """
        import sys
        from mcp_fleet.gateway.app import Gateway, GatewaySettings
        from mcp_fleet.router.serve import stdio_guard

        gateway = Gateway(settings=GatewaySettings(home=None), status_provider=dict)
        ticket = gateway.guard.begin(None, "s", "echo", "echo",
                                     message={"id": 1, "params": {"name": "echo"}})
        ticket.finish(outcome="ok")
        guard, close = stdio_guard(GatewaySettings(home=None))
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        print(gateway.tracer, ticket.span, guard, loaded)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "None", "None", "[]"]


def test_the_forwarded_message_is_untouched_without_tracing() -> None:
    message = call("echo")
    before = orjson.dumps(message)
    ticket = guard_with(None).begin(None, None, "echo", "echo", message=message)
    assert isinstance(ticket, CallTicket) and ticket.span is None
    ticket.finish(outcome="ok")
    assert orjson.dumps(message) == before
