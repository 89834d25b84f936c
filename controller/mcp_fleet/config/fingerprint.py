"""A cheap fingerprint of a fleet's files: has anything changed since the last read?

Reading and resolving the fleet (``load_fleet``) parses every YAML file and
validates every entry: milliseconds for a small fleet, much more for a big
catalog on a slow disk. A follower that re-reads the fleet every couple of
seconds only needs to know whether it must: a ``stat`` of each file (and a
listing of the catalogs directory, where catalogs come from) says so.
"""

from __future__ import annotations

from pathlib import Path

from mcp_fleet.config.resolve import current_catalogs
from mcp_fleet.model import FleetFiles

#: One file's identity and version: (path, inode, size, mtime_ns, ctime_ns), or None if absent.
FileStamp = tuple[str, int, int, int, int] | tuple[str, None]


def _stamp(path: Path) -> FileStamp:
    try:
        st = path.stat()
    except OSError:
        return (str(path), None)
    return (str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def fleet_fingerprint(files: FleetFiles) -> tuple[FileStamp, ...]:
    """Stamps of every file ``load_fleet`` would read now (equal stamps: same input).

    Blocking (it stats files): call it off the event loop, as ``load_fleet``.
    """
    paths = (*current_catalogs(files), files.registry, files.config, files.tools, files.secrets)
    return tuple(_stamp(p) for p in paths)
