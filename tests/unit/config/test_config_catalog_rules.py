"""Catalog entries: every field of the format, our extensions, types, unknown keys."""

from __future__ import annotations

import pytest
from config_support import Load, WriteFleet
from mcp_fleet.errors import FleetConfigError, Severity
from mcp_fleet.model import Lifecycle, ServerType, SessionMode

FULL = """
version: "2"
registry:
  full:
    title: Full Server
    description: Uses every field.
    categories: [a, b]
    image: example/full:1.0
    command: ["--root", "{{full.root}}"]
    env:
      - name: LOG_LEVEL
        value: debug
      - name: PORT
        value: 8080
    secrets:
      - name: full.token
        env: FULL_TOKEN
        required: true
        description: API token
      - name: OPTIONAL_KEY
        env: OPTIONAL_KEY
        required: false
    volumes: ["{{full.root}}:/data"]
    user: "1000:1000"
    disableNetwork: true
    allowHosts: [api.example.com:443]
    longLived: true
    prefix: fu
    tools:
      - name: search
        description: Search things
      - fetch
    config:
      - name: full
        type: object
        properties: {root: {type: string}}
    process:
      command: [python3, -m, full_server, "--root={{full.root}}"]
      env: {MODE: "{{full.mode|or:fast}}"}
      cwd: /tmp
    lifecycle: on-demand
    idleTimeout: 1h30m
    sessions: per-client
    cpus: 0.5
    memory: 256m
    readOnly: false
    timeout: 45s
    transport: streamable-http
    port: 9000
"""


def test_every_field_is_parsed(write_fleet: WriteFleet, load: Load) -> None:
    home = write_fleet(
        catalogs={"c": FULL},
        registry="registry:\n  full: {}\n",
        config="full:\n  root: /srv\n",
        secrets="full.token=t0k3n\n",
    )
    state = load(home)
    e = state.catalog["full"]
    assert e.title == "Full Server"
    assert e.description == "Uses every field."
    assert e.categories == ("a", "b")
    assert e.type is ServerType.SERVER
    assert e.image == "example/full:1.0"
    assert e.command == ("--root", "{{full.root}}")
    assert [(v.name, v.value) for v in e.env] == [("LOG_LEVEL", "debug"), ("PORT", "8080")]
    assert [(s.name, s.env, s.required) for s in e.secrets] == [
        ("full.token", "FULL_TOKEN", True),
        ("OPTIONAL_KEY", "OPTIONAL_KEY", False),
    ]
    assert e.secrets[0].description == "API token"
    assert e.volumes == ("{{full.root}}:/data",)
    assert e.user == "1000:1000"
    assert e.disable_network is True
    assert e.allow_hosts == ("api.example.com:443",)
    assert e.long_lived is True
    assert e.prefix == "fu"
    assert [dict(t) for t in e.tools] == [
        {"name": "search", "description": "Search things"},
        {"name": "fetch"},
    ]
    assert e.config_schema is not None and e.config_schema["name"] == "full"
    assert e.process is not None and e.process.cwd == "/tmp"
    assert e.lifecycle is Lifecycle.ON_DEMAND
    assert e.idle_timeout_seconds == 5400.0
    assert e.sessions is SessionMode.PER_CLIENT
    assert e.cpus == 0.5 and e.memory == "256m" and e.read_only is False
    assert e.call_timeout_seconds == 45.0
    assert e.transport == "streamable-http" and e.port == 9000
    assert e.source == home / "catalogs" / "c.yaml" and e.source_line == 3

    # resolved: templates filled everywhere, secrets into secret_env only
    spec = state.servers["full"]
    assert spec.usable, spec.problems
    assert spec.entry is not None and spec.entry.command == ("--root", "/srv")
    assert spec.entry.volumes == ("/srv:/data",)
    assert spec.entry.process is not None
    assert spec.entry.process.command[-1] == "--root=/srv"
    assert dict(spec.entry.process.env) == {"MODE": "fast"}
    assert dict(spec.env) == {"LOG_LEVEL": "debug", "PORT": "8080"}
    assert dict(spec.secret_env) == {"FULL_TOKEN": "t0k3n"}
    # longLived: true and lifecycle: on-demand disagree: the explicit lifecycle wins, with a warning
    assert [str(d) for d in state.diagnostics] == [
        "c.yaml:40: registry.full.lifecycle: longLived: true conflicts with lifecycle: "
        "on-demand; using on-demand"
    ]


