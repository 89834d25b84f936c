"""The gateway in front of the router's own HTTP server (callback handlers, no ASGI).

The router serves HTTP with a small httptools server whose handler is a
plain synchronous callback ``handle(request, responder)``: no task and no
ASGI scope per request. ``GatewayHandler`` is such a handler. It runs the
same ``RequestGate`` as the ASGI middleware, answers the gateway's own
paths (status pages, ``/metrics``, probes) itself, and passes everything
else to the router's handler with the caller's identity as a third
argument::

    frontend = HttpFrontend(router)            # handle(request, responder, identity)
    handler = build_gateway_handler(frontend.handle, settings=..., status_provider=...)
    server, _ = await start_server(
        handler.handle, host=host, port=port, screen=handler.screen
    )
    handler.server = (host, bound_port)        # for the Host check
    ...
    await handler.aclose()

Request and responder are typed structurally (``RequestLike``,
``ResponderLike``), so this module does not import the router and the
router's own classes pass through to its handler unchanged.

``screen`` is the server's screen (``http_server.Screen``): it runs the
gate on a request's head, before its body is read, so a request the head
already decides (a bad Host or Origin, a missing or bad credential) is
refused without the router ever holding its body; the verdict rides on the
request (``context``) to ``handle``, which does not check again. Only ``POST
/login`` is decided on its body (the sign-in form is the credential); a
request ``handle`` gets unscreened is checked there, as before.

The common request costs no task: tokens are checked synchronously, and
JWTs too when their signing key is cached. Only a JWKS fetch and the status
pages (whose provider may be asynchronous) run as tasks; they are off the
hot path. The router's server bounds request bodies itself while reading;
``max_body_bytes`` is checked again here so both front doors share one limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Generic, Protocol, TypeVar

from mcp_fleet.gateway.app import GATEWAY_PATHS, Gateway, GatewaySettings
from mcp_fleet.gateway.gate import LOGIN_PATH, Answer
from mcp_fleet.gateway.identity import ANONYMOUS, Identity
from mcp_fleet.gateway.metrics import FleetMetrics
from mcp_fleet.gateway.web import StatusProvider

log = logging.getLogger(__name__)


class RequestLike(Protocol):
    """What the gateway reads of a parsed request (header names lower-case)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def query(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def body(self) -> bytes: ...


class ScreenedLike(RequestLike, Protocol):
    """A request whose head the screen sees: it can carry the gate's verdict on."""

    context: Any


class ResponderLike(Protocol):
    """How the gateway answers a request it does not pass on."""

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None: ...


Req = TypeVar("Req", bound=RequestLike)
Resp = TypeVar("Resp", bound=ResponderLike)

_TEXT = (b"content-type", b"text/plain; charset=utf-8")


class GatewayHandler(Generic[Req, Resp]):
    """A ``handle(request, responder)`` callback: the gateway, then the router's handler."""

    def __init__(
        self,
        inner: Callable[[Req, Resp, Identity], None],
        gateway: Gateway,
        *,
        server: tuple[str, int] | None = None,
    ) -> None:
        self.inner = inner
        self.gateway = gateway
        #: The listening address; set it once bound (a random port is learnt then).
        self.server = server
        self.max_body_bytes = gateway.settings.max_body_bytes
        self._tasks: set[asyncio.Future[Any]] = set()

    def screen(self, request: ScreenedLike) -> Answer | None:
        """The gate on a request's head: an ``Answer`` refuses it before its body is read;
        None lets it through, with the identity (or the pending JWKS check) in
        ``request.context`` for ``handle``."""
        method = request.method
        path = request.path
        if method == "POST" and path == LOGIN_PATH:
            return None  # the form in the body is the credential
        verdict = self.gateway.gate.check(
            method, path, request.query, request.headers, server=self.server
        )
        if isinstance(verdict, Identity):
            request.context = verdict
        elif isinstance(verdict, Answer):
            return verdict
        elif verdict is not None:  # the signing keys are being fetched: meanwhile, the body
            future = asyncio.ensure_future(verdict)
            self._tasks.add(future)
            future.add_done_callback(self._settled)
            request.context = future
        return None

    def handle(self, request: Req, responder: Resp) -> None:
        path = request.path
        method = request.method
        if len(request.body) > self.max_body_bytes:
            self.gateway.gate.reject("body_too_large")
            text = f"Payload Too Large: the limit is {self.max_body_bytes} bytes".encode()
            responder.respond(413, [_TEXT], text)
            return
        screened = getattr(request, "context", None)
        if isinstance(screened, Identity):
            self._route(request, responder, screened)
            return
        if isinstance(screened, asyncio.Future):
            self._spawn(self._later(screened, request, responder))
            return
        verdict = self.gateway.gate.check(
            method,
            path,
            request.query,
            request.headers,
            server=self.server,
            form=request.body if method == "POST" and path == LOGIN_PATH else None,
        )
        if isinstance(verdict, Identity) or verdict is None:
            self._route(request, responder, verdict)
        elif isinstance(verdict, Answer):
            responder.respond(verdict.status, verdict.headers, verdict.body)
        else:
            self._spawn(self._later(verdict, request, responder))

    def _route(self, request: Req, responder: Resp, identity: Identity | None) -> None:
        path = request.path
        if path not in GATEWAY_PATHS:
            self.inner(request, responder, identity or ANONYMOUS)
        elif path == "/metrics":
            if request.method not in ("GET", "HEAD"):
                responder.respond(405, [_TEXT, (b"allow", b"GET, HEAD")], b"Method Not Allowed")
                return
            body, content_type = self.gateway.metrics.exposition(request.headers.get("accept"))
            responder.respond(200, [(b"content-type", content_type)], body)
        else:
            self._spawn(self._page(request, responder, identity))

    async def _page(self, request: Req, responder: Resp, identity: Identity | None) -> None:
        try:
            answer = await self.gateway.pages.answer(request.method, request.path, identity)
        except Exception:
            log.exception("status page failed")
            answer = Answer(500, [_TEXT], b"Internal Server Error")
        responder.respond(answer.status, answer.headers, answer.body)

    async def _later(
        self, pending: Awaitable[Identity | Answer], request: Req, responder: Resp
    ) -> None:
        verdict = await pending
        if isinstance(verdict, Answer):
            responder.respond(verdict.status, verdict.headers, verdict.body)
        else:
            self._route(request, responder, verdict)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _settled(self, future: asyncio.Future[Any]) -> None:
        """A screen's pending check is done: its outcome is retrieved here, as its request
        may never arrive whole (and then nobody awaits it)."""
        self._tasks.discard(future)
        if not future.cancelled():
            future.exception()

    async def aclose(self) -> None:
        """Cancel pending page answers, then close the gateway (audit log, JWKS client)."""
        for task in list(self._tasks):
            task.cancel()
        await self.gateway.aclose()


def build_gateway_handler(
    inner: Callable[[Req, Resp, Identity], None],
    *,
    settings: GatewaySettings,
    status_provider: StatusProvider,
    metrics: FleetMetrics | None = None,
    server: tuple[str, int] | None = None,
) -> GatewayHandler[Req, Resp]:
    """The gateway as a handler for the router's HTTP server (see the module docstring)."""
    gateway = Gateway(settings=settings, status_provider=status_provider, metrics=metrics)
    return GatewayHandler(inner, gateway, server=server)
