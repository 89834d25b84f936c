"""The soak in small: bench/soak.py for ~18 s in CI, with its invariants asserted.

The full soak (100 sessions for 10 minutes, ``python bench/soak.py``) is an
on-demand run; this one runs the same script, unchanged, on the process
runtime with 10 sessions and a registry edit every 6 s that replaces every
backend, so a regression in what the soak proves (a response lost or given
to the wrong request, a backend or a descriptor left behind) fails CI
rather than waiting for the next long run. Replacements are make-before-break,
so the run is strict: no call may get an error at all, not even while its
server is being replaced. RSS growth is not judged over so short a run (the
allocator has not settled), only reported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]
SOAK = ROOT / "bench" / "soak.py"


def test_short_soak_fails_no_call_misroutes_nothing_and_leaks_nothing(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    argv = [
        sys.executable, str(SOAK), "--runtime", "process", "--sessions", "10",
        "--workers", "1", "--duration", "18", "--edit-interval", "6", "--warmup", "5",
        "--echo-servers", "1", "--no-rss-check", "--strict-replacements", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=80, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    result = json.loads(out.read_text())
    calls = result["calls"]
    assert calls["ok"] > 200, calls
    assert calls["lost"] == 0, result["examples"]["lost"]
    assert calls["misrouted"] == 0, result["examples"]["misrouted"]
    assert calls["mcp_errors"] == 0, result["examples"]["errors"]  # replacements included
    # Edits (one, or two when the machine is not busy), each replacing both servers, each
    # converged and seen in the status; echo answers came from more than one generation.
    edits = result["edits"]
    assert edits and all(e["converged_s"] is not None for e in edits), edits
    assert result["replacements_observed"] >= len(edits) * len(result["servers"])
    assert result["echo_generations_answering"] >= 2
    # No leak: descriptors of `up` with no client connected, backends, leftovers.
    assert result["fds"]["idle_after"] <= result["fds"]["idle_before"], result["fds"]
    backends = result["backends"]
    assert backends["idle_after"] == len(result["servers"]), backends
    assert backends["up_exit"] == 0
    assert backends["processes_after_stop"] == 0
    assert result["checks"] and all(result["checks"].values()), result["checks"]
