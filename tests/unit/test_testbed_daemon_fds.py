"""tests/testbed.sh starts dockerd holding no descriptor of the script or of its caller.

The daemon outlives the script, so whatever it inherits stays open while it
runs: the test bed's lock made a second ``tests/testbed.sh`` wait forever,
and a caller's pipe would never reach its end. The script's own
``without_inherited_fds`` is run here by bash exactly as the script defines
it, starting a long-lived stand-in for the daemon (``sleep``), with the lock
taken as the script takes it and a pipe inherited from the caller: once the
script is gone, the pipe ends and the lock is free although the stand-in
still runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import signal
import subprocess
from pathlib import Path

TESTBED = Path(__file__).resolve().parents[1] / "testbed.sh"


def script_function(name: str) -> str:
    found = re.search(rf"^{name}\(\) \{{\n.*?^\}}\n", TESTBED.read_text(), re.M | re.S)
    assert found, f"{name} is not defined in {TESTBED}"
    return found.group(0)


def test_the_daemon_keeps_neither_the_lock_nor_a_callers_pipe(tmp_path: Path) -> None:
    lock, pidfile = tmp_path / "lock", tmp_path / "daemon.pid"
    script = (
        "set -euo pipefail\n"
        + script_function("without_inherited_fds")
        + f'exec 9>"{lock}"\nflock -n 9\n'
        + "without_inherited_fds setsid -f sh -c 'echo $$ >\"$0\"; exec sleep 60' "
        + f'"{pidfile}" </dev/null >/dev/null 2>&1\n'
        + f'until [ -s "{pidfile}" ]; do sleep 0.01; done\n'
    )
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.run(
            ["bash", "-c", script], pass_fds=(write_end,), timeout=20, capture_output=True
        )
        assert proc.returncode == 0, proc.stderr.decode()
        os.close(write_end)
        write_end = -1
        daemon = int(pidfile.read_text())
        assert Path(f"/proc/{daemon}").exists()  # the stand-in runs on

        readable, _, _ = select.select([read_end], [], [], 5.0)
        assert readable and os.read(read_end, 1) == b"", "the caller's pipe never ended"
        with lock.open("a") as handle:  # a second run would take the lock at once
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        open_fds = sorted(int(fd.name) for fd in Path(f"/proc/{daemon}/fd").iterdir())
        assert open_fds == [0, 1, 2]
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
