"""The security tests drive real fleets with the helpers the fault tests use.

A fleet on disk, a real ``mcp-fleet controller`` process and views of
``/proc`` and Docker live in tests/faults/faults_support.py; that folder is
put on the import path here so both suites share one copy of them.
"""

from __future__ import annotations

import sys
from pathlib import Path

FAULTS = str(Path(__file__).resolve().parents[1] / "faults")
if FAULTS not in sys.path:
    sys.path.insert(0, FAULTS)
