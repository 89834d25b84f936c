"""The Docker runtime: servers as long-lived, hardened containers on the local daemon.

It implements ``runtimes.base.Runtime`` with the Docker SDK's low-level
``APIClient`` and decides nothing: ``docker_spec`` says what a container
looks like, the planner says when to create or remove one, and this module
only does it and reports what it sees.

- **Ownership by labels.** ``observe`` lists every container (running or
  exited) carrying our fleet label, and nothing else; a container without
  our label is never listed, stopped or removed.
- **Long-lived stdio.** Containers are created detached with stdin open and
  *without* ``StdinOnce``, no TTY: the controller's probe and later the
  router attach and detach at will and the server keeps running.
- **Images.** Never pulled when present; a missing image is pulled once
  (progress logged; concurrent starts of one image share the pull) or the
  start fails with ``ImageUnavailable``.
- **Blocking SDK, async loop.** Every SDK call runs in this runtime's own
  small thread pool, so a slow daemon call never blocks the event loop and
  never starves the loop's default executor. The events stream
  (``docker_events``) has its own thread, reconnects with backoff and
  reports a synthetic ``daemon`` event when the daemon went away and when
  it is back, so the controller resyncs.
- **Failures are ``RuntimeFailure``** with a ``reason`` (``status`` vocabulary)
  and a message fit for ``mcp-fleet status``: an unreachable daemon, a
  missing image, a refused create. Secret values never appear in a message
  or a log line: the environment is passed to the API and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from typing import Any, Final, TypeVar

import docker
import docker.errors
import requests.exceptions

from mcp_fleet import conventions
from mcp_fleet.docker_attach import DockerAttachStream, open_attach_stream
from mcp_fleet.endpoints import DockerAttachEndpoint, Endpoint, StreamEndpoint
from mcp_fleet.errors import RuntimeFailure
from mcp_fleet.logsetup import redactor
from mcp_fleet.model import RuntimeKind, ServerSpec
from mcp_fleet.probe import ProbeError, initialize
from mcp_fleet.runtimes import docker_spec
from mcp_fleet.runtimes.base import Instance, ObservedState, RuntimeEvent
from mcp_fleet.runtimes.docker_events import DockerEvents
from mcp_fleet.status import REASON_IMAGE_UNAVAILABLE, REASON_RUNTIME_ERROR
from mcp_fleet.transport import MessageStream

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds a container gets to exit on SIGTERM before SIGKILL, when stopped.
DEFAULT_STOP_TIMEOUT: Final = 3
#: Threads for blocking SDK calls (starts run in parallel up to the controller's bound).
DEFAULT_WORKERS: Final = 16
#: Timeout of one ordinary API call (not pulls, attaches or the events stream).
DEFAULT_API_TIMEOUT: Final = 60
_PULL_LOG_INTERVAL: Final = 2.0
_FRACTION_RE = re.compile(r"\.(\d{6})\d*")
_CONNECTION_ERRORS = (requests.exceptions.ConnectionError, ConnectionError, FileNotFoundError)


class DaemonUnreachable(RuntimeFailure):
    """The Docker daemon does not answer; the controller keeps its last state."""

    reason = REASON_RUNTIME_ERROR


class ImageUnavailable(RuntimeFailure):
    """The image is not present and could not be pulled."""

    reason = REASON_IMAGE_UNAVAILABLE


class ContainerFailure(RuntimeFailure):
    """The daemon refused to create, start or stop a container."""

    reason = REASON_RUNTIME_ERROR


class DockerRuntime:
    """Runs a fleet's servers as containers of the local Docker daemon.

    ``fleet`` is the ownership label value (``conventions.fleet_name``).
    ``base_url`` defaults to ``DOCKER_HOST`` or the local socket. With
    ``in_process_endpoints`` (the default) ``endpoint`` returns a
    ``StreamEndpoint`` whose ``open`` attaches from this process; otherwise a
    ``DockerAttachEndpoint`` for a router in another process.
    """

    kind = RuntimeKind.DOCKER

    def __init__(
        self,
        *,
        fleet: str,
        base_url: str | None = None,
        hardening: docker_spec.Hardening | None = None,
        pull_missing: bool = True,
        stop_timeout: int = DEFAULT_STOP_TIMEOUT,
        in_process_endpoints: bool = True,
        workers: int = DEFAULT_WORKERS,
        api_timeout: int = DEFAULT_API_TIMEOUT,
    ) -> None:
        self.fleet = fleet
        self.hardening = hardening or docker_spec.Hardening()
        self.pull_missing = pull_missing
        self.stop_timeout = stop_timeout
        self.in_process_endpoints = in_process_endpoints
        self._base_url = base_url
        self._api_timeout = api_timeout
        self._workers = workers
        self._api: Any = None
        self._api_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mcpf-docker")
        self._pulls: dict[str, asyncio.Lock] = {}
        #: (container id, listed state) -> (running, started_at, exit code), inspected
        #: once per state: a pass over a steady fleet costs one list call.
        self._inspected: dict[tuple[str, str], tuple[bool, float, int | None]] = {}
        #: Containers an event was seen for since the last observe: inspected afresh,
        #: because the daemon's list view lags its events by a moment.
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()
        self._closed = threading.Event()
        self._events = DockerEvents(self._client, fleet, self._closed, self._mark_dirty)

    # -- the client ---------------------------------------------------------

    def _client(self) -> Any:
        """The SDK client, created on first use (it asks the daemon for its API version)."""
        with self._api_lock:
            if self._api is None:
                kwargs: dict[str, Any] = docker.utils.kwargs_from_env()
                if self._base_url:
                    kwargs["base_url"] = self._base_url
                try:
                    self._api = docker.APIClient(
                        version="auto",
                        timeout=self._api_timeout,
                        max_pool_size=self._workers,
                        **kwargs,
                    )
                except docker.errors.DockerException as exc:
                    raise DaemonUnreachable(self._unreachable(exc)) from None
            return self._api

    def _unreachable(self, exc: BaseException) -> str:
        where = self._base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        detail = str(exc).split("(Caused by", 1)[0].strip()
        detail = detail.removeprefix("Error while fetching server API version: ")
        return (
            f"cannot reach the Docker daemon at {where} (is it running?):"
            f" {detail or type(exc).__name__}"
        )

    async def _call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run one blocking SDK call in our pool; an unreachable daemon becomes a failure."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, partial(fn, *args, **kwargs))
        except _CONNECTION_ERRORS as exc:
            raise DaemonUnreachable(self._unreachable(exc)) from None

    async def _api_call(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        def run() -> Any:
            return getattr(self._client(), name)(*args, **kwargs)

        return await self._call(run)

    # -- Runtime protocol ---------------------------------------------------

    def unsupported_reason(self, spec: ServerSpec) -> str | None:
        """Why ``spec`` cannot run as a container (no image, a bad volume...), or None."""
        return docker_spec.problem(spec)

    async def observe(self) -> ObservedState:
        """Every container with our fleet label; ``DaemonUnreachable`` when dockerd is down."""
        listed = await self._api_call(
            "containers", all=True, filters={"label": f"{conventions.LABEL_FLEET}={self.fleet}"}
        )
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, set()
        ours = [
            (c, (str(c["Id"]), str(c.get("State", ""))))
            for c in listed
            if (c.get("Labels") or {}).get(conventions.LABEL_FLEET) == self.fleet
        ]
        # New containers, new states and containers with fresh events are inspected
        # (in parallel); the rest come from the cache.
        fresh = [(c, key) for c, key in ours if key not in self._inspected or key[0] in dirty]
        infos = await asyncio.gather(
            *(self._api_call("inspect_container", key[0]) for _, key in fresh),
            return_exceptions=True,
        )
        for (c, key), info in zip(fresh, infos, strict=True):
            if isinstance(info, docker.errors.NotFound):
                continue  # removed since the list
            if isinstance(info, BaseException):
                raise info
            self._inspected[key] = _live_state(info, created=float(c.get("Created", 0)))
        instances: list[Instance] = []
        seen: set[tuple[str, str]] = set()
        for c, key in ours:
            if key not in self._inspected:
                continue
            seen.add(key)
            running, started_at, exit_code = self._inspected[key]
            labels = c.get("Labels") or {}
            names = c.get("Names") or []
            instances.append(
                Instance(
                    server=labels.get(conventions.LABEL_SERVER, ""),
                    instance_id=key[0],
                    runtime=RuntimeKind.DOCKER,
                    fleet=self.fleet,
                    config_hash=labels.get(conventions.LABEL_CONFIG_HASH, ""),
                    running=running,
                    started_at=started_at,
                    exit_code=None if running else exit_code,
                    display=names[0].lstrip("/") if names else key[0][:12],
                )
            )
        for stale in set(self._inspected) - seen:
            del self._inspected[stale]
        return ObservedState(instances=tuple(instances))

    async def start(self, spec: ServerSpec) -> Instance:
        """Create and start a container for ``spec``; returns it running.

        A container of the same name (same fleet, server and config hash)
        that is already running is returned as is: never two copies of one
        configuration. An exited one is removed and created afresh.
        """
        plan = docker_spec.build(spec, fleet=self.fleet, hardening=self.hardening)
        await self.ensure_image(plan.image)
        host_config = await self._api_call("create_host_config", **plan.host)
        kwargs = plan.create_kwargs(host_config)
        secrets = tuple(v for v in spec.secret_env.values() if v)
        try:
            container_id = await self._create(plan, kwargs)
        except ContainerFailure as exc:
            raise ContainerFailure(_scrub(f"{spec.name}: {exc}", secrets)) from None
        try:
            await self._api_call("start", container_id)
        except docker.errors.APIError as exc:
            with contextlib.suppress(docker.errors.APIError, RuntimeFailure):
                await self._api_call("remove_container", container_id, force=True)
            message = f"{spec.name}: start refused: {_explain(exc)}"
            raise ContainerFailure(_scrub(message, secrets)) from None
        info = await self._api_call("inspect_container", container_id)
        log.info(
            "started container %s for %s (image %s)",
            plan.name,
            spec.name,
            plan.image,
            extra={"server": spec.name, "container": container_id[:12]},
        )
        return self._instance(info)

    async def _create(self, plan: docker_spec.ContainerPlan, kwargs: dict[str, Any]) -> str:
        for attempt in range(2):
            try:
                created = await self._api_call("create_container", **kwargs)
                return str(created["Id"])
            except docker.errors.ImageNotFound:
                raise ImageUnavailable(f"image {plan.image} is not present") from None
            except docker.errors.APIError as exc:
                if exc.status_code != 409 or attempt:
                    raise ContainerFailure(f"create refused: {_explain(exc)}") from None
            existing = await self._existing(plan.name)
            if existing is not None:
                return existing
        raise ContainerFailure(f"container name {plan.name} stays taken")

    async def _existing(self, name: str) -> str | None:
        """Resolve a name conflict: our running twin is reused; our exited one is removed."""
        try:
            info = await self._api_call("inspect_container", name)
        except docker.errors.NotFound:
            return None  # gone in between: retry the create
        labels = (info.get("Config") or {}).get("Labels") or {}
        if labels.get(conventions.LABEL_FLEET) != self.fleet:
            raise ContainerFailure(
                f"a container named {name} exists and is not owned by fleet {self.fleet}"
            )
        if (info.get("State") or {}).get("Running"):
            log.info("container %s already runs this configuration: reusing it", name)
            return str(info["Id"])
        await self._remove(str(info["Id"]))
        return None

    async def ensure_image(self, image: str) -> None:
        """Make sure ``image`` is present: never pulled when it is; pulled once when not."""
        try:
            await self._api_call("inspect_image", image)
            return
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            raise ImageUnavailable(f"image {image}: {_explain(exc)}") from None
        lock = self._pulls.setdefault(image, asyncio.Lock())
        async with lock:
            try:
                await self._api_call("inspect_image", image)
                return  # another start pulled it meanwhile
            except docker.errors.NotFound:
                pass
            if not self.pull_missing:
                raise ImageUnavailable(f"image {image} is not present (pulling is disabled)")
            log.info("image %s is not present: pulling it", image)
            await self._call(self._pull, image)

    def _pull(self, image: str) -> None:
        """Pull with progress logged at most every few seconds (runs in a worker thread)."""
        last = 0.0
        try:
            for event in self._client().pull(image, stream=True, decode=True):
                if "error" in event:
                    raise ImageUnavailable(
                        f"image {image} is not present and could not be pulled: {event['error']}"
                    )
                now = time.monotonic()
                if now - last >= _PULL_LOG_INTERVAL:
                    last = now
                    detail = event.get("progress") or event.get("status", "")
                    log.info("pulling %s: %s", image, detail)
        except docker.errors.APIError as exc:
            raise ImageUnavailable(
                f"image {image} is not present and could not be pulled: {_explain(exc)}"
            ) from None
        log.info("pulled image %s", image)

    async def stop(self, instance: Instance) -> None:
        """Stop (SIGTERM, then SIGKILL after ``stop_timeout``) and remove; idempotent."""
        if instance.fleet != self.fleet:
            raise ContainerFailure(
                f"refusing to stop {instance.display or instance.instance_id[:12]}:"
                f" it belongs to fleet {instance.fleet!r}, not {self.fleet!r}"
            )
        try:
            await self._api_call("stop", instance.instance_id, timeout=self.stop_timeout)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            log.warning("stopping %s: %s", instance.display, _explain(exc))
        await self._remove(instance.instance_id)

    async def _remove(self, container_id: str) -> None:
        try:
            await self._api_call("remove_container", container_id, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # removal already in progress
                raise ContainerFailure(f"remove {container_id[:12]}: {_explain(exc)}") from None

    async def endpoint(self, instance: Instance) -> Endpoint:
        """A stream this process attaches on ``open()``, or the container for another router."""
        if not self.in_process_endpoints:
            return DockerAttachEndpoint(
                server=instance.server,
                instance_id=instance.instance_id,
                container_id=instance.instance_id,
            )

        async def open_stream() -> MessageStream:
            return await self.attach(instance.instance_id)

        return StreamEndpoint(
            server=instance.server, instance_id=instance.instance_id, open=open_stream
        )

    async def attach(
        self, container_id: str, *, on_stderr: Callable[[str], None] | None = None
    ) -> DockerAttachStream:
        """Attach to a running container's stdio; ``aclose()`` on the stream detaches."""
        api = await self._call(self._client)
        try:
            return await open_attach_stream(
                api, container_id, executor=self._executor, on_stderr=on_stderr
            )
        except _CONNECTION_ERRORS as exc:
            raise DaemonUnreachable(self._unreachable(exc)) from None

    async def probe(self, instance: Instance, *, timeout: float) -> None:
        """MCP ``initialize`` over a fresh attach, then detach; the server keeps running."""
        deadline = time.monotonic() + timeout
        try:
            async with asyncio.timeout(timeout):
                stream = await self.attach(instance.instance_id)
        except TimeoutError:
            raise ProbeError(f"could not attach within {timeout:g} s") from None
        except RuntimeFailure as exc:
            raise ProbeError(str(exc)) from None
        try:
            await initialize(stream, timeout=max(0.1, deadline - time.monotonic()))
        finally:
            await stream.aclose()

    async def logs(self, instance: Instance, *, tail: int = 100) -> list[str]:
        """The last ``tail`` stderr lines (stdout is the protocol), secret values masked."""
        try:
            raw = await self._api_call(
                "logs", instance.instance_id, stdout=False, stderr=True, tail=tail
            )
        except docker.errors.NotFound:
            return []
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        lines = text.splitlines()[-tail:] if tail else []
        return [redactor().redact(line) for line in lines]  # a server may echo its secrets

    def events(self) -> AsyncIterator[RuntimeEvent]:
        """Our containers' start/die/destroy, plus ``daemon`` when dockerd goes and comes back."""
        return self._events.follow()

    def _mark_dirty(self, container_id: str) -> None:
        """An event was seen for the container: the next ``observe`` inspects it afresh."""
        with self._dirty_lock:
            self._dirty.add(container_id)

    async def aclose(self) -> None:
        """Stop following events and release the client; running containers are left alone."""
        self._closed.set()
        self._events.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._api_lock:
            api, self._api = self._api, None
        if api is not None:
            api.close()

    # -- helpers ------------------------------------------------------------

    def _instance(self, info: dict[str, Any]) -> Instance:
        config = info.get("Config") or {}
        labels = config.get("Labels") or {}
        running, started_at, exit_code = _live_state(info, created=0.0)
        return Instance(
            server=labels.get(conventions.LABEL_SERVER, ""),
            instance_id=str(info["Id"]),
            runtime=RuntimeKind.DOCKER,
            fleet=labels.get(conventions.LABEL_FLEET, ""),
            config_hash=labels.get(conventions.LABEL_CONFIG_HASH, ""),
            running=running,
            started_at=started_at,
            exit_code=None if running else exit_code,
            display=str(info.get("Name", "")).lstrip("/"),
        )


def _live_state(info: dict[str, Any], *, created: float) -> tuple[bool, float, int | None]:
    """(running, started at, exit code) from an inspect: the container's live state."""
    state = info.get("State") or {}
    started = _parse_time(str(state.get("StartedAt") or "")) or created
    if not started:
        started = _parse_time(str(info.get("Created") or "")) or 0.0
    code = state.get("ExitCode")
    return bool(state.get("Running")), started, int(code) if isinstance(code, int) else None


def _parse_time(text: str) -> float | None:
    """Docker's RFC 3339 times (nanoseconds, ``Z``) -> epoch seconds; None for the zero time."""
    if not text or text.startswith("0001-"):
        return None
    try:
        return datetime.fromisoformat(_FRACTION_RE.sub(r".\1", text)).timestamp()
    except ValueError:
        return None


def _explain(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc).strip()


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    """Blank secret values out of a daemon's error message before anyone sees it.

    The daemon may quote a value back escaped (runc refuses an environment
    variable holding a NUL with ``"NAME=va\\x00lue"``), so each value's
    escaped spellings are blanked too, longest first.
    """
    forms = {f for v in secrets for f in (v, repr(v)[1:-1], json.dumps(v)[1:-1]) if f}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "***")
    return text
