"""``mcp-fleet catalog validate|show|import``: output, JSON and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from cli_support import Invoke


def test_validate_ok(home: Path, cli: Invoke) -> None:
    result = cli("catalog", "validate", "--dir", str(home))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: 3 catalog entries in 1 file(s), 3 server(s) enabled")


def test_validate_broken_file_is_exit_2_with_the_one_line_error(home: Path, cli: Invoke) -> None:
    (home / "registry.yaml").write_text(
        "registry:\n  time:\n    catalog: example\n    enabled: true\n"
        '  notes:\n    catalog: example\n    enabled: "yes please"\n'
    )
    result = cli("catalog", "validate", "--dir", str(home))
    assert result.exit_code == 2
    assert result.stderr == (
        'error: registry.yaml:7: registry.notes.enabled: expected true/false, got "yes please"\n'
    )
    assert result.stdout == ""


def test_validate_unusable_server_is_exit_2(home: Path, cli: Invoke) -> None:
    with (home / "registry.yaml").open("a") as fh:
        fh.write("  ghost:\n    enabled: true\n")
    result = cli("catalog", "validate", "--dir", str(home))
    assert result.exit_code == 2
    assert "error: registry.yaml:14: registry.ghost: server 'ghost' is not in any catalog" in (
        result.stderr
    )


def test_validate_with_docker_flags(tmp_path: Path, cli: Invoke) -> None:
    catalog = tmp_path / "custom.yaml"
    catalog.write_text("registry:\n  s: {image: i}\n")
    registry = tmp_path / "reg.yaml"
    registry.write_text("registry:\n  s: {}\n")
    result = cli(
        "catalog", "validate", f"--catalog={catalog}", f"--registry={registry}",
        "--dir", str(tmp_path / "empty"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1 catalog entries in 1 file(s), 1 server(s) enabled" in result.stdout


def test_show_table_and_json(home: Path, cli: Invoke) -> None:
    table = cli("catalog", "show", "--dir", str(home))
    assert table.exit_code == 0
    for text in ("calc", "notes", "time", "Calculator", "yes"):
        assert text in table.stdout
    result = cli("catalog", "show", "--json", "--dir", str(home))
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == ["calc", "notes", "time"]
    assert set(rows[0]) == {
        "name", "title", "description", "type", "image", "process", "remote", "secrets",
        "enabled", "source", "line",
    }  # fmt: skip
    assert rows[0]["enabled"] is True and rows[0]["process"][1:] == [
        "-m",
        "mcp_fleet.examples.servers.calc",
    ]
    # stable: the same bytes twice
    assert cli("catalog", "show", "--json", "--dir", str(home)).stdout == result.stdout


def test_show_of_a_broken_catalog_is_exit_2(home: Path, cli: Invoke) -> None:
    (home / "catalogs" / "bad.yaml").write_text("registry:\n  x: {image: i, cpus: many}\n")
    result = cli("catalog", "show", "--dir", str(home))
    assert result.exit_code == 2
    assert 'bad.yaml:2: registry.x.cpus: expected a number, got "many"' in result.stderr


def test_import_reports_and_refuses_changes(home: Path, tmp_path: Path, cli: Invoke) -> None:
    incoming = tmp_path / "example.yaml"
    text = (home / "catalogs" / "example.yaml").read_text()
    incoming.write_text(
        text.replace("Calculator", "Calculator 2") + "  extra:\n    image: extra:1\n"
    )
    before = (home / "catalogs" / "example.yaml").read_text()
    result = cli("catalog", "import", str(incoming), "--dir", str(home))
    assert result.exit_code == 2
    assert "added:     extra" in result.stdout
    assert "changed:   calc" in result.stdout
    assert "unchanged: time, notes" in result.stdout
    assert "Re-run with --overwrite" in result.stderr
    assert (home / "catalogs" / "example.yaml").read_text() == before

    result = cli("catalog", "import", str(incoming), "--dir", str(home), "--overwrite", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["written"] and report["added"] == ["extra"] and report["changed"] == ["calc"]
    assert Path(report["backup"]).read_text() == before


def test_import_into_named_catalog(home: Path, tmp_path: Path, cli: Invoke) -> None:
    incoming = tmp_path / "whatever.yaml"
    incoming.write_text('version: "2"\nregistry:\n  fw: {image: fw:1}\n')
    result = cli("catalog", "import", str(incoming), "--name", "custom", "--dir", str(home))
    assert result.exit_code == 0, result.output
    assert (home / "catalogs" / "custom.yaml").is_file()
    assert "fw" in cli("catalog", "show", "--dir", str(home)).stdout


def test_import_invalid_name_and_missing_file(home: Path, tmp_path: Path, cli: Invoke) -> None:
    incoming = tmp_path / "x.yaml"
    incoming.write_text("registry: {}\n")
    assert (
        cli("catalog", "import", str(incoming), "--name", "../up", "--dir", str(home)).exit_code
        == 2
    )
    result = cli("catalog", "import", str(tmp_path / "gone.yaml"), "--dir", str(home))
    assert result.exit_code == 2 and "gone.yaml: file not found" in result.stderr
