"""Prometheus metrics of the fleet, behind a small API that hides prometheus_client.

The router and the controller report what happens through a handful of
calls, so neither imports prometheus_client nor knows metric names::

    from mcp_fleet.gateway import metrics
    started = metrics.call_started("github", "create_issue")
    ...
    metrics.call_finished("github", "create_issue", outcome="ok", started=started)
    metrics.call_rejected("github", "create_issue", outcome="forbidden")
    metrics.backend_state("github", "Ready")       # a status.ServerState value
    metrics.reconcile_pass(seconds=0.012, errors=0)
    metrics.cold_start("github", seconds=0.42)

The module functions act on one process-wide ``FleetMetrics``
(``default_metrics()``); tests build their own with a private registry.

Exported (``/metrics``, through prometheus_client's ASGI app):

- ``mcp_fleet_calls_total{server,tool,outcome}`` (outcome: ``Outcome``)
- ``mcp_fleet_call_duration_seconds{server,tool}`` histogram
- ``mcp_fleet_calls_in_flight{server}``
- ``mcp_fleet_backend_state{server,mcp_fleet_backend_state}`` (an Enum: 1 for the current state)
- ``mcp_fleet_reconcile_passes_total``, ``mcp_fleet_reconcile_errors_total{kind}``,
  ``mcp_fleet_reconcile_duration_seconds``
- ``mcp_fleet_cold_starts_total{server}``, ``mcp_fleet_cold_start_seconds{server}``
- ``mcp_fleet_http_rejections_total{reason}`` (401, 403, 413... by cause)
- ``mcp_fleet_limited_calls_total{limit}``
- the process collector (CPU, memory, open files) and Python GC.

Hot path: the per-call series (calls, durations, in flight) are plain
Python counters in dicts, turned into Prometheus samples only when
``/metrics`` is scraped (``_CallCollector``): prometheus_client's own
counters, histograms and gauges take a lock per update and cost about 8 us
per call between them, where dict arithmetic and a ``bisect`` cost about
1.5 us. Everything runs on the event loop's thread; a scrape from another
thread reads copies. A 60-second window of calls and errors per server,
kept here too, gives the status page its "calls per minute" without parsing
Prometheus samples.
"""

from __future__ import annotations

import bisect
import contextlib
import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Any, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    make_asgi_app,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from mcp_fleet.status import ServerState

CALL_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip
COLD_START_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
RECONCILE_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)
WINDOW_SECONDS: Final = 60
STATES: Final = tuple(s.value for s in ServerState)


class Outcome(StrEnum):
    """How a call ended (the ``outcome`` label)."""

    OK = "ok"
    ERROR = "error"  # the server answered with a JSON-RPC error
    TOOL_ERROR = "tool_error"  # a result with isError: true
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    UNAVAILABLE = "unavailable"  # the server could not be reached or died mid-call
    FORBIDDEN = "forbidden"
    LIMITED = "limited"


class _Window:
    """Calls and errors of one server over the last minute, in one-second slots."""

    __slots__ = ("calls", "errors", "seconds")

    def __init__(self) -> None:
        self.calls = [0] * WINDOW_SECONDS
        self.errors = [0] * WINDOW_SECONDS
        self.seconds = [-1] * WINDOW_SECONDS

    def add(self, second: int, error: bool) -> None:
        i = second % WINDOW_SECONDS
        if self.seconds[i] != second:
            self.seconds[i] = second
            self.calls[i] = 0
            self.errors[i] = 0
        self.calls[i] += 1
        if error:
            self.errors[i] += 1

    def totals(self, second: int) -> tuple[int, int]:
        calls = errors = 0
        for i, stamp in enumerate(self.seconds):
            if second - stamp < WINDOW_SECONDS:
                calls += self.calls[i]
                errors += self.errors[i]
        return calls, errors


class _ServerStats:
    """Per server: calls in flight, totals and the last minute's window."""

    __slots__ = ("calls", "errors", "in_flight", "window")

    def __init__(self) -> None:
        self.in_flight = 0
        self.calls = 0
        self.errors = 0
        self.window = _Window()


