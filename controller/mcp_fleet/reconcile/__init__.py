"""The reconciler: observe, plan (pure), execute, publish, report.

What it owns, module by module:

- ``loop``: the ``Controller`` that runs a pass (load, observe, plan,
  launch, publish, store the status), level-triggered, and its hooks
  (``after_pass``, ``amend_status``) for callers that add to a pass.
- ``fleet_reader``: reading the fleet files; the last good state, masking
  secrets, specs a runtime refuses.
- ``observing``: listing every runtime; exits counted as failures.
- ``actions``: what a plan is made of; every action names its resource and
  its cause, and ``str(plan)`` is stable text (what ``--dry-run`` prints).
- ``plan``: the pure planner; imports no client library. ``demand`` and
  ``inflight``: its rules for on-demand servers and flights under way.
- ``memory``: what the controller remembers between passes (ownership,
  readiness, failures) and the frozen snapshot of it the planner reads.
- ``backoff``: the restart schedule and crash-loop rule.
- ``executor``: applies a plan through the runtimes; decides nothing.
- ``publishing``: endpoints into the ``EndpointTable`` after each pass, and
  the hand-over of a replaced server to its new instance.
- ``snapshot`` / ``statusfile``: the status model and its JSON file.
- ``lock``: one controller per fleet (the lock file's protocol, used by the
  controller and by ``mcp-fleet down``).
- ``wakeups``: what wakes the loop (runtime events, file edits).
- ``demand_ipc`` / ``demand_server``: the demand socket through which a
  router in another process asks for on-demand servers.

What it must not import (``lint-imports``, pyproject.toml): the CLI, the
operator, the bridge, the endpoint sources, the router or ``kube``; below
it are the runtimes (handed in as ``runtimes.base.Runtime``: only
``runtimes.select`` builds one), the gateway, config and the shared
modules. ``plan`` and what it loads import no client library (docker,
kubernetes, kopf, watchfiles) and no runtime implementation.
"""
