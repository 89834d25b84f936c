"""Print the Debian packages a minimal python3 needs, one ``name=version file sha256`` a line.

The test bed's base image is not debootstrapped: it is the dependency closure
of Debian's ``python3`` and ``python3-minimal``, unpacked with ``dpkg-deb -x``
(see tests/testbed.sh). Taken whole, ``apt-cache depends --recurse`` also
drags in the package manager (python3-minimal -> dpkg -> tar) and perl
(mailcap), which nothing in the image needs, since nothing in it ever
installs a package. So the recursive listing is read once and walked here:
Depends and PreDepends only, the first alternative of a choice, and the
package tooling left out. apt is asked twice in all (each call reloads its
cache, about a second on a machine without a package cache file).

The sorted output names exact versions and file hashes, so it serves as the
base image's input hash: a Debian point release rebuilds the image.

Usage: python3 debian_closure.py [ROOT_PACKAGE...]   (default: python3 python3-minimal)
"""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import unquote

EXCLUDED = frozenset({"dpkg", "debconf", "perl", "perl-base", "install-info"})
DEPENDENCY_KINDS = frozenset({"Depends:", "PreDepends:"})


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def _dependency_graph(roots: list[str]) -> dict[str, list[str]]:
    """Package -> required dependencies (first alternative of each choice; for a
    virtual package, its providers)."""
    out = _run(
        "apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
        "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *roots,
    )  # fmt: skip
    graph: dict[str, list[str]] = {}
    current: list[str] = []
    in_choice = False  # inside "|Depends: a" / "Depends: b": only a counts
    for line in out.splitlines():
        if not line.startswith(" "):
            current = graph.setdefault(line.strip(), [])
            in_choice = False
            continue
        words = line.strip().lstrip("|").split()
        if len(words) == 1:  # a provider listed under a virtual package
            current.append(words[0])
            continue
        if words[0] not in DEPENDENCY_KINDS:
            continue
        if not in_choice:
            current.append(words[1])
        in_choice = line.strip().startswith("|")
    return graph


def closure(roots: list[str]) -> list[str]:
    graph = _dependency_graph(roots)
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name.split(":")[0] in EXCLUDED:
            continue
        seen.add(name)
        todo.extend(graph.get(name, [])[:1] if name.startswith("<") else graph.get(name, []))
    return sorted(name.split(":")[0] for name in seen if not name.startswith("<"))


def pinned(packages: list[str]) -> list[str]:
    """``name=version file sha256`` for each package, as apt would download it."""
    out = _run("apt-get", "download", "--print-uris", *packages)
    lines = []
    for line in out.splitlines():
        _uri, filename, _size, checksum = line.split()
        name, version = filename.split("_")[:2]
        lines.append(f"{name}={unquote(version)} {filename} {checksum.removeprefix('SHA256:')}")
    found = {line.split("=", 1)[0] for line in lines}
    if missing := set(packages) - found:
        raise SystemExit(f"debian_closure: no download for: {' '.join(sorted(missing))}")
    return sorted(lines)


if __name__ == "__main__":
    for entry in pinned(closure(sys.argv[1:] or ["python3", "python3-minimal"])):
        print(entry)
