"""OpenTelemetry tracing of the calls through the router, when asked for and installed.

Tracing is optional twice over: the OpenTelemetry packages are an extra
(``pip install 'mcp-fleet[otel]'``), and even installed they stay unloaded
unless tracing is asked for, by ``--otel`` or by the standard environment
(``OTEL_TRACES_EXPORTER`` other than ``none``, ``OTEL_EXPORTER_OTLP_ENDPOINT``
or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; ``OTEL_SDK_DISABLED=true`` and
``--no-otel`` turn it off). Off, nothing of OpenTelemetry is imported and
``setup`` returns None: the per-call guard then pays one ``is not None``
check when a call starts and one when it ends. Asked for by the
environment but not installed, a warning says so and the router runs
untraced; asked for by ``--otel``, it is an error (``TracingUnavailableError``).

What is traced, following the OpenTelemetry semantic conventions for MCP
(GenAI conventions, development status):

- one ``SERVER`` span per call the gateway's guard sees (``tools/call``,
  ``prompts/get``, ``resources/read``), from admission to the final answer,
  named ``tools/call <tool>`` / ``prompts/get <prompt>`` / ``resources/read``,
  with ``mcp.method.name``, ``gen_ai.operation.name`` (``execute_tool``),
  ``gen_ai.tool.name``, ``gen_ai.prompt.name``, ``mcp.resource.uri``,
  ``jsonrpc.request.id``, ``mcp.session.id``, ``network.transport``, and of
  our own ``mcp_fleet.server``, ``mcp_fleet.identity``, ``mcp_fleet.outcome``,
  ``mcp_fleet.request.size`` and ``mcp_fleet.response.size`` (bytes). A
  failed call carries ``error.type`` (the JSON-RPC error code, or
  ``tool_error``, ``cancelled``), ``rpc.response.status_code`` and an
  ``ERROR`` status with the error's message; a call refused by the
  allow-list or a limit is a span too, ended at once;
- one ``INTERNAL`` span ``cold_start <server>`` per on-demand server started
  by a call, from the first call that wanted it until it was attached.

The parent of a call's span is the W3C trace context the client sent: in the
request's ``params._meta`` (``traceparent``, ``tracestate``, ``baggage``, as
the MCP conventions ask), else in the HTTP request's ``traceparent`` header;
with both, the header's context becomes a link. The forwarded request then
carries the router span's own context in ``params._meta``, so a backend that
traces joins the same trace. Propagation uses the configured propagators
(``OTEL_PROPAGATORS``, W3C trace context and baggage by default).

Where spans go: an SDK tracer provider already installed in the process
(by ``opentelemetry-instrument``, or an embedding application) is used as
it is; otherwise ``setup`` builds one from the environment:
``OTEL_TRACES_EXPORTER`` = ``otlp`` (default; ``http/protobuf`` unless
``OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL`` says ``grpc``, which needs its
exporter installed) and/or ``console`` (to stderr: stdout may carry the
protocol), a batch processor (``OTEL_BSP_*``), the sampler of
``OTEL_TRACES_SAMPLER``, and ``service.name`` ``mcp-fleet`` unless
``OTEL_SERVICE_NAME`` or ``OTEL_RESOURCE_ATTRIBUTES`` name one. Spans still
queued are exported when the process exits.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import orjson

from mcp_fleet import __version__

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer, TracerProvider

log = logging.getLogger(__name__)

#: Environment variables whose presence asks for tracing (with a non-empty value).
ENDPOINT_VARIABLES: Final = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
#: Keys of ``params._meta`` that carry trace context (unprefixed, per the MCP conventions).
CONTEXT_KEYS: Final = ("traceparent", "tracestate", "baggage")
INSTALL_HINT: Final = "install the tracing extra: pip install 'mcp-fleet[otel]'"
_TARGETED: Final = {"tools/call": "name", "prompts/get": "name"}


class TracingUnavailableError(Exception):
    """Tracing was asked for by ``--otel`` but cannot be set up (a package is missing)."""


def wanted(flag: bool | None, environ: Mapping[str, str] | None = None) -> bool:
    """Is tracing asked for? ``flag`` (``--otel``/``--no-otel``) wins; None: the environment."""
    if flag is not None:
        return flag
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER")
    if exporter is not None and exporter.strip():
        return exporter.strip().lower() != "none"
    return any(env.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def installed() -> bool:
    """Whether the OpenTelemetry API can be imported (without importing it)."""
    from importlib.util import find_spec

    try:
        return find_spec("opentelemetry.trace") is not None
    except ModuleNotFoundError:
        return False


class CallSpan:
    """The span of one admitted call; ``end`` once, when its final answer goes out."""

    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    def end(
        self,
        *,
        outcome: str,
        response_bytes: int = 0,
        error: str | None = None,
        reply: bytes | None = None,
    ) -> None:
        span = self.span
        span.set_attribute("mcp_fleet.outcome", outcome)
        span.set_attribute("mcp_fleet.response.size", response_bytes)
        if outcome != "ok":
            code = _error_code(reply) if outcome != "tool_error" else None
            _failed(span, code, outcome, error)
        span.end()


def _error_code(reply: bytes | None) -> int | None:
    """The JSON-RPC error code of an answer, if it is an error."""
    if not reply:
        return None
    try:
        msg = orjson.loads(reply)
    except orjson.JSONDecodeError:
        return None
    error = msg.get("error") if isinstance(msg, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, int) else None


def _failed(span: Span, code: int | None, outcome: str, message: str | None) -> None:
    from opentelemetry.trace import Status, StatusCode

    if code is not None:
        span.set_attribute("error.type", str(code))
        span.set_attribute("rpc.response.status_code", str(code))
    else:
        span.set_attribute("error.type", outcome)
    span.set_status(Status(StatusCode.ERROR, message or outcome))


class CallTracer:
    """Makes the spans of calls and cold starts (see the module docstring)."""

    def __init__(self, provider: TracerProvider | None = None, *, transport: str = "tcp") -> None:
        from opentelemetry import propagate, trace

        self._trace = trace
        self._propagate = propagate
        self.tracer: Tracer = trace.get_tracer(
            "mcp_fleet.gateway", __version__, tracer_provider=provider
        )
        #: ``network.transport``: ``tcp`` (HTTP) or ``pipe`` (stdio).
        self.transport = transport

    def start(
        self,
        *,
        identity: str,
        session: str | None,
        server: str,
        tool: str | None,
        method: str,
        request_bytes: int,
        message: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> CallSpan:
        """Start the span of an admitted call; the forwarded request carries its context."""
        params = message.get("params") if message is not None else None
        params = params if isinstance(params, dict) else None
        span = self._start(identity, session, server, tool, method, request_bytes, message,
                           params, headers)  # fmt: skip
        if params is not None:
            meta = params.get("_meta")
            if meta is None:
                meta = params["_meta"] = {}
            if isinstance(meta, dict):
                self._propagate.inject(meta, context=self._trace.set_span_in_context(span))
        return CallSpan(span)

    def refused(
        self,
        *,
        identity: str,
        session: str | None,
        server: str,
        tool: str | None,
        method: str,
        request_bytes: int,
        outcome: str,
        error: Mapping[str, Any],
        message: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """A span for a call refused before it reached the server (allow-list, limits)."""
        params = message.get("params") if message is not None else None
        params = params if isinstance(params, dict) else None
        span = self._start(identity, session, server, tool, method, request_bytes, message,
                           params, headers)  # fmt: skip
        span.set_attribute("mcp_fleet.outcome", outcome)
        data = error.get("data")
        if isinstance(data, Mapping) and isinstance(data.get("limit"), str):
            span.set_attribute("mcp_fleet.limit", data["limit"])
        code = error.get("code")
        text = error.get("message")
        _failed(span, code if isinstance(code, int) else None, outcome,
                text if isinstance(text, str) else None)  # fmt: skip
        span.end()

    def _start(
        self,
        identity: str,
        session: str | None,
        server: str,
        tool: str | None,
        method: str,
        request_bytes: int,
        message: Mapping[str, Any] | None,
        params: dict[str, Any] | None,
        headers: Mapping[str, str] | None,
    ) -> Span:
        attributes: dict[str, Any] = {
            "mcp.method.name": method,
            "network.transport": self.transport,
            "mcp_fleet.server": server,
            "mcp_fleet.identity": identity,
            "mcp_fleet.request.size": request_bytes,
        }
        name = method
        key = _TARGETED.get(method)
        target = params.get(key) if key is not None and params is not None else None
        if method == "tools/call":
            attributes["gen_ai.operation.name"] = "execute_tool"
            target = target if isinstance(target, str) else tool
            if target:
                attributes["gen_ai.tool.name"] = target
                name = f"{method} {target}"
        elif method == "prompts/get" and isinstance(target, str):
            attributes["gen_ai.prompt.name"] = target
            name = f"{method} {target}"
        elif method == "resources/read" and params is not None:
            uri = params.get("uri")
            if isinstance(uri, str):
                attributes["mcp.resource.uri"] = uri
        mid = message.get("id") if message is not None else None
        if mid is not None and not isinstance(mid, bool):
            attributes["jsonrpc.request.id"] = str(mid)
        if session:
            attributes["mcp.session.id"] = session
        parent, links = self._parent(params, headers)
        return self.tracer.start_span(
            name,
            context=parent,
            kind=self._trace.SpanKind.SERVER,
            attributes=attributes,
            links=links,
        )

    def _parent(
        self, params: dict[str, Any] | None, headers: Mapping[str, str] | None
    ) -> tuple[Context, list[Any] | None]:
        """The caller's context: ``params._meta`` first, else the HTTP headers (then a link)."""
        from opentelemetry.context import Context
        from opentelemetry.trace import Link

        meta = params.get("_meta") if params is not None else None
        carrier: dict[str, str] = {}
        if isinstance(meta, dict):
            carrier = {k: v for k in CONTEXT_KEYS if isinstance(v := meta.get(k), str)}
        from_headers = headers is not None and "traceparent" in headers
        if not carrier:
            if not from_headers:
                return Context(), None
            assert headers is not None
            return self._propagate.extract(headers, context=Context()), None
        parent = self._propagate.extract(carrier, context=Context())
        if not from_headers:
            return parent, None
        assert headers is not None
        ambient = self._trace.get_current_span(
            self._propagate.extract(headers, context=Context())
        ).get_span_context()
        mine = self._trace.get_current_span(parent).get_span_context()
        if ambient.is_valid and ambient.span_id != mine.span_id:
            return parent, [Link(ambient)]
        return parent, None

    def cold_start(self, server: str, seconds: float) -> None:
        """A span for an on-demand server's start that took ``seconds``, ending now."""
        from opentelemetry.context import Context

        end = time.time_ns()
        span = self.tracer.start_span(
            f"cold_start {server}",
            context=Context(),
            kind=self._trace.SpanKind.INTERNAL,
            attributes={"mcp_fleet.server": server, "mcp_fleet.cold_start.seconds": seconds},
            start_time=end - int(seconds * 1e9),
        )
        span.end(end_time=end)


