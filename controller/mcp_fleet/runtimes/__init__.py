"""Runtimes: where servers actually run (local processes, Docker, Kubernetes).

Each runtime implements the small ``Runtime`` protocol of ``runtimes.base``.
The planner never imports a runtime; the executor calls one.
"""