def test_remote_server(write_fleet: WriteFleet, load: Load) -> None:
    home = write_fleet(
        catalogs={
            "c": """
            registry:
              far:
                type: remote
                remote:
                  url: https://mcp.example.com/{{far.tenant}}
                  transport_type: sse
                  headers: {X-Team: "{{far.tenant}}"}
              legacy:
                type: remote
                sseEndpoint: https://old.example.com/sse
            """
        },
        registry="registry: {far: {config: {tenant: acme}}, legacy: {}}\n",
    )
    state = load(home)
    far = state.servers["far"]
    assert far.usable
    assert far.entry is not None and far.entry.remote is not None
    assert far.entry.type is ServerType.REMOTE
    assert far.entry.remote.url == "https://mcp.example.com/acme"
    assert far.entry.remote.transport_type == "sse"
    assert dict(far.entry.remote.headers) == {"X-Team": "acme"}
    legacy = state.servers["legacy"].entry
    assert legacy is not None and legacy.remote is not None
    assert legacy.remote.transport_type == "sse"


def test_name_is_the_title_when_no_title(write_fleet: WriteFleet, load: Load) -> None:
    home = write_fleet(catalogs={"c": "registry:\n  x:\n    name: Nice Name\n    image: i\n"})
    assert load(home).catalog["x"].title == "Nice Name"


def test_env_as_a_mapping_is_accepted(write_fleet: WriteFleet, load: Load) -> None:
    home = write_fleet(catalogs={"c": "registry:\n  x:\n    image: i\n    env: {A: '1', B: 2}\n"})
    env = load(home).catalog["x"].env
    assert [(v.name, v.value) for v in env] == [("A", "1"), ("B", "2")]


def test_long_lived_means_always(write_fleet: WriteFleet, load: Load) -> None:
    home = write_fleet(catalogs={"c": "registry:\n  x: {image: i, longLived: true}\n"})
    assert load(home).catalog["x"].lifecycle is Lifecycle.ALWAYS


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("250ms", 0.25), ("90", 90.0), ("1m30s", 90.0)],
)
def test_durations(write_fleet: WriteFleet, load: Load, text: str, seconds: float) -> None:
    value = text if not text.isdigit() else int(text)
    home = write_fleet(catalogs={"c": f"registry:\n  x: {{image: i, timeout: {value}}}\n"})
    assert load(home).catalog["x"].call_timeout_seconds == seconds


def test_unknown_keys_warn_with_line_and_are_kept(
    write_fleet: WriteFleet, load: Load, caplog: pytest.LogCaptureFixture
) -> None:
    home = write_fleet(
        catalogs={
            "c": """
            version: "2"
            shiny: true
            registry:
              x:
                image: i
                futureField: {a: 1}
                icon: https://example.com/icon.png
                secrets:
                  - {name: K, env: K, hint: later}
            """
        }
    )
    with caplog.at_level("WARNING", logger="mcp_fleet.config"):
        state = load(home)
    texts = [str(d) for d in state.diagnostics]
    assert "c.yaml:2: shiny: unknown key, ignored" in texts
    assert "c.yaml:6: registry.x.futureField: unknown key, ignored" in texts
    assert "c.yaml:9: registry.x.secrets[0].hint: unknown key, ignored" in texts
    assert not any("icon" in t for t in texts)  # Docker's informational keys are silent
    assert all(d.severity is Severity.WARNING for d in state.diagnostics)
    assert dict(state.catalog["x"].extra) == {
        "futureField": {"a": 1},
        "icon": "https://example.com/icon.png",
    }
    assert "registry.x.futureField: unknown key" in caplog.text


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "disableNetwork",
            '"no way"',
            'registry.x.disableNetwork: expected true/false, got "no way"',
        ),
        ("cpus", "lots", 'registry.x.cpus: expected a number, got "lots"'),
        ("cpus", "0", "registry.x.cpus: expected a number greater than 0, got 0"),
        ("port", "http", 'registry.x.port: expected an integer, got "http"'),
        ("port", "70000", "registry.x.port: expected a number of at most 65535, got 70000"),
        ("command", "run it", 'registry.x.command: expected a list, got "run it"'),
        ("secrets", "{a: 1}", "registry.x.secrets: expected a list, got a mapping"),
        (
            "lifecycle",
            "sometimes",
            "registry.x.lifecycle: expected one of 'always', 'on-demand', got \"sometimes\"",
        ),
        (
            "sessions",
            "many",
            "registry.x.sessions: expected one of 'shared', 'per-client', got \"many\"",
        ),
        (
            "transport",
            "pigeon",
            "registry.x.transport: expected one of 'stdio', "
            "'streamable-http', 'sse', got \"pigeon\"",
        ),
        (
            "idleTimeout",
            "soon",
            'registry.x.idleTimeout: expected a duration like 30s, 5m or 1h, got "soon"',
        ),
        ("process", "{cwd: /}", "registry.x.process.command: required field is missing"),
        (
            "env",
            "[{name: 1BAD, value: x}]",
            "registry.x.env[0].name: expected an environment "
            'variable name (letters, digits, _), got "1BAD"',
        ),
    ],
)
def test_type_errors_fail_the_file_with_line_and_field(
    write_fleet: WriteFleet, load: Load, field: str, value: str, message: str
) -> None:
    home = write_fleet(
        catalogs={"custom": f"version: '2'\nregistry:\n  x:\n    image: i\n    {field}: {value}\n"}
    )
    with pytest.raises(FleetConfigError) as info:
        load(home)
    assert str(info.value) == f"custom.yaml:5: {message}"


