"""``mcp-fleet operator`` and ``mcp-fleet bridge``: the commands that run in a cluster.

``operator`` reconciles MCPServer objects into pods, Services and
NetworkPolicies (kopf); ``bridge`` serves a stdio MCP server over streamable
HTTP inside its pod. Both import their heavy libraries (kopf, the Kubernetes
client, uvicorn) inside the command, so ``mcp-fleet --help`` stays quick.
"""

from __future__ import annotations

import re
from typing import Annotated

import typer

from mcp_fleet import conventions

#: A ConfigMap name that is also a valid label value (the registry label carries it).
CONFIGMAP_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")


def register(app: typer.Typer) -> None:
    """Add ``operator`` and ``bridge`` to the ``mcp-fleet`` application."""
    app.command("operator")(operator)
    app.command(
        "bridge",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(bridge)


def operator(
    namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace",
            "-n",
            help="Namespace to watch (repeatable). Default: the operator's own namespace.",
        ),
    ] = None,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Watch MCPServers in every namespace.")
    ] = False,
    resync: Annotated[
        float, typer.Option(help="Seconds between full reconcile passes (probes included).")
    ] = conventions.DEFAULT_RESYNC_SECONDS,
    probe_timeout: Annotated[
        float, typer.Option(help="Seconds a readiness probe (MCP initialize) may take.")
    ] = 10.0,
    bridge_image: Annotated[
        str | None,
        typer.Option(
            help="Image with mcp-fleet for stdio servers' bridge sidecars "
            f"(default: ${conventions.ENV_BRIDGE_IMAGE}).",
        ),
    ] = None,
    fleet_namespace: Annotated[
        str | None,
        typer.Option(
            help="Namespace of the router and operator pods, the only ones server "
            "NetworkPolicies let in (default: the operator's own namespace).",
        ),
    ] = None,
    liveness: Annotated[
        str | None,
        typer.Option(help="Serve kopf's liveness probe, e.g. http://0.0.0.0:8081/healthz."),
    ] = None,
    registry_configmap: Annotated[
        str | None,
        typer.Option(
            help="Keep one MCPServer per enabled server of the registry.yaml (and "
            "NAME.catalog.yaml catalogs, config.yaml, tools.yaml) in this ConfigMap of the "
            "operator's namespace.",
        ),
    ] = None,
    registry_secret: Annotated[
        str | None,
        typer.Option(
            help="With --registry-configmap: the Secret holding the catalogs' secrets "
            "(key = secret name), referenced by the MCPServers, never read.",
        ),
    ] = None,
) -> None:
    """Run the MCPServer operator (kopf) against the current cluster.

    Credentials: $KUBECONFIG (read when the operator logs in), else the pod's
    service account, else ~/.kube/config.

    [bold]Examples[/bold]

      mcp-fleet operator --namespace mcp
      mcp-fleet operator --all-namespaces --resync 15
      mcp-fleet operator --registry-configmap mcp-registry --registry-secret mcp-secrets
    """
    from mcp_fleet.operator.main import OperatorOptions, run_operator

    if all_namespaces and namespace:
        raise typer.BadParameter(
            "use either --namespace or --all-namespaces", param_hint="--namespace"
        )
    if registry_secret and not registry_configmap:
        raise typer.BadParameter(
            "--registry-secret needs --registry-configmap", param_hint="--registry-secret"
        )
    if registry_configmap and not CONFIGMAP_NAME_RE.match(registry_configmap):
        raise typer.BadParameter(
            "a ConfigMap name of at most 63 lower-case letters, digits, '-' and '.' "
            "(it is also a label value)",
            param_hint="--registry-configmap",
        )
    options = OperatorOptions(
        namespaces=tuple(namespace or ()),
        clusterwide=all_namespaces,
        resync_seconds=resync,
        probe_timeout=probe_timeout,
        bridge_image=bridge_image,
        fleet_namespace=fleet_namespace,
        liveness_endpoint=liveness,
        registry_configmap=registry_configmap,
        registry_secret=registry_secret,
    )
    run_operator(options)


def bridge(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Port to serve MCP on.")] = conventions.K8S_DEFAULT_PORT,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    path: Annotated[str, typer.Option(help="HTTP path of the MCP endpoint.")] = "/mcp",
    fifo_dir: Annotated[
        str | None,
        typer.Option(help="Sidecar mode: talk to the server through DIR/in and DIR/out (FIFOs)."),
    ] = None,
    per_session: Annotated[
        bool, typer.Option(help="Start one server process per client session.")
    ] = False,
    init_timeout: Annotated[
        float, typer.Option(help="Seconds the server may take to answer initialize.")
    ] = 120.0,
) -> None:
    """Serve a stdio MCP server over streamable HTTP (runs in the server's pod).

    The server's command follows [bold]--[/bold]; the bridge exits with the
    server's exit code. /healthz and /readyz serve Kubernetes probes.

    [bold]Examples[/bold]

      mcp-fleet bridge --port 8080 -- mcp-server-time
      mcp-fleet bridge --port 8080 --fifo-dir /mcp-io
    """
    from mcp_fleet.bridge.serve import options_from_cli, run

    options = options_from_cli(
        list(ctx.args),
        fifo_dir=fifo_dir,
        host=host,
        port=port,
        path=path,
        per_session=per_session,
        init_timeout=init_timeout,
    )
    problem = options.problem()
    if problem:
        raise typer.BadParameter(problem)
    raise typer.Exit(run(options))
