"""``.state`` is private (0700, files 0600), and every secrets.env value is masked at once.

The helpers of ``private_files`` on their own, then a Controller over a fake
runtime: it makes a ``.state`` left readable by an older version private
when it takes its lock, and a value of secrets.env quoted by the error of a
fleet file that never loaded is masked in the status file.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from mcp_fleet.endpoints import EndpointTable
from mcp_fleet.errors import Diagnostic, FleetConfigError
from mcp_fleet.logsetup import redactor
from mcp_fleet.model import DesiredState, FleetFiles, RuntimeKind
from mcp_fleet.private_files import make_private, open_private, private_dir, write_private
from mcp_fleet.reconcile.loop import Controller
from mcp_fleet.runtimes.fake import FakeRuntime
from reconcile_builders import FLEET, desired, spec


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def files_at(home: Path) -> FleetFiles:
    return FleetFiles(home=home, catalogs=(), registry=home / "registry.yaml",
                      config=home / "config.yaml", tools=home / "tools.yaml",
                      secrets=home / "secrets.env")  # fmt: skip


def controller(home: Path, load: DesiredState | Exception) -> Controller:
    def loader(files: FleetFiles) -> DesiredState:
        if isinstance(load, Exception):
            raise load
        return load

    fake = FakeRuntime(fleet=FLEET)
    return Controller(
        files_at(home), {RuntimeKind.PROCESS: fake}, EndpointTable(), loader=loader, watch=False
    )


def test_private_dir_and_files_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        made = private_dir(tmp_path / "a" / "b")
        write_private(made / "pid.json", "{}")
        with open_private(made / "x.log") as out:
            out.write(b"one\n")
    finally:
        os.umask(old)
    assert mode(made) == 0o700
    assert mode(made / "pid.json") == 0o600 and mode(made / "x.log") == 0o600
    loose = made / "loose.log"
    loose.write_text("old\n")
    loose.chmod(0o644)
    with open_private(loose) as out:
        out.write(b"new\n")
    assert mode(loose) == 0o600 and loose.read_text() == "old\nnew\n", "appended, made private"
    write_private(loose, b"replaced\n")
    assert loose.read_text() == "replaced\n"


def test_make_private_fixes_a_loose_tree_and_follows_no_link(tmp_path: Path) -> None:
    state = tmp_path / ".state"
    (state / "logs").mkdir(parents=True)
    (state / "cache" / "deep").mkdir(parents=True)
    for path in (state / "status.json", state / "logs" / "a.log", state / "cache" / "deep" / "x"):
        path.write_text("x")
        path.chmod(0o644)
    for directory in (state, state / "logs", state / "cache", state / "cache" / "deep"):
        directory.chmod(0o755)
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours")
    outside.chmod(0o644)
    (state / "link").symlink_to(outside)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(state / "s.sock"))
        sock_mode = mode(state / "s.sock")
        make_private(state)
        assert mode(state / "s.sock") == sock_mode, "sockets are left alone"
    assert mode(outside) == 0o644, "a symbolic link is not followed"
    for top, _, files in os.walk(state):
        assert mode(Path(top)) == 0o700, top
        for name in files:
            path = Path(top, name)
            if path.is_file() and not path.is_symlink():
                assert mode(path) == 0o600, path


async def test_the_controller_makes_state_private_when_it_takes_its_lock(tmp_path: Path) -> None:
    state = tmp_path / ".state"
    (state / "logs").mkdir(parents=True)
    (state / "logs" / "old.log").write_text("left by an older version\n")
    (state / "logs" / "old.log").chmod(0o644)
    state.chmod(0o755)
    ctl = controller(tmp_path, desired(spec("a")))
    try:
        await ctl.reconcile_once()
        assert mode(state) == 0o700
        files = sorted(p for p in state.rglob("*") if p.is_file())
        assert {p.name for p in files} >= {"controller.lock", "status.json", "old.log"}
        assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    finally:
        await ctl.aclose()


async def test_a_secrets_env_value_is_masked_before_any_load_succeeds(tmp_path: Path) -> None:
    """No server uses the value and the files never loaded: it is masked all the same."""
    value = "pasted-into-registry-7d1c9e"
    (tmp_path / "secrets.env").write_text(f"unused.token={value}\n")
    (tmp_path / "secrets.env").chmod(0o600)
    broken = FleetConfigError(
        Diagnostic(f'expected true or false, got "{value}"', file=tmp_path / "registry.yaml",
                   line=2, field="registry.vault.enabled", server="vault")
    )  # fmt: skip
    ctl = controller(tmp_path, broken)
    try:
        snapshot = await ctl.reconcile_once()
        assert snapshot.file_errors, "the files must not load"
        text = (tmp_path / ".state" / "status.json").read_text()
        assert value not in text and 'got \\"***\\"' in text, text
    finally:
        await ctl.aclose()
        redactor().set_secrets([])
