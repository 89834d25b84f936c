"""A client's first requests, held until the fleet it connects to is there.

A client launched with the router (``mcp-fleet router --server ...`` or
``mcp-fleet up --transport stdio`` in a client's config) connects while the
servers are still starting. Answered at once, its ``tools/list`` would be
empty (then ``list_changed``), and a ``tools/call`` it sends right after
``initialize`` would fail with "Unknown tool". So this gate:

- **holds the first message** (``initialize``) until the router has settled
  (every server published at start attached or failed; under ``up``, after
  the controller's first pass), at most ``hold`` seconds. Holding
  ``initialize`` rather than the first list or call is what makes every
  later request see the fleet: the lists, calls, prompts and resource reads
  that follow come after the answer, in order, and the answer's
  ``instructions`` include every server's. Clients wait for ``initialize``
  anyway (it is the handshake in which a stdio server starts), and ``hold``
  keeps one slow server from holding up the client for long.
- **then holds a call for a name nobody offers yet** while a server of the
  start is still on its first attach (a slow one, past ``hold``): the name
  may be one of its tools. The call waits for those attaches (at most the
  router's ``attach_timeout``) and then goes through the session as usual,
  failing with "Unknown tool" only if the name is still unknown. Other
  messages are not held, and a ``notifications/cancelled`` drops a held call.

The gate closes for good once the router has settled and no first attach is
under way; from then on the frontend checks one attribute per message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from mcp_fleet.router import jsonrpc
from mcp_fleet.router.jsonrpc import JsonObject, RequestId

if TYPE_CHECKING:
    from mcp_fleet.router.router import Router

log = logging.getLogger(__name__)

#: At most this long, the answer to a client's ``initialize`` waits for the fleet.
INITIALIZE_HOLD_SECONDS: Final = 10.0


class StartupGate:
    """Holds a client's early messages (module docstring); ``dispatch`` hands one on."""

    def __init__(
        self,
        router: Router,
        dispatch: Callable[[bytes], None],
        *,
        hold: float = INITIALIZE_HOLD_SECONDS,
    ) -> None:
        self.router = router
        self.dispatch = dispatch
        self.hold = hold
        #: False once nothing can need holding any more.
        self.active = True
        self._first = True
        self._held: dict[RequestId, asyncio.Task[None]] = {}

    async def admit(self, raw: bytes) -> None:
        """Dispatch ``raw`` now, after the first hold, or later (a held call)."""
        if self._first:
            self._first = False
            await self.router.wait_settled(timeout=self.hold)
        if not self._may_hold():
            if not self._held:
                self.active = False
            self.dispatch(raw)
            return
        try:
            msg = jsonrpc.parse(raw)
        except jsonrpc.InvalidMessage:
            self.dispatch(raw)  # the session answers the parse error
            return
        known = self._known(msg)
        mid = msg.get("id")
        if known is None or known() or not jsonrpc.valid_id(mid) or mid in self._held:
            self._cancel_held(msg)
            self.dispatch(raw)
            return
        assert mid is not None
        task = asyncio.get_running_loop().create_task(self._later(raw, known))
        self._held[mid] = task
        task.add_done_callback(lambda t: self._done(mid, t))

    def close(self) -> None:
        """The client went away: drop the calls still held."""
        for task in self._held.values():
            task.cancel()
        self._held.clear()
        self.active = False

    def _may_hold(self) -> bool:
        return not self.router.settled.is_set() or bool(self.router.first_attaches())

    def _known(self, msg: JsonObject) -> Callable[[], bool] | None:
        """For a call that names a tool, prompt or resource: whether the name is routed now."""
        method = msg.get("method")
        params = msg.get("params")
        if type(params) is not dict:
            return None
        router = self.router  # its table is swapped whole on changes: read it each time
        if method == "tools/call" and isinstance(name := params.get("name"), str):
            return lambda: name in router.table.tool_routes
        if method == "prompts/get" and isinstance(name := params.get("name"), str):
            return lambda: name in router.table.prompt_routes
        if method == "resources/read" and isinstance(uri := params.get("uri"), str):
            return lambda: router.table.resource_server(uri) is not None
        return None

    def _cancel_held(self, msg: JsonObject) -> None:
        if msg.get("method") != "notifications/cancelled":
            return
        params = msg.get("params")
        rid = params.get("requestId") if isinstance(params, dict) else None
        task = self._held.pop(rid, None) if jsonrpc.valid_id(rid) else None
        if task is not None:
            task.cancel()  # never reaches a server; a cancelled request gets no answer

    async def _later(self, raw: bytes, known: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.router.attach_timeout
        await self.router.wait_settled()
        while not known():
            attaching = self.router.first_attaches()
            remaining = deadline - loop.time()
            if not attaching or remaining <= 0:
                break
            await asyncio.wait(attaching, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        self.dispatch(raw)

    def _done(self, mid: RequestId, task: asyncio.Task[None]) -> None:
        if self._held.get(mid) is task:
            del self._held[mid]
        if not task.cancelled() and task.exception() is not None:
            log.error("a held request failed", exc_info=task.exception())
