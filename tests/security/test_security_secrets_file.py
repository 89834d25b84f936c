"""secrets.env: refused when others may read it, as documented; never quoted when broken.

The documented rule (``mcp-fleet secret --help``, config/secrets.py): a
secrets file readable or writable by group or others is refused; the
servers that need its secrets fail with a message naming the file and
``chmod 600``, the others run, ``secret ls`` warns, and ``secret set``
writes it back with mode 600. A broken secrets file (a line that is not
``NAME=value``, a bad quote) is reported with its file and line but never
with the value; a value holding a NUL byte (which no environment
variable can carry) fails the servers that use it, naming the secret only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from faults_support import ECHO, PY, kill_all_with
from mcp_fleet.cli.main import app
from mcp_fleet.config import load_fleet, resolve_files
from mcp_fleet.errors import FleetConfigError
from typer.testing import CliRunner, Result

pytestmark = pytest.mark.timeout(60)

VALUE = "pErMs-s3cr3t-0123456789abcdef"
MARKER = "mcpf-secrets-file-test"
CATALOG = f"""version: "2"
registry:
  needs:
    secrets:
      - name: needs.token
        env: TOKEN
    process:
      command: [{PY}, {ECHO}, {MARKER}]
  free:
    process:
      command: [{PY}, {ECHO}, {MARKER}]
"""


def fleet(tmp_path: Path, *, mode: int, secrets: str = f"needs.token={VALUE}\n") -> Path:
    home = tmp_path / "fleet"
    (home / "catalogs").mkdir(parents=True)
    (home / "catalogs" / "test.yaml").write_text(CATALOG)
    (home / "registry.yaml").write_text("registry:\n  needs: {}\n  free: {}\n")
    path = home / "secrets.env"
    path.write_text(secrets)
    path.chmod(mode)
    return home


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_a_loose_secrets_file_is_refused_for_the_servers_that_need_it(
    tmp_path: Path, mode: int
) -> None:
    home = fleet(tmp_path, mode=mode)
    state = load_fleet(resolve_files(home))
    needs, free = state.servers["needs"], state.servers["free"]
    assert not free.problems and free.secret_env == {}
    assert needs.secret_env == {}, "a refused file's values were used"
    (problem,) = needs.problems
    assert f"chmod 600 {home / 'secrets.env'}" in problem.message, problem.message
    assert f"mode {mode:03o}" in problem.message
    assert VALUE not in str(problem)


def test_controller_runs_the_others_and_names_the_fix(tmp_path: Path) -> None:
    home = fleet(tmp_path, mode=0o644)
    try:
        once = cli("controller", "--once", "--json", "--dir", str(home))
    finally:
        kill_all_with(MARKER)
    assert once.exit_code == 1, once.output  # not every enabled server is Ready
    doc = json.loads(once.stdout)
    servers = {s["name"]: s for s in doc["servers"]}
    assert servers["free"]["state"] == "Ready"
    assert servers["needs"]["state"] == "Failed"
    assert servers["needs"]["reason"] == "MissingSecret"
    assert "chmod 600" in servers["needs"]["message"]
    assert VALUE not in once.output

    listing = cli("secret", "ls", "--dir", str(home))
    assert listing.exit_code == 0
    assert f"chmod 600 {home / 'secrets.env'}" in listing.stderr.replace("\n", "")
    assert "needs.token" in listing.stdout and VALUE not in listing.output

    fixed = cli("secret", "set", "other.token=x1y2z3w4", "--dir", str(home))
    assert fixed.exit_code == 0, fixed.output
    assert "now mode 600" in fixed.stdout
    assert (home / "secrets.env").stat().st_mode & 0o777 == 0o600
    assert load_fleet(resolve_files(home)).servers["needs"].secret_env == {"TOKEN": VALUE}


def test_a_secret_holding_a_nul_fails_its_servers_without_showing_it(tmp_path: Path) -> None:
    """No environment variable can carry a NUL; Docker's refusal would quote it back."""
    home = fleet(tmp_path, mode=0o600, secrets=f"needs.token={VALUE[:9]}\x00{VALUE[9:]}\n")
    state = load_fleet(resolve_files(home))
    needs = state.servers["needs"]
    assert needs.secret_env == {} and not state.servers["free"].problems
    (problem,) = needs.problems
    assert "needs.token" in problem.message and "NUL" in problem.message, problem
    assert problem.line == 2 and problem.file == home / "registry.yaml"
    for piece in (VALUE[:9], VALUE[9:]):
        assert piece not in str(problem)


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (f"ok.name=1\n{VALUE}\n", 2),  # not NAME=value
        (f'ok.name=1\nbad.quote="{VALUE}\n', 2),  # unterminated quote
        (f"bad name={VALUE}\n", 1),
        (f"x.y='{VALUE}' trailing{VALUE}\n", 1),
    ],
)
def test_a_broken_secrets_file_names_file_and_line_never_the_value(
    tmp_path: Path, content: str, line: int
) -> None:
    home = fleet(tmp_path, mode=0o600, secrets=content)
    with pytest.raises(FleetConfigError) as caught:
        load_fleet(resolve_files(home))
    (diag,) = caught.value.diagnostics
    assert diag.file == home / "secrets.env" and diag.line == line, diag
    for piece in (VALUE, VALUE[:9], VALUE[9:]):
        assert piece not in str(caught.value)
    shown = cli("secret", "ls", "--dir", str(home))
    assert shown.exit_code == 2 and f"secrets.env:{line}" in shown.stderr
    for piece in (VALUE, VALUE[:9], VALUE[9:]):
        assert piece not in shown.output
