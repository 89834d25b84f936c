"""``mcp-fleet router --kubernetes``: the router as the Helm chart's Deployment runs it.

Three things differ from a router in front of a local fleet, and they live
here so the command itself stays a list of options:

- Servers come from the cluster: ``kube_follow`` watches MCPServers and
  publishes the Ready ones; the router settles (``/readyz``) only after
  the first complete list and the attaches that follow.
- The bearer token comes from a Secret through ``MCP_FLEET_ROUTER_TOKEN``,
  not from a fleet directory. The gateway reads tokens from a tokens file
  (hashes only), so the token is hashed into a private one (mode 0600 in a
  0700 directory, removed on exit); the token itself is never written.
- Several replicas serve one Service: session ids are signed with the key
  in ``MCP_FLEET_SESSION_KEY`` (``session_token``) so any replica restores
  any session. Without a key, ids are random and each replica serves only
  the sessions it began (fine for one replica).
- On-demand servers are scaled by the operator, not by a controller in this
  process: the table's ``demand`` is a ``KubeDemand``, which turns a call
  waiting for a cold server, and calls flowing to a warm one, into writes
  of the MCPServer's last-activity annotation. Their lists are kept in
  memory, and also on disk under ``$MCP_FLEET_ROUTER_CACHE_DIR`` when it is
  set (an emptyDir keeps them across container restarts).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import yaml

from mcp_fleet import conventions
from mcp_fleet.config.atomic import atomic_write
from mcp_fleet.endpoints import EndpointTable
from mcp_fleet.errors import RuntimeFailure
from mcp_fleet.model import frozen_map
from mcp_fleet.router.session_token import ENV_SESSION_KEY, SessionSigner
from mcp_fleet.sources.kube_demand import KubeDemand
from mcp_fleet.sources.kube_follow import KubeFollower

if TYPE_CHECKING:
    from mcp_fleet.router.router import Router

log = logging.getLogger(__name__)

#: Environment variable with the bearer token clients must present (a Secret in the chart).
ENV_ROUTER_TOKEN: Final = "MCP_FLEET_ROUTER_TOKEN"
#: The identity a request with that token gets (audit log, metrics, session owner).
TOKEN_IDENTITY: Final = "router-token"
#: Environment variable naming a directory for on-demand servers' list cache (unset: memory).
ENV_CACHE_DIR: Final = "MCP_FLEET_ROUTER_CACHE_DIR"


class KubeRouterError(ValueError):
    """Options or environment that cannot work (the message says which)."""


def resolve_namespaces(
    namespaces: list[str] | None, *, all_namespaces: bool
) -> tuple[str, ...] | None:
    """The namespaces to watch: given, or every one (None), or the pod's own."""
    from mcp_fleet.kube.client import own_namespace

    if all_namespaces:
        if namespaces:
            raise KubeRouterError("--namespace and --all-namespaces exclude each other")
        return None
    if namespaces:
        return tuple(dict.fromkeys(namespaces))
    own = own_namespace()
    if own is None:
        raise KubeRouterError(
            "--kubernetes: give --namespace (or --all-namespaces); not running in a pod"
        )
    return (own,)


def cache_dir_from_env(var: str = ENV_CACHE_DIR) -> Path | None:
    """The list cache directory named by ``$var`` (created, private), or None when unset."""
    raw = os.environ.get(var, "").strip()
    if not raw:
        return None
    path = Path(raw).expanduser()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KubeRouterError(f"${var}: cannot create {path}: {exc.strerror or exc}") from None
    return path


def session_signer(var: str = ENV_SESSION_KEY) -> SessionSigner | None:
    """The signer for ``$var``; None (and a log line) when it is unset."""
    try:
        signer = SessionSigner.from_env(var)
    except ValueError as exc:
        raise KubeRouterError(str(exc)) from None
    if signer is None:
        log.warning("$%s is not set: sessions are served only by the replica that began them", var)
    return signer


@contextlib.contextmanager
def env_tokens_file(var: str = ENV_ROUTER_TOKEN) -> Iterator[Path | None]:
    """A private tokens file holding the hash of ``$var`` (None when unset), removed on exit."""
    from mcp_fleet.gateway.tokens import FILE_MODE, token_digest

    token = os.environ.get(var, "").strip()
    if not token:
        yield None
        return
    if len(token) < 16:
        raise KubeRouterError(f"${var}: a token must have at least 16 characters")
    directory = Path(tempfile.mkdtemp(prefix="mcp-fleet-router-"))
    try:
        path = directory / conventions.TOKENS_FILE
        doc = {
            "version": 1,
            "tokens": {
                TOKEN_IDENTITY: {
                    "sha256": token_digest(token).hex(),
                    "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "allow": ["*"],
                }
            },
        }
        atomic_write(path, yaml.safe_dump(doc, sort_keys=False), mode=FILE_MODE)
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def run_kubernetes(
    make_router: Callable[[EndpointTable, asyncio.Event], Router],
    serve: Callable[[Router], Coroutine[Any, Any, None]],
    *,
    namespaces: tuple[str, ...] | None,
    selector: Mapping[str, str],
    call_timeout: float = conventions.DEFAULT_CALL_TIMEOUT_SECONDS,
    cache_dir: Path | None = None,
) -> None:
    """Follow the cluster's MCPServers and ``serve`` the router ``make_router`` builds.

    ``make_router`` gets the endpoint table and the event set after the first
    complete list (the router's ``published``). Cluster credentials are
    checked first, so a router without them fails before it listens.
    ``cache_dir`` (else ``$MCP_FLEET_ROUTER_CACHE_DIR``, else memory only)
    keeps on-demand servers' lists.
    """
    from mcp_fleet.kube.client import KubeConfigError, load_configuration

    try:
        await load_configuration()
        if cache_dir is None:
            cache_dir = cache_dir_from_env()
    except (KubeConfigError, KubeRouterError) as exc:
        raise RuntimeFailure(str(exc)) from None
    table, published = EndpointTable(), asyncio.Event()
    kube = KubeFollower(
        table,
        namespaces,
        selector=frozen_map(selector),
        call_timeout=call_timeout,
        published=published,
        cache_dir=cache_dir,
    )
    # Before the router is made: its activator asks ``table.demand`` for cold servers.
    demand = KubeDemand(kube.target)
    table.demand = demand
    follower = asyncio.create_task(kube.run(), name="kube-follow")
    marking = asyncio.create_task(demand.run(), name="kube-demand")
    serving = asyncio.create_task(serve(make_router(table, published)), name="router-serve")
    # SIGTERM (a pod being stopped) ends the run like a cancellation: sessions are closed
    # and the caller's clean-up (the private tokens file) runs.
    terminated = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, terminated.set)
    ending = asyncio.create_task(terminated.wait(), name="sigterm")
    try:
        done, _ = await asyncio.wait(
            {follower, marking, serving, ending}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in done - {ending}:
            task.result()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)
        ending.cancel()
        for task in (serving, follower, marking):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
