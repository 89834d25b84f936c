"""Write a file so that readers see the old content or the new, never half.

Every file mcp-fleet edits for the user (registry.yaml, catalogs, secrets.env)
goes through ``atomic_write``: the new content is written to a temporary file
in the same directory (same filesystem, so the rename is atomic), flushed and
fsynced, given its final mode before any byte lands in it (a secrets file is
never readable by others, not even for a moment), then renamed over the
target, and the directory is fsynced so the rename survives a crash. With
``backup=True`` the previous content is first kept next to it as ``<name>.bak``.
A watcher (the controller) therefore never reads a torn file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

BACKUP_SUFFIX = ".bak"


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + BACKUP_SUFFIX)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(
    path: Path,
    data: str | bytes,
    *,
    mode: int | None = None,
    backup: bool = False,
) -> Path | None:
    """Replace ``path`` with ``data`` atomically; returns the backup's path if one was made.

    ``mode`` defaults to the existing file's mode (or 0o644 for a new file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    if mode is None:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            mode = 0o644
    made_backup: Path | None = None
    if backup and path.exists():
        made_backup = backup_path(path)
        shutil.copy2(path, made_backup)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
    return made_backup
