"""The reconciler: observe, plan (pure), execute, report.

- ``actions``: what a plan is made of; every action names its resource and
  its cause, and ``str(plan)`` is stable text (what ``--dry-run`` prints).
- ``plan``: the pure planner; imports no client library.
- ``memory``: what the controller remembers between passes (ownership,
  readiness, failures) and the frozen snapshot of it the planner reads.
- ``backoff``: the restart schedule and crash-loop rule.
- ``executor``: applies a plan through the runtimes; decides nothing.
- ``snapshot`` / ``statusfile``: the status model and its JSON file.
- ``loop``: the ``Controller`` that runs all of it, level-triggered.
"""