class ToolStats:
    """One (server, tool): what a call updates, found once per call (``FleetMetrics.stats``)."""

    __slots__ = ("_clock", "buckets", "outcomes", "seconds", "server", "server_name", "tool")

    def __init__(
        self, server_name: str, tool: str, server: _ServerStats, clock: Callable[[], float]
    ) -> None:
        self.server_name = server_name
        self.tool = tool
        self.server = server
        self._clock = clock
        #: Calls by outcome.
        self.outcomes: dict[str, int] = {}
        #: Calls per duration bucket, not cumulative (the last one is +Inf), and their sum.
        self.buckets = [0] * (len(CALL_BUCKETS) + 1)
        self.seconds = 0.0

    def start(self) -> float:
        """Count a call in flight; returns the start time to give ``finish``."""
        self.server.in_flight += 1
        return self._clock()

    def finish(self, outcome: str, started: float) -> float:
        """Record the end of a call begun with ``start``; returns its duration (s)."""
        now = self._clock()
        seconds = now - started
        self.server.in_flight -= 1
        self.buckets[bisect.bisect_left(CALL_BUCKETS, seconds)] += 1
        self.seconds += seconds
        self.count(outcome, now)
        return seconds

    def count(self, outcome: str, now: float) -> None:
        """Count a call that ended with ``outcome`` (refusals too)."""
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        server = self.server
        server.calls += 1
        error = outcome != "ok"
        if error:
            server.errors += 1
        server.window.add(int(now), error)


