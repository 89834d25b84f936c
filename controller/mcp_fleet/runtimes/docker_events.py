"""The Docker daemon's events for one fleet, followed in a thread of their own.

The SDK's events stream is a blocking iterator, so it is read in a daemon
thread and handed to the event loop. Each connection asks for events
``since`` the call to ``follow()`` (then since the last event seen), so
nothing between the call and the connection, or between a drop and a
reconnect, is missed. When the daemon goes away the stream is reconnected
with backoff, and a synthetic ``daemon`` event says it was lost and when it
is back, so the controller resyncs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from mcp_fleet import conventions
from mcp_fleet.runtimes.base import RuntimeEvent

log = logging.getLogger("mcp_fleet.runtimes.docker")

EVENTS_BACKOFF_INITIAL: Final = 0.2
EVENTS_BACKOFF_MAX: Final = 10.0
EVENT_KINDS: Final = ("start", "die", "destroy")


class DockerEvents:
    """The start/die/destroy events of ``fleet``'s containers (see the module docstring).

    ``client`` returns the SDK's low-level client; ``closed`` is set when the
    runtime closes; ``seen`` is told the id of each container an event names.
    """

    def __init__(
        self,
        client: Callable[[], Any],
        fleet: str,
        closed: threading.Event,
        seen: Callable[[str], None],
    ) -> None:
        self._client = client
        self.fleet = fleet
        self._closed = closed
        self._seen = seen
        self._streams: set[Any] = set()

    def follow(self) -> AsyncIterator[RuntimeEvent]:
        """Events from now (not from the first ``anext``) until the iterator is closed."""
        return self._follow(since=time.time())

    def close(self) -> None:
        """Close every open events stream (their threads then end)."""
        for stream in list(self._streams):
            close_quietly(stream)

    async def _follow(self, *, since: float) -> AsyncIterator[RuntimeEvent]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[RuntimeEvent] = asyncio.Queue()
        stop = threading.Event()
        current: list[Any] = []

        def emit(event: RuntimeEvent) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
                loop.call_soon_threadsafe(queue.put_nowait, event)

        thread = threading.Thread(
            target=self._pump,
            args=(emit, stop, current, since),
            name="mcpf-docker-events",
            daemon=True,
        )
        thread.start()
        try:
            while True:
                yield await queue.get()
        finally:
            stop.set()
            for stream in current:
                close_quietly(stream)

    def _pump(
        self,
        emit: Callable[[RuntimeEvent], None],
        stop: threading.Event,
        current: list[Any],
        since: float,
    ) -> None:
        """Follow the daemon's events stream in this thread, reconnecting with backoff."""
        delay = EVENTS_BACKOFF_INITIAL
        lost = False
        filters = {
            "type": ["container"],
            "label": [f"{conventions.LABEL_FLEET}={self.fleet}"],
            "event": list(EVENT_KINDS),
        }
        while not (stop.is_set() or self._closed.is_set()):
            try:
                stream = self._client().events(filters=filters, decode=True, since=f"{since:.6f}")
                current[:] = [stream]
                self._streams.add(stream)
                if lost:
                    lost = False
                    log.info("Docker daemon is back")
                    emit(RuntimeEvent(server=None, kind="daemon", detail="reconnected"))
                delay = EVENTS_BACKOFF_INITIAL
                try:
                    for raw in stream:
                        since = max(since, float(raw.get("timeNano", 0)) / 1e9)
                        event = self._to_event(raw)
                        if event is not None:
                            emit(event)
                finally:
                    self._streams.discard(stream)
                    close_quietly(stream)
                if stop.is_set() or self._closed.is_set():
                    return
                error: str = "the events stream ended"
            except Exception as exc:  # the daemon is down or restarting: retry
                error = str(exc).split("(Caused by", 1)[0].strip() or type(exc).__name__
            if not lost:
                lost = True
                log.warning("lost the Docker daemon (%s): reconnecting", error)
                emit(RuntimeEvent(server=None, kind="daemon", detail=f"lost: {error}"))
            if stop.wait(delay):
                return
            delay = min(delay * 2, EVENTS_BACKOFF_MAX)

    def _to_event(self, raw: dict[str, Any]) -> RuntimeEvent | None:
        action = str(raw.get("Action") or raw.get("status") or "")
        if action not in EVENT_KINDS:
            return None
        actor = raw.get("Actor") or {}
        attrs = actor.get("Attributes") or {}
        if attrs.get(conventions.LABEL_FLEET) != self.fleet:
            return None
        cid = str(actor.get("ID") or raw.get("id") or "")
        self._seen(cid)
        detail = f"container {cid[:12]}"
        if action == "die":
            detail += f" exited with code {attrs.get('exitCode', '?')}"
        return RuntimeEvent(server=attrs.get(conventions.LABEL_SERVER), kind=action, detail=detail)


def close_quietly(stream: Any) -> None:
    with contextlib.suppress(Exception):
        stream.close()
