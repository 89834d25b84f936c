"""Names, labels, limits and defaults shared by every part of mcp-fleet.

Kept in one module (as kopf does) so a label name or a default lives in one
place: the planner, the runtimes, the operator and the CLI import it from
here, and a rename is one edit.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Final

#: Environment variable that overrides the default fleet directory.
ENV_HOME: Final = "MCP_FLEET_HOME"
#: Environment variable that overrides the fleet name used in ownership labels.
ENV_FLEET_NAME: Final = "MCP_FLEET_NAME"
#: Default fleet directory when neither ``--dir`` nor ``MCP_FLEET_HOME`` is given.
DEFAULT_HOME: Final = Path("~/.mcp-fleet")

# Files of a fleet directory, laid out like Docker's ``~/.docker/mcp``.
CATALOGS_DIR: Final = "catalogs"
REGISTRY_FILE: Final = "registry.yaml"
CONFIG_FILE: Final = "config.yaml"
TOOLS_FILE: Final = "tools.yaml"
SECRETS_FILE: Final = "secrets.env"
#: Router access tokens (hashes only), managed by ``mcp-fleet token``.
TOKENS_FILE: Final = "tokens.yaml"
#: Optional OIDC settings for the router (issuer, audience, JWKS, identity mapping).
OIDC_FILE: Final = "oidc.yaml"
#: Runtime state written by the controller (status, pid files) lives here.
STATE_DIR: Final = ".state"
STATUS_FILE: Final = "status.json"

# Ownership labels, as docker compose does it.
LABEL_PREFIX: Final = "mcp-fleet."
LABEL_FLEET: Final = "mcp-fleet.fleet"
LABEL_SERVER: Final = "mcp-fleet.server"
LABEL_CONFIG_HASH: Final = "mcp-fleet.config-hash"
LABEL_RUNTIME: Final = "mcp-fleet.runtime"

# Kubernetes naming.
K8S_GROUP: Final = "mcp-fleet.dev"
K8S_VERSION: Final = "v1alpha1"
K8S_LABEL_FLEET: Final = "mcp-fleet.dev/fleet"
K8S_LABEL_SERVER: Final = "mcp-fleet.dev/server"
#: On MCPServers made from a registry ConfigMap: the ConfigMap's name (the only ones it
#: updates or deletes).
K8S_LABEL_REGISTRY: Final = "mcp-fleet.dev/registry"
K8S_ANNOTATION_CONFIG_HASH: Final = "mcp-fleet.dev/config-hash"
K8S_KIND: Final = "MCPServer"
K8S_PLURAL: Final = "mcpservers"
#: Hash of one child manifest as the operator last applied it (skip unchanged children).
K8S_ANNOTATION_APPLIED_HASH: Final = "mcp-fleet.dev/applied-hash"
#: Set by the router when it needs an on-demand server (RFC 3339 time): resets the idle clock.
K8S_ANNOTATION_LAST_ACTIVITY: Final = "mcp-fleet.dev/last-activity"
#: Field manager (server-side apply) and ``app.kubernetes.io/managed-by`` of operator children.
K8S_MANAGER: Final = "mcp-fleet-operator"
#: ``app.kubernetes.io/part-of`` on everything the chart and the operator create.
K8S_PART_OF: Final = "mcp-fleet"
#: ``app.kubernetes.io/component`` values: server pods, the router, the operator.
K8S_COMPONENT_SERVER: Final = "mcp-server"
K8S_COMPONENT_ROUTER: Final = "router"
K8S_COMPONENT_OPERATOR: Final = "operator"
#: Port the bridge (or an HTTP server) listens on in a pod unless the spec says otherwise.
K8S_DEFAULT_PORT: Final = 8080
#: Environment variable naming the image that carries ``mcp-fleet bridge`` (sidecar mode).
ENV_BRIDGE_IMAGE: Final = "MCP_FLEET_BRIDGE_IMAGE"

#: MCP tool and prompt names the router advertises must match this.
TOOL_NAME_RE: Final = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
#: Separator between server and name when a name must be prefixed.
PREFIX_SEPARATOR: Final = "__"
#: Server names: DNS-label-like so they are valid container names, label values
#: and Kubernetes object names, and can never traverse a path.
SERVER_NAME_RE: Final = re.compile(r"^[a-z0-9]([a-z0-9_.-]{0,61}[a-z0-9])?$", re.IGNORECASE)

# Container defaults (overridable per server in the catalog).
DEFAULT_CPUS: Final = 1.0
DEFAULT_MEMORY: Final = "2g"

# Controller timing.
DEFAULT_RESYNC_SECONDS: Final = 30.0
WATCH_DEBOUNCE_MS: Final = 200
DEFAULT_START_CONCURRENCY: Final = 8
DEFAULT_PROBE_TIMEOUT_SECONDS: Final = 20.0
BACKOFF_INITIAL_SECONDS: Final = 1.0
BACKOFF_MAX_SECONDS: Final = 60.0
#: Restarts within the crash window after which a server is in CrashLoop.
CRASHLOOP_THRESHOLD: Final = 3
CRASHLOOP_WINDOW_SECONDS: Final = 120.0

# Router defaults.
DEFAULT_HTTP_HOST: Final = "127.0.0.1"
DEFAULT_HTTP_PORT: Final = 8811
DEFAULT_HTTP_PATH: Final = "/mcp"
DEFAULT_CALL_TIMEOUT_SECONDS: Final = 120.0

#: The MCP protocol version our own probes and sessions ask for first.
MCP_PROTOCOL_VERSION: Final = "2025-06-18"

CLIENT_INFO_NAME: Final = "mcp-fleet"


def fleet_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the fleet directory: ``--dir``, then ``MCP_FLEET_HOME``, then the default."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    return DEFAULT_HOME.expanduser()


def fleet_name(home: Path) -> str:
    """The fleet's name in ownership labels: ``MCP_FLEET_NAME``, else derived from the path.

    Derived as ``<dir name>-<8 hex of the absolute path>`` so two fleet
    directories on one machine never adopt or remove each other's containers,
    and the same directory always gets the same name across restarts.
    """
    override = os.environ.get(ENV_FLEET_NAME)
    if override:
        return override
    resolved = str(home.expanduser().resolve())
    digest = hashlib.sha256(resolved.encode()).hexdigest()[:8]
    base = re.sub(r"[^a-z0-9-]+", "-", home.expanduser().resolve().name.lower()).strip("-")
    return f"{base or 'fleet'}-{digest}"
