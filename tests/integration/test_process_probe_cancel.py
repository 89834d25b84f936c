"""A probe cut short ends at once: the process runtime waits for no exit code then.

The controller cancels a probe in flight when its server is disabled or
changed, and stops the process next. A probe that failed (no answer, the
stream closed) waits briefly for the exit code and the last stderr lines, so
the failure can name them; a cancelled one has nothing to report and must
not hold up the stop. Checked with a real process that never answers
``initialize`` (as ``tests/servers/handshake_server.py``, and saying on
stderr when the request arrived, so the cancel comes mid-probe), and, for
contrast, with a probe that fails, which still waits for a dying server's
last words.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp_fleet.model import CatalogEntry, ProcessSpec, ServerSpec
from mcp_fleet.probe import ProbeError
from mcp_fleet.runtimes.process import ProcessRuntime, read_stat
from support import until

REPO = Path(__file__).resolve().parents[2]
HANDSHAKE = REPO / "tests" / "servers" / "handshake_server.py"
#: Like the handshake server without an answer, and says on stderr when ``initialize`` came.
SILENT = (
    "import sys\n"
    "for line in sys.stdin:\n"
    "    if '\"initialize\"' in line:\n"
    "        print('initialize received', file=sys.stderr, flush=True)\n"
)

pytestmark = pytest.mark.timeout(30)


def hanging(name: str, *command: str) -> ServerSpec:
    argv = command or (sys.executable, str(HANDSHAKE))
    entry = CatalogEntry(name=name, source=Path("c.yaml"), process=ProcessSpec(command=argv))
    return ServerSpec(name=name, enabled=True, entry=entry)


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[ProcessRuntime]:
    rt = ProcessRuntime(fleet="probe-cancel", state_dir=tmp_path / ".state")
    try:
        yield rt
    finally:
        await rt.stop_all()


def alive(instance_id: str) -> bool:
    st = read_stat(int(instance_id.split(":")[1]))
    return st is not None and st.alive


async def test_a_cancelled_probe_returns_at_once_and_the_stop_follows_quickly(
    runtime: ProcessRuntime,
) -> None:
    inst = await runtime.start(hanging("slow", sys.executable, "-c", SILENT))
    probe = asyncio.create_task(runtime.probe(inst, timeout=20.0))

    async def initialize_received() -> bool:
        return "initialize received" in await runtime.logs(inst)

    await until(initialize_received, within=15, what="the server read initialize")
    assert not probe.done()  # the probe waits for an answer that never comes

    began = time.monotonic()
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    cancelled_in = time.monotonic() - began
    await runtime.stop(inst)  # what the controller does next (closing stdin ends it)
    stopped_in = time.monotonic() - began

    assert not alive(inst.instance_id)
    # Before, the cancelled probe waited 0.5 s for an exit code and 0.2 s for stderr.
    assert cancelled_in < 0.3, f"the cancelled probe took {cancelled_in:.2f} s to return"
    assert stopped_in < 1.5, f"cancel + stop took {stopped_in:.2f} s"
    print(f"\ncancel -> probe returned {cancelled_in * 1000:.0f} ms, stopped {stopped_in:.2f} s")


async def test_a_probe_that_fails_still_waits_for_the_last_words(
    runtime: ProcessRuntime,
) -> None:
    script = "import sys; sys.stdin.readline(); print('dying words', file=sys.stderr); sys.exit(3)"
    inst = await runtime.start(hanging("dies", sys.executable, "-c", script))
    with pytest.raises(ProbeError, match="closed its output"):
        await runtime.probe(inst, timeout=10.0)
    # The exit code and the stderr line are known once the probe has failed.
    observed = {i.instance_id: i for i in (await runtime.observe()).instances}
    assert observed[inst.instance_id].exit_code == 3
    assert "dying words" in await runtime.logs(inst)
