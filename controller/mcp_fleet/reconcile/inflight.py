"""The planner's rule for a server whose actions are still in flight.

Starting a server and waiting for its first ``initialize`` answer can take
as long as the probe timeout, so the executor carries such actions out in
the background and a pass never waits for them (``executor``). The planner
sees them in ``Memory.in_flight`` and, for such a server, plans nothing new:
no second start, no second probe (never two copies), no removal of the
instance being probed. The one exception is a server that is no longer what
the flight is starting (disabled, gone from the registry, another config or
runtime): its flight is cancelled (``Cancel``), which stops what it started,
and the next plan, with nothing in flight, does the rest as usual. A flight
that only stops instances is never cancelled: a stop is left to finish.

Pure, like the rest of the planner: the answer depends on its arguments only.
"""

from __future__ import annotations

from mcp_fleet.model import RuntimeKind, ServerSpec
from mcp_fleet.reconcile.actions import Cancel, short_hash
from mcp_fleet.reconcile.memory import InFlight


def in_flight_check(
    name: str,
    spec: ServerSpec | None,
    flight: InFlight,
    *,
    config_hash: str | None,
    runtime: RuntimeKind | None,
) -> Cancel | None:
    """A ``Cancel`` when ``flight`` starts something the server no longer wants, else None.

    ``config_hash`` and ``runtime`` are what the server wants now (its
    desired config hash and the runtime chosen for it).
    """
    if flight.cancelling or not flight.starts:
        return None  # already being cut short, or only stopping: let it land
    if spec is None:
        return Cancel(name, "orphaned: no registry entry")
    if not spec.enabled:
        return Cancel(name, "disabled")
    if runtime is not flight.runtime:
        was = flight.runtime.value if flight.runtime else "none"
        now = runtime.value if runtime else "none"
        return Cancel(name, f"runtime changed: {was} -> {now}")
    if config_hash != flight.config_hash:
        was = short_hash(flight.config_hash or "")
        return Cancel(name, f"config changed: {was} -> {short_hash(config_hash or '')}")
    return None
