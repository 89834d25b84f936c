"""The fleet's controller lock: one controller per fleet directory.

The protocol, the one copy of it (the controller takes the lock, ``mcp-fleet
down`` finds and stops whoever holds it)::

    lock = ControllerLock(files.state_dir, home=files.home)
    lock.acquire()          # ControllerBusy when another controller holds it
    ...
    lock.release()

    holder_pid(state_dir)   # None: free; else the pid its holder wrote ("" unknown)
    is_free(state_dir)      # whether nobody holds it now

- **An exclusive ``flock`` on ``<fleet>/.state/controller.lock``**, taken
  without blocking: the kernel releases it when its holder exits, even on
  SIGKILL, so a crashed controller never leaves a stale lock behind.
- **The holder writes its pid into the file** once it has the lock, so a
  second controller can say who is in the way and ``down`` knows whom to
  signal.
- **Taking it makes ``.state`` private first** (0700, its files 0600:
  ``private_files``), also what an older version left readable.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

from mcp_fleet.errors import RuntimeFailure
from mcp_fleet.private_files import FILE_MODE, make_private

#: Under the state directory: the file whose ``flock`` is the lock.
LOCK_FILE = "controller.lock"


class ControllerBusy(RuntimeFailure):
    """Another controller already manages this fleet directory."""


def lock_path(state_dir: Path) -> Path:
    """Where the lock of the fleet whose state directory is ``state_dir`` lives."""
    return state_dir / LOCK_FILE


class ControllerLock:
    """The lock as its holder sees it: taken once, released on ``release`` (or exit)."""

    def __init__(self, state_dir: Path, *, home: Path) -> None:
        self.state_dir = state_dir
        #: The fleet directory, named when another controller holds the lock.
        self.home = home
        self._handle: IO[str] | None = None

    @property
    def held(self) -> bool:
        """Whether this process holds the lock (through this object)."""
        return self._handle is not None

    def acquire(self) -> None:
        """Take the lock and write our pid into it; idempotent.

        Raises ``ControllerBusy`` naming the holder's pid when another
        process holds it.
        """
        if self._handle is not None:
            return
        make_private(self.state_dir)  # also what an older version left readable
        path = lock_path(self.state_dir)
        handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, FILE_MODE), "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise ControllerBusy(
                f"another controller (pid {holder}) already manages {self.home}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        """Let the lock go (closing the file releases the ``flock``)."""
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()
            self._handle = None


def holder_pid(state_dir: Path) -> str | None:
    """What the controller holding the lock wrote into it (its pid; "" when it wrote
    nothing yet); None when nobody holds it, or no controller ever ran here."""
    path = lock_path(state_dir)
    if not path.exists():
        return None
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return None  # nobody holds it: no controller runs
        except BlockingIOError:
            handle.seek(0)
            return handle.read().strip()


def is_free(state_dir: Path) -> bool:
    """Whether the lock can be taken right now (its holder, if any, has let it go).

    Only tests, and lets it go at once: for waiting on a controller to stop.
    """
    with lock_path(state_dir).open("a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