# -- process-wide set-up ------------------------------------------------------------------

_provider: TracerProvider | None = None
_cold: CallTracer | None = None


def setup(
    flag: bool | None = None, *, transport: str = "tcp", environ: Mapping[str, str] | None = None
) -> CallTracer | None:
    """The call tracer when tracing is asked for (``wanted``) and installed, else None.

    The first call that enables tracing installs the process's tracer provider
    (unless one is installed already); later calls reuse it. Raises
    ``TracingUnavailableError`` when ``flag`` is True and a package is missing.
    """
    global _provider, _cold
    if not wanted(flag, environ):
        return None
    if _provider is None:
        try:
            _provider = _install_provider(environ)
        except ImportError as exc:
            message = f"tracing needs the module {exc.name or exc}: {INSTALL_HINT}"
        except ValueError as exc:
            message = str(exc)
        else:
            message = ""
        if _provider is None:
            if flag:
                raise TracingUnavailableError(message) from None
            log.warning("OpenTelemetry: %s; calls are not traced", message)
            return None
        _cold = CallTracer(_provider)
    return CallTracer(_provider, transport=transport)


def cold_start(server: str, seconds: float) -> None:
    """Trace an on-demand server's cold start (nothing unless tracing is set up)."""
    if _cold is not None:
        _cold.cold_start(server, seconds)


def _install_provider(environ: Mapping[str, str] | None) -> TracerProvider:
    """The process's SDK tracer provider: one already installed, or one from the environment."""
    from opentelemetry import trace

    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return current  # someone (opentelemetry-instrument, the embedding app) set one up
    provider = build_provider(environ)
    trace.set_tracer_provider(provider)
    return provider


def build_provider(environ: Mapping[str, str] | None = None) -> TracerProvider:
    """An SDK tracer provider exporting as the ``OTEL_*`` environment says (module doc)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    env = os.environ if environ is None else environ
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = Resource.create({"service.name": "mcp-fleet"})
    provider = SdkTracerProvider(resource=resource)
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    for name in names:
        if not name or name == "none":
            continue
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, env)))
    return provider


def _exporter(name: str, env: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stderr)
    if name != "otlp":
        raise ValueError(
            f"OTEL_TRACES_EXPORTER: unknown span exporter {name!r} (known: otlp, console, none)"
        )
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
            OTLPSpanExporter as GrpcExporter,
        )

        exporter: SpanExporter = GrpcExporter()
        return exporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()