def test_every_error_of_every_file_is_reported_at_once(write_fleet: WriteFleet, load: Load) -> None:
    home = write_fleet(
        catalogs={
            "a": "registry:\n  x: {image: i, cpus: x}\n  y: {image: i, port: p}\n",
            "b": "registry: [1, 2]\n",
        },
        registry="registry:\n  x: {enabled: maybe}\n",
    )
    with pytest.raises(FleetConfigError) as info:
        load(home)
    lines = str(info.value).splitlines()
    assert lines == [
        'a.yaml:2: registry.x.cpus: expected a number, got "x"',
        'a.yaml:3: registry.y.port: expected an integer, got "p"',
        "b.yaml:1: registry: expected a mapping, got a list",
        'registry.yaml:2: registry.x.enabled: expected true/false, got "maybe"',
    ]


def test_wrong_top_level_shape(write_fleet: WriteFleet, load: Load) -> None:
    home = write_fleet(catalogs={"c": "- just\n- a list\n"})
    with pytest.raises(FleetConfigError, match=r'^c\.yaml:1: expected a mapping with version: "2"'):
        load(home)


def test_entry_that_is_not_a_mapping(write_fleet: WriteFleet, load: Load) -> None:
    home = write_fleet(catalogs={"c": "registry:\n  x: just a string\n"})
    with pytest.raises(FleetConfigError) as info:
        load(home)
    assert str(info.value) == 'c.yaml:2: registry.x: expected a mapping, got "just a string"'


def test_unsupported_type_only_affects_that_server(write_fleet: WriteFleet, load: Load) -> None:
    home = write_fleet(
        catalogs={"c": "registry:\n  p: {type: poci, image: i}\n  ok: {image: i}\n"},
        registry="registry: {p: {}, ok: {}}\n",
    )
    state = load(home)
    assert state.servers["ok"].usable
    assert not state.servers["p"].usable
    assert "catalog type 'poci' is not supported" in str(state.servers["p"].problems[0])


def test_server_with_nothing_to_run(write_fleet: WriteFleet, load: Load) -> None:
    home = write_fleet(
        catalogs={"c": "registry:\n  empty: {description: nothing}\n  r: {type: remote}\n"},
        registry="registry: {empty: {}, r: {}}\n",
    )
    state = load(home)
    assert "neither image: nor process:" in str(state.servers["empty"].problems[0])
    assert "needs remote.url" in str(state.servers["r"].problems[0])


def test_unknown_version_warns(write_fleet: WriteFleet, load: Load) -> None:
    home = write_fleet(catalogs={"c": "version: 3\nregistry: {}\n"})
    assert [str(d) for d in load(home).diagnostics] == [
        'c.yaml:1: version: unknown catalog version "3", read as "2"'
    ]
