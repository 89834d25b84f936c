"""Per-call policy for the router: allow-list, limits, metrics and audit in two calls.

The router checks and records each forwarded call (``tools/call``, and
``prompts/get``/``resources/read`` with ``tool=None``) like this::

    ticket = guard.begin(identity, session_id, server, tool, request_bytes=len(raw),
                         arguments=params.get("arguments"))
    if isinstance(ticket, dict):            # refused: a JSON-RPC error object
        session.error_obj(mid, ticket)      # forbidden (-32040) or limited (-32029)
        return
    ... forward; when the reply (or a timeout, cancellation, backend death) comes:
    ticket.finish(outcome=outcome_of(reply), response_bytes=len(raw_reply))

``begin`` and ``finish`` never await and never raise, so they fit the
router's synchronous ``handle``. ``finish`` is idempotent (a call that is
cancelled and then answered is counted once). A refused call is still
counted (``mcp_fleet_calls_total{outcome="forbidden"|"limited"}``) and
audited, since refusals are what an operator looks for first.

With a ``CallTracer`` (``tracing``: OpenTelemetry, when asked for and
installed) each call is also a span, started by ``begin`` (which is given
the request's JSON-RPC ``message`` and HTTP ``headers`` to find the caller's
trace context and to pass the span's own on in ``params._meta``) and ended by
``finish``; without one, a call costs a ``None`` check at each end.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from mcp_fleet.gateway.audit import AuditLog
from mcp_fleet.gateway.identity import ANONYMOUS, Identity, forbidden_error
from mcp_fleet.gateway.limits import Limiter, LimitExceededError, Permit
from mcp_fleet.gateway.metrics import FleetMetrics, Outcome

if TYPE_CHECKING:
    from mcp_fleet.gateway.tracing import CallSpan, CallTracer

#: JSON-RPC error codes the router uses that mean something more specific than "error".
_CODE_OUTCOMES: Final = {-32001: Outcome.TIMEOUT, -32003: Outcome.UNAVAILABLE}


def outcome_of(
    reply: Mapping[str, Any], *, code_outcomes: Mapping[int, Outcome] | None = None
) -> Outcome:
    """The outcome of a call from its JSON-RPC reply (``error``, ``isError`` or ok)."""
    error = reply.get("error")
    if isinstance(error, Mapping):
        code = error.get("code")
        table = _CODE_OUTCOMES if code_outcomes is None else code_outcomes
        return table.get(code, Outcome.ERROR) if isinstance(code, int) else Outcome.ERROR
    result = reply.get("result")
    if isinstance(result, Mapping) and result.get("isError") is True:
        return Outcome.TOOL_ERROR
    return Outcome.OK


class CallTicket:
    """One admitted call, until ``finish``."""

    __slots__ = (
        "_done", "_guard", "_permit", "_stats", "arguments", "identity", "method",
        "request_bytes", "server", "session", "span", "started", "tool",
    )  # fmt: skip

    def __init__(
        self,
        guard: CallGuard,
        permit: Permit,
        identity: Identity,
        session: str | None,
        server: str,
        tool: str | None,
        method: str,
        request_bytes: int,
        arguments: Mapping[str, Any] | None,
        span: CallSpan | None = None,
    ) -> None:
        self._guard = guard
        self.span = span
        self._permit = permit
        self._done = False
        self.identity = identity
        self.session = session
        self.server = server
        self.tool = tool
        self.method = method
        self.request_bytes = request_bytes
        self.arguments = arguments
        self._stats = guard.metrics.stats(server, tool or "")
        self.started = self._stats.start()

    def finish(
        self,
        *,
        outcome: str,
        response_bytes: int = 0,
        error: str | None = None,
        reply: bytes | None = None,
    ) -> None:
        """Record how the call ended (idempotent); ``reply``: the final answer, for its span."""
        if self._done:
            return
        self._done = True
        self._permit.release()
        g = self._guard
        seconds = self._stats.finish(outcome, self.started)
        if self.span is not None:
            self.span.end(
                outcome=str(outcome), response_bytes=response_bytes, error=error, reply=reply
            )
        if g.audit is not None and g.audit.enabled:
            g.audit.record(
                identity=self.identity.label,
                session=self.session,
                server=self.server,
                tool=self.tool,
                duration_ms=seconds * 1000.0,
                outcome=str(outcome),
                request_bytes=self.request_bytes,
                response_bytes=response_bytes,
                method=self.method,
                error=error,
                arguments=self.arguments,
            )


class CallGuard:
    """What the router consults for every call it forwards."""

    def __init__(
        self,
        *,
        metrics: FleetMetrics,
        limiter: Limiter,
        audit: AuditLog | None = None,
        tracer: CallTracer | None = None,
    ) -> None:
        self.metrics = metrics
        self.limiter = limiter
        self.audit = audit
        self.tracer = tracer

    def begin(
        self,
        identity: Identity | None,
        session: str | None,
        server: str,
        tool: str | None,
        *,
        method: str = "tools/call",
        request_bytes: int = 0,
        arguments: Mapping[str, Any] | None = None,
        message: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> CallTicket | dict[str, Any]:
        """A ticket for an admitted call, or the JSON-RPC error object to answer with.

        ``identity=None`` (stdio: the client launched us) is the anonymous
        identity, allowed everything. ``tool=None`` asks for the whole server
        (prompts, resources), which needs a server-wide grant. ``message``
        (the request) and ``headers`` (of its HTTP request) are for tracing.
        """
        who = identity or ANONYMOUS
        if not who.allows(server, tool):
            refusal = forbidden_error(who, server, tool)
            self._refused(who, session, server, tool, method, request_bytes, Outcome.FORBIDDEN)
            if self.tracer is not None:
                self._traced_refusal(who, session, server, tool, method, request_bytes,
                                     Outcome.FORBIDDEN, refusal, message, headers)  # fmt: skip
            return refusal
        try:
            permit = self.limiter.acquire(who.label, server)
        except LimitExceededError as exc:
            self.metrics.limit_hit(exc.limit)
            self._refused(
                who, session, server, tool, method, request_bytes, Outcome.LIMITED, exc.message
            )
            if self.tracer is not None:
                self._traced_refusal(who, session, server, tool, method, request_bytes,
                                     Outcome.LIMITED, exc.error(), message, headers)  # fmt: skip
            return exc.error()
        span = None
        if self.tracer is not None:
            span = self.tracer.start(
                identity=who.label, session=session, server=server, tool=tool, method=method,
                request_bytes=request_bytes, message=message, headers=headers,
            )  # fmt: skip
        return CallTicket(
            self, permit, who, session, server, tool, method, request_bytes, arguments, span
        )

    def _traced_refusal(
        self,
        who: Identity,
        session: str | None,
        server: str,
        tool: str | None,
        method: str,
        request_bytes: int,
        outcome: Outcome,
        error: Mapping[str, Any],
        message: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
    ) -> None:
        assert self.tracer is not None
        self.tracer.refused(
            identity=who.label, session=session, server=server, tool=tool, method=method,
            request_bytes=request_bytes, outcome=outcome.value, error=error, message=message,
            headers=headers,
        )  # fmt: skip

    def _refused(
        self,
        who: Identity,
        session: str | None,
        server: str,
        tool: str | None,
        method: str,
        request_bytes: int,
        outcome: Outcome,
        error: str | None = None,
    ) -> None:
        self.metrics.call_rejected(server, tool or "", outcome=outcome)
        if self.audit is not None:
            self.audit.record(
                identity=who.label,
                session=session,
                server=server,
                tool=tool,
                duration_ms=0.0,
                outcome=outcome.value,
                request_bytes=request_bytes,
                method=method,
                error=error or f"{who.label} is not allowed to use this",
            )
