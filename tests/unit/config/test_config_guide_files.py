"""The Docker MCP Gateway guide's files load unchanged (the snippets copied verbatim)."""

from __future__ import annotations

import shutil
from pathlib import Path

from config_support import Load, WriteFleet
from mcp_fleet.config import load_fleet, resolve_files

REPO = Path(__file__).resolve().parents[3]

# The guide's first catalog snippet, as printed.
GUIDE_CATALOG = """
version: "2"
registry:
  paloalto-firewall:
    name: Palo Alto Firewall
    description: Read and write access to a PAN-OS firewall via the XML API.
    categories: [security, network]
    image: paloalto-mcp-server:latest
    secrets:
      - name: PANOS_HOST
        env: PANOS_HOST
        required: true
        description: Hostname or IP of the firewall management interface
      - name: PANOS_API_KEY
        env: PANOS_API_KEY
        required: true
        description: PAN-OS API key
"""

# The guide's "multiple servers in one catalog" snippet, `secrets: [...]` elisions included.
GUIDE_MULTI = """
version: "2"
registry:
  paloalto-firewall:
    name: Palo Alto Firewall
    image: paloalto-mcp-server:latest
    secrets: [...]
  cisco-asa:
    name: Cisco ASA
    image: cisco-asa-mcp-server:latest
    secrets: [...]
  internal-ticketing:
    name: Internal Ticketing
    image: ghcr.io/acme/ticketing-mcp:1.4.0
    secrets: [...]
"""

GUIDE_REGISTRY = """
registry:
  paloalto-firewall:
    catalog: custom
    enabled: true
  cisco-asa:
    catalog: custom
    enabled: true
  internal-ticketing:
    catalog: custom
    enabled: false # staged but turned off
"""

# The guide's secrets.env for Docker Engine.
GUIDE_SECRETS = """
PANOS_HOST=firewall.example.com
PANOS_API_KEY=LUFRPT1xxxxxxxxxxxxxxxxxxxxxxxxxx==
PANOS_VERIFY_SSL=yes
PANOS_VSYS=vsys1
PANOS_ENABLE_WRITE=yes
"""


def test_first_catalog_snippet_and_secrets(write_fleet: WriteFleet, load: Load) -> None:
    home = write_fleet(
        catalogs={"custom": GUIDE_CATALOG},
        registry="registry:\n  paloalto-firewall:\n    catalog: custom\n    enabled: true\n",
        secrets=GUIDE_SECRETS,
    )
    state = load(home)
    assert state.diagnostics == ()
    fw = state.servers["paloalto-firewall"]
    assert fw.usable and fw.enabled and fw.catalog == "custom"
    assert fw.entry is not None
    assert fw.entry.title == "Palo Alto Firewall"
    assert fw.entry.categories == ("security", "network")
    assert fw.entry.image == "paloalto-mcp-server:latest"
    assert dict(fw.secret_env) == {
        "PANOS_HOST": "firewall.example.com",
        "PANOS_API_KEY": "LUFRPT1xxxxxxxxxxxxxxxxxxxxxxxxxx==",
    }


def test_multi_server_snippet_and_registry(write_fleet: WriteFleet, load: Load) -> None:
    home = write_fleet(catalogs={"custom": GUIDE_MULTI}, registry=GUIDE_REGISTRY)
    state = load(home)
    assert sorted(state.catalog) == ["cisco-asa", "internal-ticketing", "paloalto-firewall"]
    assert {n: s.enabled for n, s in state.servers.items()} == {
        "cisco-asa": True,
        "internal-ticketing": False,
        "paloalto-firewall": True,
    }
    assert all(s.usable for s in state.servers.values())
    # the documentation's `[...]` is recognised as a placeholder, and said so
    assert {str(d) for d in state.diagnostics} == {
        f"custom.yaml:{line}: registry.{name}.secrets: placeholder '...' ignored"
        for line, name in ((6, "paloalto-firewall"), (10, "cisco-asa"), (14, "internal-ticketing"))
    }


def test_repo_example_of_the_guide(tmp_path: Path) -> None:
    home = tmp_path / "guide"
    shutil.copytree(REPO / "examples" / "docker-guide", home)
    secrets = home / "secrets.env"
    shutil.copy(home / "secrets.env.example", secrets)
    secrets.chmod(0o600)
    state = load_fleet(resolve_files(home))
    assert sorted(state.catalog) == ["cisco-asa", "internal-ticketing", "paloalto-firewall"]
    assert state.servers["paloalto-firewall"].usable
    assert not state.servers["internal-ticketing"].enabled
    # the guide's secrets.env has no ASA_* values: only cisco-asa is unusable, and says why
    asa = state.servers["cisco-asa"]
    assert [str(p) for p in asa.problems] == [
        "registry.yaml:5: registry.cisco-asa: required secrets ASA_HOST, ASA_USERNAME, "
        f"ASA_PASSWORD are not set in {secrets} (set with: mcp-fleet secret set NAME)"
    ]


def test_docker_registry_form(write_fleet: WriteFleet, load: Load) -> None:
    """Docker's own registry.yaml: presence means enabled, ``ref`` and inline ``config``."""
    home = write_fleet(
        catalogs={
            "docker-mcp": "registry:\n  fs:\n    image: mcp/fs\n    command: ['{{fs.root}}']\n"
        },
        registry="""
        registry:
          fs:
            ref: ""
            config:
              root: /home/me
        """,
    )
    fs = load(home).servers["fs"]
    assert fs.enabled and fs.usable and fs.ref is None
    assert fs.entry is not None and fs.entry.command == ("/home/me",)
    assert dict(fs.config) == {"root": "/home/me"}
