"""``mcp-fleet operator``: run the MCPServer operator (kopf) against a cluster.

The operator watches MCPServer objects in its own namespace by default (the
chart gives it a namespaced Role), in a list of namespaces with
``--namespace``, or everywhere with ``--all-namespaces`` (ClusterRole). It
runs standalone: one replica, no kopf peering objects; the chart's
Deployment uses the ``Recreate`` strategy so two operators never overlap.

With ``--registry-configmap NAME`` it also keeps one MCPServer per enabled
server of the ``registry.yaml`` in that ConfigMap of its own namespace
(``registry_watch``), next to the reconciler that runs them.

Credentials are read by the login handler at the moment kopf logs in (and
again whenever it must re-login): ``$KUBECONFIG``, else the pod's service
account, else ``~/.kube/config``. Neither Kubernetes client reads them at
import time here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import kopf

from mcp_fleet import __version__
from mcp_fleet import conventions as c
from mcp_fleet.kube.client import own_namespace
from mcp_fleet.operator.handlers import OperatorConfig, Reconciler, build_registry, make_settings
from mcp_fleet.operator.k8s_plan import PlanOptions
from mcp_fleet.operator.registry_watch import RegistryOptions, RegistrySync, add_handlers

log = logging.getLogger("mcp_fleet.operator")


@dataclass(frozen=True, slots=True)
class OperatorOptions:
    """What ``mcp-fleet operator`` was asked to do."""

    namespaces: tuple[str, ...] = ()
    clusterwide: bool = False
    resync_seconds: float = c.DEFAULT_RESYNC_SECONDS
    probe_timeout: float = 10.0
    bridge_image: str | None = None
    fleet_namespace: str | None = None
    liveness_endpoint: str | None = None
    #: Registry ConfigMap mode: a ConfigMap in the operator's namespace holding registry.yaml.
    registry_configmap: str | None = None
    #: The Secret that catalog ``secrets:`` refer to in that mode (key = secret name).
    registry_secret: str | None = None


def default_bridge_image() -> str:
    """``$MCP_FLEET_BRIDGE_IMAGE`` (the chart sets it to the operator's image), else ours."""
    return os.environ.get(c.ENV_BRIDGE_IMAGE) or f"mcp-fleet:{__version__}"


def resolve_namespaces(options: OperatorOptions) -> tuple[str, ...]:
    """Namespaces to watch: as given, else the operator's own, else ``default``."""
    if options.clusterwide:
        return ()
    return options.namespaces or (own_namespace() or "default",)


def operator_config(options: OperatorOptions) -> OperatorConfig:
    return OperatorConfig(
        plan_options=PlanOptions(
            bridge_image=options.bridge_image or default_bridge_image(),
            fleet_namespace=options.fleet_namespace or own_namespace(),
        ),
        resync_seconds=options.resync_seconds,
        probe_timeout=options.probe_timeout,
    )


async def operate(
    options: OperatorOptions,
    *,
    config: OperatorConfig | None = None,
    settings: kopf.OperatorSettings | None = None,
    stop_flag: asyncio.Event | None = None,
) -> None:
    """Run until cancelled (or ``stop_flag`` is set); tests call this with their own seams."""
    config = config or operator_config(options)
    reconciler = Reconciler(config)
    registry = build_registry(reconciler)
    sync_task: asyncio.Task[None] | None = None
    if options.registry_configmap:
        sync = RegistrySync(
            RegistryOptions(
                configmap=options.registry_configmap,
                namespace=options.fleet_namespace or own_namespace() or "default",
                secret=options.registry_secret,
                resync_seconds=config.resync_seconds,
            ),
            load_configuration=config.load_configuration,
        )
        add_handlers(registry, sync)
        sync_task = asyncio.create_task(sync.run(), name="registry")
    namespaces: Sequence[str] = resolve_namespaces(options)
    log.info(
        "MCPServer operator %s watching %s",
        __version__,
        "all namespaces" if options.clusterwide else ", ".join(namespaces),
    )
    try:
        await kopf.operator(
            registry=registry,
            settings=settings or make_settings(),
            clusterwide=options.clusterwide,
            namespaces=namespaces,
            standalone=True,
            liveness_endpoint=options.liveness_endpoint,
            stop_flag=stop_flag,
        )
    finally:
        if sync_task is not None:
            sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sync_task
        await reconciler.close()


def run_operator(options: OperatorOptions) -> None:
    """Blocking entry for the CLI; Ctrl-C or SIGTERM stop it cleanly (kopf handles signals)."""
    asyncio.run(operate(options))
