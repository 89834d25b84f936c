"""Write a file so that readers see the old content or the new, never half.

Every file mcp-fleet edits for the user (registry.yaml, catalogs, secrets.env)
goes through ``atomic_write``: the new content is written to a temporary file
in the same directory (same filesystem, so the rename is atomic), flushed and
fsynced, given its final mode before any byte lands in it (a secrets file is
never readable by others, not even for a moment), then renamed over the
target, and the directory is fsynced so the rename survives a crash. With
``backup=True`` the previous content is first kept next to it as ``<name>.bak``
(written the same way, so an old backup is never left half overwritten).
A watcher (the controller) therefore never reads a torn file.

When the write fails (a full disk, a read-only mount, a file made immutable)
the temporary file is removed, the target is untouched, and the ``OSError``
raised names the target (not the temporary file) and says it was left
unchanged: the CLI prints it as one line, ``error: <path>: <cause>; ...``.
"""

from __future__ import annotations

import contextlib
import os
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
    Raises ``OSError`` naming ``path`` when anything fails; ``path`` is then
    as it was.
    """
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if mode is None:
            try:
                mode = stat.S_IMODE(path.stat().st_mode)
            except FileNotFoundError:
                mode = 0o644
        made_backup: Path | None = None
        if backup and path.exists():
            made_backup = backup_path(path)
            _replace(made_backup, path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
        _replace(path, payload, mode)
    except OSError as exc:
        cause = exc.strerror or str(exc)
        raise OSError(exc.errno, f"{cause}; {path.name} was left unchanged", str(path)) from exc
    return made_backup


def _replace(path: Path, payload: bytes, mode: int) -> None:
    """Write ``payload`` to a temporary file beside ``path``, fsync, rename over ``path``."""
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
