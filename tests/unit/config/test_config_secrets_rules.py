"""secrets.env: format, permissions, per-server problems, edits; values never leak."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest
from config_support import Load, WriteFleet
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp_fleet.config.secrets import (
    load_secrets,
    parse_secrets,
    remove_secret,
    secret_names,
    set_secret,
)
from mcp_fleet.errors import FleetConfigError

P = Path("/x/secrets.env")
SECRET = "s3cr3t-VALUE-never-shown"

CATALOG = """
registry:
  needs:
    image: n
    secrets:
      - {name: API_KEY, env: SERVICE_API_KEY}
      - {name: OPTIONAL, env: OPTIONAL, required: false}
  plain:
    image: p
"""


def test_format() -> None:
    text = (
        "# comment\n"
        "\n"
        "A=plain value\n"
        "export B=exported\n"
        "C='single # not a comment'\n"
        'D="line1\\nline2 \\"q\\" \\\\"   # trailing comment\n'
        "E=ends==\n"
        "  F = spaced  \n"
        "dotted.name=x\n"
        "A=later wins\n"
    )
    assert parse_secrets(text, P) == {
        "A": "later wins",
        "B": "exported",
        "C": "single # not a comment",
        "D": 'line1\nline2 "q" \\',
        "E": "ends==",
        "F": "spaced",
        "dotted.name": "x",
    }


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (f"no equals sign {SECRET}", "secrets.env:2: expected NAME=value (line not shown)"),
        (
            f"9BAD={SECRET}",
            "secrets.env:2: expected a secret name of letters, digits and _ . - before '='",
        ),
        (f'Q="{SECRET}', "secrets.env:2: Q: unterminated quoted value"),
        (f'Q="{SECRET}" tail', "secrets.env:2: Q: unexpected text after the closing quote"),
    ],
)
def test_errors_name_the_line_but_never_the_value(line: str, message: str) -> None:
    with pytest.raises(FleetConfigError) as info:
        parse_secrets(f"OK=1\n{line}\n", P)
    assert str(info.value) == message
    assert SECRET not in str(info.value)


def test_missing_required_secret_marks_only_that_server(
    write_fleet: WriteFleet, load: Load, caplog: pytest.LogCaptureFixture
) -> None:
    home = write_fleet(
        catalogs={"c": CATALOG},
        registry="registry: {needs: {}, plain: {}}\n",
        secrets=f"OTHER={SECRET}\n",
    )
    with caplog.at_level(logging.DEBUG):
        state = load(home)
    assert state.servers["plain"].usable
    needs = state.servers["needs"]
    assert not needs.usable
    assert [str(p) for p in needs.problems] == [
        f"registry.yaml:1: registry.needs: required secret API_KEY is not set in "
        f"{home / 'secrets.env'} (set with: mcp-fleet secret set NAME)"
    ]
    assert SECRET not in caplog.text


def test_secret_values_appear_nowhere_but_secret_env(
    write_fleet: WriteFleet, load: Load, caplog: pytest.LogCaptureFixture
) -> None:
    home = write_fleet(
        catalogs={"c": CATALOG},
        registry="registry: {needs: {}, plain: {}}\n",
        secrets=f"API_KEY={SECRET}\nOPTIONAL={SECRET}2\n",
    )
    with caplog.at_level(logging.DEBUG):
        state = load(home)
    spec = state.servers["needs"]
    assert spec.usable
    assert dict(spec.secret_env) == {"SERVICE_API_KEY": SECRET, "OPTIONAL": SECRET + "2"}
    assert dict(spec.env) == {}
    visible = [
        repr(spec),
        repr(state),
        json.dumps(spec.canonical()),
        spec.config_hash(),
        caplog.text,
        *(str(d) for d in state.diagnostics),
    ]
    assert not any(SECRET in text for text in visible)


def test_rotated_secret_changes_the_config_hash(write_fleet: WriteFleet, load: Load) -> None:
    home = write_fleet(
        catalogs={"c": CATALOG}, registry="registry: {needs: {}}\n", secrets="API_KEY=1\n"
    )
    before = load(home).servers["needs"].config_hash()
    set_secret(home / "secrets.env", "API_KEY", "2")
    assert load(home).servers["needs"].config_hash() != before


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_loose_permissions_refuse_the_file(write_fleet: WriteFleet, load: Load, mode: int) -> None:
    home = write_fleet(
        catalogs={"c": CATALOG},
        registry="registry: {needs: {}, plain: {}}\n",
        secrets=f"API_KEY={SECRET}\n",
        secrets_mode=mode,
    )
    state = load(home)
    path = home / "secrets.env"
    assert state.servers["plain"].usable
    needs = state.servers["needs"]
    assert dict(needs.secret_env) == {}
    assert [str(p) for p in needs.problems] == [
        f"registry.yaml:1: registry.needs: needs secrets API_KEY, OPTIONAL, but {path} is "
        f"refused: readable by group or others (mode {mode:03o}); run: chmod 600 {path}"
    ]
    assert (
        f"secrets.env: readable by group or others (mode {mode:03o}): its secrets are "
        f"refused until you run: chmod 600 {path}" in [str(d) for d in state.diagnostics]
    )


def test_missing_secrets_file_is_no_secrets(tmp_path: Path) -> None:
    loaded = load_secrets(tmp_path / "none.env")
    assert not loaded.exists and loaded.values == {}


def test_set_and_rm_keep_other_lines_and_mode_600(tmp_path: Path) -> None:
    path = tmp_path / "secrets.env"
    path.write_text("# keep me\nA=1\nB=2\nA=dup\n")
    path.chmod(0o644)
    assert set_secret(path, "A", "new value") is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "# keep me\nB=2\nA=new value\n"
    assert set_secret(path, "C", 'multi\nline "quoted"') is False
    assert load_secrets(path).values == {"A": "new value", "B": "2", "C": 'multi\nline "quoted"'}
    assert secret_names(path) == ["A", "B", "C"]
    assert remove_secret(path, "B") is True
    assert remove_secret(path, "B") is False
    assert path.read_text().startswith("# keep me\nA=new value\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_new_secrets_file_is_created_600(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "secrets.env"
    set_secret(path, "K", "v")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "K=v\n"


def test_invalid_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FleetConfigError, match="invalid secret name"):
        set_secret(tmp_path / "s.env", "has space", "v")


@settings(max_examples=60, deadline=None)
@given(value=st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40))
def test_any_value_round_trips(tmp_path_factory: pytest.TempPathFactory, value: str) -> None:
    path = tmp_path_factory.mktemp("rt") / "secrets.env"
    set_secret(path, "K", value)
    set_secret(path, "OTHER", "x")
    assert load_secrets(path).values == {"K": value, "OTHER": "x"}
