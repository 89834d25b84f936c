"""The status vocabulary shared by the local controller and the operator.

One set of states, condition types and reasons, so ``mcp-fleet status``, the
status file, the router's ``/api/status`` and ``MCPServer.status`` all say the
same thing in the same words.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class ServerState(StrEnum):
    """Where a server is in its life, as ``mcp-fleet status`` shows it."""

    PENDING = "Pending"  # wanted, not started yet (or waiting for backoff)
    STARTING = "Starting"  # started, MCP initialize not yet answered
    READY = "Ready"  # answered an MCP initialize: clients can use it
    FAILED = "Failed"  # cannot run as configured (missing secret, no image...)
    CRASHLOOP = "CrashLoop"  # keeps exiting; restarts are backed off
    STOPPING = "Stopping"  # disabled or orphaned: its instance is being stopped
    STOPPED = "Stopped"  # disabled (nothing runs), or on-demand and idle
    UNKNOWN = "Unknown"


class ConditionType(StrEnum):
    """Kubernetes-style condition types."""

    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"


# Reasons: CamelCase, stable, documented in README's status section.
REASON_INITIALIZED: Final = "Initialized"
REASON_STARTING: Final = "Starting"
REASON_PROBE_FAILED: Final = "ProbeFailed"
REASON_MISSING_SECRET: Final = "MissingSecret"
REASON_UNKNOWN_SERVER: Final = "UnknownServer"
REASON_INVALID_SPEC: Final = "InvalidSpec"
REASON_IMAGE_UNAVAILABLE: Final = "ImageUnavailable"
REASON_RUNTIME_UNSUPPORTED: Final = "RuntimeUnsupported"
REASON_CRASHLOOP: Final = "CrashLoopBackOff"
REASON_EXITED: Final = "Exited"
REASON_DISABLED: Final = "Disabled"
REASON_IDLE: Final = "ScaledToZero"
#: A ``sessions: per-client`` server: no shared instance; the router runs one per client session.
REASON_PER_CLIENT: Final = "PerClient"
REASON_CONFIG_CHANGED: Final = "ConfigChanged"
REASON_RUNTIME_ERROR: Final = "RuntimeError"