class FleetMetrics:
    """Every metric of one process, in its own registry."""

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        process_collectors: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        reg = self.registry = registry or CollectorRegistry(auto_describe=True)
        self._clock = clock
        if process_collectors:
            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)
            GCCollector(registry=reg)
        self.state = Enum(
            "mcp_fleet_backend_state", "State of each server of the fleet.",
            ["server"], states=list(STATES), registry=reg,
        )  # fmt: skip
        self.reconcile_passes = Counter(
            "mcp_fleet_reconcile_passes", "Reconcile passes of the controller.", registry=reg
        )
        self.reconcile_errors = Counter(
            "mcp_fleet_reconcile_errors", "Errors met by reconcile passes.", ["kind"], registry=reg
        )
        self.reconcile_seconds = Histogram(
            "mcp_fleet_reconcile_duration_seconds", "Duration of reconcile passes.",
            buckets=RECONCILE_BUCKETS, registry=reg,
        )  # fmt: skip
        self.cold_starts = Counter(
            "mcp_fleet_cold_starts",
            "On-demand servers started by a call.",
            ["server"],
            registry=reg,
        )
        self.cold_start_seconds = Histogram(
            "mcp_fleet_cold_start_seconds", "From a call to a cold server until it is ready.",
            ["server"], buckets=COLD_START_BUCKETS, registry=reg,
        )  # fmt: skip
        self.rejections = Counter(
            "mcp_fleet_http_rejections", "HTTP requests refused by the gateway, by reason.",
            ["reason"], registry=reg,
        )  # fmt: skip
        self.limited = Counter(
            "mcp_fleet_limited_calls", "Calls refused by a concurrency or rate limit.",
            ["limit"], registry=reg,
        )  # fmt: skip
        self._servers: dict[str, _ServerStats] = {}
        self._tools: dict[tuple[str, str], ToolStats] = {}
        reg.register(_CallCollector(self))

    # -- calls (hot path) ---------------------------------------------------------

    def stats(self, server: str, tool: str) -> ToolStats:
        """The counters a call of ``tool`` of ``server`` updates (keep it for the call)."""
        found = self._tools.get((server, tool))
        if found is None:
            per_server = self._servers.get(server)
            if per_server is None:
                per_server = self._servers[server] = _ServerStats()
            found = self._tools[(server, tool)] = ToolStats(server, tool, per_server, self._clock)
        return found

    def call_started(self, server: str, tool: str) -> float:
        """Count a call in flight; returns the start time to give ``call_finished``."""
        return self.stats(server, tool).start()

    def call_finished(self, server: str, tool: str, *, outcome: str, started: float) -> float:
        """Record the end of a call begun with ``call_started``; returns its duration (s)."""
        return self.stats(server, tool).finish(outcome, started)

    def call_rejected(self, server: str, tool: str, *, outcome: str) -> None:
        """A call answered without reaching the server (forbidden, limited, unavailable)."""
        self.stats(server, tool).count(outcome, self._clock())

    # -- fleet ------------------------------------------------------------------------

    def backend_state(self, server: str, state: str) -> None:
        """The current state of ``server`` (a ``status.ServerState`` value)."""
        self.state.labels(server).state(state if state in STATES else ServerState.UNKNOWN.value)

    def backend_removed(self, server: str) -> None:
        """``server`` left the fleet: drop its state series."""
        with contextlib.suppress(KeyError):
            self.state.remove(server)

    def reconcile_pass(self, *, seconds: float | None = None, errors: int = 0) -> None:
        self.reconcile_passes.inc()
        if seconds is not None:
            self.reconcile_seconds.observe(seconds)
        if errors:
            self.reconcile_errors.labels("action").inc(errors)

    def reconcile_error(self, kind: str) -> None:
        """An error of a given kind (``files``, ``runtime``, ``action``) during a pass."""
        self.reconcile_errors.labels(kind).inc()

    def cold_start(self, server: str, *, seconds: float) -> None:
        self.cold_starts.labels(server).inc()
        self.cold_start_seconds.labels(server).observe(seconds)

    def rejected(self, reason: str) -> None:
        """An HTTP request refused by the gateway (the middleware's ``on_reject``)."""
        self.rejections.labels(reason).inc()

    def limit_hit(self, limit: str) -> None:
        self.limited.labels(limit).inc()

    # -- reading -----------------------------------------------------------------------

    def recent(self) -> dict[str, dict[str, int]]:
        """Per server: calls and errors in the last minute, totals, calls in flight."""
        second = int(self._clock())
        out: dict[str, dict[str, int]] = {}
        for server, stats in sorted(self._servers.copy().items()):
            calls, errors = stats.window.totals(second)
            out[server] = {
                "calls_per_minute": calls,
                "errors_per_minute": errors,
                "calls_total": stats.calls,
                "errors_total": stats.errors,
                "in_flight": stats.in_flight,
            }
        return out

    def exposition(self, accept: str | None = None) -> tuple[bytes, bytes]:
        """``(body, content type)`` of ``/metrics`` in the format ``accept`` asks for."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type.encode()

    def asgi_app(self) -> Callable[..., Any]:
        """The ``/metrics`` ASGI application (text exposition, gzip when asked)."""
        return make_asgi_app(self.registry)


class _CallCollector(Collector):
    """The per-call series of a ``FleetMetrics``, as samples, when scraped."""

    def __init__(self, metrics: FleetMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        tools = sorted(m._tools.copy().items())
        calls = CounterMetricFamily(
            "mcp_fleet_calls", "MCP tool calls by server, tool and outcome.",
            labels=["server", "tool", "outcome"],
        )  # fmt: skip
        for (server, tool), stats in tools:
            for outcome, count in sorted(stats.outcomes.copy().items()):
                calls.add_metric([server, tool, outcome], count)
        yield calls
        durations = HistogramMetricFamily(
            "mcp_fleet_call_duration_seconds", "Duration of MCP tool calls through the router.",
            labels=["server", "tool"],
        )  # fmt: skip
        bounds = [*(repr(float(b)) for b in CALL_BUCKETS), "+Inf"]  # as prometheus_client does
        for (server, tool), stats in tools:
            counts = list(stats.buckets)
            if not any(counts):
                continue  # refused calls only: no duration
            cumulative: list[tuple[str, float]] = []
            total = 0
            for bound, in_bucket in zip(bounds, counts, strict=True):
                total += in_bucket
                cumulative.append((bound, total))
            durations.add_metric([server, tool], cumulative, sum_value=stats.seconds)
        yield durations
        in_flight = GaugeMetricFamily(
            "mcp_fleet_calls_in_flight", "MCP calls forwarded and not answered yet.",
            labels=["server"],
        )  # fmt: skip
        for server, per_server in sorted(m._servers.copy().items()):
            in_flight.add_metric([server], per_server.in_flight)
        yield in_flight


_default: FleetMetrics | None = None


def default_metrics() -> FleetMetrics:
    """The process-wide metrics (created on first use)."""
    global _default
    if _default is None:
        _default = FleetMetrics()
    return _default


def call_started(server: str, tool: str) -> float:
    return default_metrics().call_started(server, tool)


def call_finished(server: str, tool: str, *, outcome: str, started: float) -> float:
    return default_metrics().call_finished(server, tool, outcome=outcome, started=started)


def call_rejected(server: str, tool: str, *, outcome: str) -> None:
    default_metrics().call_rejected(server, tool, outcome=outcome)


def backend_state(server: str, state: str) -> None:
    default_metrics().backend_state(server, state)


def backend_removed(server: str) -> None:
    default_metrics().backend_removed(server)


def reconcile_pass(*, seconds: float | None = None, errors: int = 0) -> None:
    default_metrics().reconcile_pass(seconds=seconds, errors=errors)


def reconcile_error(kind: str) -> None:
    default_metrics().reconcile_error(kind)


def cold_start(server: str, *, seconds: float) -> None:
    default_metrics().cold_start(server, seconds=seconds)
