"""Files only their owner may read: the fleet's ``.state`` directory and what it holds.

``<fleet>/.state`` holds what servers wrote to stderr (``logs/``), pid
files, the status file, caches of tool lists and often the audit log: a
server may print a secret in a form no masker knows, and the status file
names every server and its errors. Other local users must read none of it,
whatever the umask: directories are 0700 and files 0600, set at creation
(``private_dir``, ``open_private``, ``write_private``) and, for a ``.state``
left by an older version or written under a loose umask, fixed up when a
controller starts (``make_private``).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import BinaryIO, Final

DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) if need be, and make it 0700; returns it."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != DIR_MODE:
        path.chmod(DIR_MODE)
    return path


def open_private(path: Path, *, append: bool = True) -> BinaryIO:
    """Open ``path`` for writing (appending, or truncated), created 0600 or made 0600."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # an existing file keeps its mode through os.open
        return os.fdopen(fd, "ab" if append else "wb")
    except BaseException:
        os.close(fd)
        raise


def write_private(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` (replacing its content), mode 0600."""
    with open_private(path, append=False) as out:
        out.write(data.encode() if isinstance(data, str) else data)


def make_private(root: Path) -> None:
    """Make ``root`` and every directory under it 0700, every regular file 0600.

    Creates ``root`` if need be. Symbolic links are not followed and other
    kinds of file (sockets) are left alone; an entry that vanishes or that
    cannot be changed (owned by someone else) is skipped.
    """
    private_dir(root)
    for top, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = Path(top, name)
            with contextlib.suppress(OSError):
                mode = path.lstat().st_mode
                wanted = DIR_MODE if stat.S_ISDIR(mode) else FILE_MODE
                if (stat.S_ISDIR(mode) or stat.S_ISREG(mode)) and stat.S_IMODE(mode) != wanted:
                    path.chmod(wanted)
