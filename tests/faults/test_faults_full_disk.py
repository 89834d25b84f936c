"""A full or read-only fleet directory: every CLI edit fails cleanly and leaves the old file.

Why a real tmpfs rather than a mocked ``os.replace``: the failure must come
from the kernel where it really comes from. On a full file system creating
the temporary file still works (tmpfs needs no block for an empty file) and
the ``write`` of the new content is what fails with ENOSPC, after a
temporary file exists; on a read-only one the temporary file cannot even be
created (EROFS). A mock raising at one chosen call would test neither the
cleanup of a half-written temporary file nor the error a user really sees.
We run as root, so ``chmod 500`` would not stop a write; a tmpfs of a few
pages, filled up and then remounted read-only, is the honest equivalent.

Each edit goes through the real typer application in-process (``CliRunner``:
the same code path as the command line, without a second of interpreter
start per command): ``server enable`` / ``server disable`` (registry.yaml),
``secret set`` / ``secret rm`` (secrets.env) and ``catalog import``
(catalogs/NAME.yaml with its backup). Each must exit 1 with one clear line
naming the file and the cause, and leave every file byte-for-byte as it
was, with no temporary file behind. Once space is back the same commands
succeed, so the failures were the file system's and nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp_fleet.cli.main import app
from typer.testing import CliRunner, Result

#: Size of the test file system: room for the fleet files and little else.
FS_SIZE = "256k"
SECRET_VALUE = "fullDisk-s3cr3t-value"

CATALOG = """version: "2"
registry:
  alpha:
    image: example/alpha
    secrets:
      - name: alpha.token
        env: ALPHA_TOKEN
  beta:
    image: example/beta
"""
IMPORTED = """version: "2"
registry:
  gamma:
    image: example/gamma
"""
REGISTRY = "# hand-written, comments kept\nregistry:\n  alpha:\n    enabled: true\n"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of ``FS_SIZE`` mounted for this test only (unmounted whatever happens)."""
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE},mode=0755", "tmpfs", str(mount_point)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        reason = f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(fs: Path) -> Path:
    """Write a filler file until the file system is full; returns it."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (65536, 4096, 1):  # big steps, then the last bytes of the last page
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    probe = fs / "probe"
    with pytest.raises(OSError) as exc:
        probe.write_bytes(b"x" * 4096)
    probe.unlink(missing_ok=True)
    assert exc.value.errno == errno.ENOSPC
    return filler


def snapshot(home: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``home``: digest and mode (so any change, even a chmod, shows)."""
    out = {}
    for path in sorted(home.rglob("*")):
        if path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[str(path.relative_to(home))] = (digest, path.stat().st_mode & 0o7777)
    return out


def make_fleet(fs: Path) -> tuple[Path, Path]:
    home = fs / "fleet"
    (home / "catalogs").mkdir(parents=True)
    (home / "catalogs" / "test.yaml").write_text(CATALOG)
    (home / "registry.yaml").write_text(REGISTRY)
    secrets = home / "secrets.env"
    secrets.write_text(f"# tokens\nalpha.token={SECRET_VALUE}\n")
    secrets.chmod(0o600)
    source = fs / "import.yaml"
    source.write_text(IMPORTED)
    return home, source


def edits(home: Path, source: Path) -> dict[str, list[str]]:
    """Every CLI command that rewrites a fleet file, and the file it rewrites."""
    d = ["--dir", str(home)]
    return {
        "registry.yaml (enable)": ["server", "enable", "beta", *d],
        "registry.yaml (disable)": ["server", "disable", "alpha", *d],
        "secrets.env (set)": ["secret", "set", f"beta.token={SECRET_VALUE}-new", *d],
        "secrets.env (rm)": ["secret", "rm", "alpha.token", *d],
        "catalogs/test.yaml (import)": ["catalog", "import", str(source), "--name", "test", *d],
    }


def run(args: list[str]) -> Result:
    return CliRunner().invoke(app, args, catch_exceptions=False)


def assert_refused(result: Result, what: str, cause: str) -> None:
    assert result.exit_code == 1, f"{what}: exit {result.exit_code}\n{result.output}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{what}: {result.stderr!r}"
    target = what.split()[0].split("/")[-1]
    assert target in lines[0] and cause in lines[0], f"{what}: {lines[0]}"
    assert "Traceback" not in result.output
    assert SECRET_VALUE not in result.output


@pytest.mark.parametrize("how", ["full", "read-only"])
def test_edits_on_a_full_or_read_only_fleet_dir_leave_every_file_intact(
    small_fs: Path, how: str
) -> None:
    home, source = make_fleet(small_fs)
    filler = fill(small_fs)
    if how == "read-only":
        filler.unlink()  # space is not the problem: the mount is
        subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    cause = "No space left on device" if how == "full" else "Read-only file system"
    before = snapshot(home)

    for what, args in edits(home, source).items():
        result = run(args)
        assert_refused(result, what, cause)
        assert snapshot(home) == before, f"{what} changed the fleet directory"

    if how == "read-only":
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    else:
        filler.unlink()
    for what, args in edits(home, source).items():
        result = run(args)
        assert result.exit_code == 0, f"{what} with space back: {result.output}"
    after = snapshot(home)
    assert {p for p in after if p.endswith(".tmp")} == set(), "temporary files left behind"
    assert after["registry.yaml"] != before["registry.yaml"]
    assert after["secrets.env"][1] == 0o600
    assert "gamma" in (home / "catalogs" / "test.yaml").read_text()
    assert (home / "catalogs" / "test.yaml.bak").read_text() == CATALOG
    assert (home / "registry.yaml").read_text().startswith("# hand-written, comments kept")
