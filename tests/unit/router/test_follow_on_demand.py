"""``mcp-fleet router --dir`` and on-demand servers: which ones it advertises while cold.

The router alone publishes, besides the running containers, the fleet's
on-demand servers that its controller runs as containers, so it lists them
from the cache or the catalog while none runs. Checked against a real fleet
folder loaded by the real loader, with no Docker needed.
"""

from __future__ import annotations

from pathlib import Path

from mcp_fleet.config import load_fleet, resolve_files
from mcp_fleet.sources.docker_fleet import on_demand_specs

CATALOG = """\
version: "2"
registry:
  cold:
    image: example/cold:1
    lifecycle: on-demand
    idleTimeout: 3s
  warm:
    image: example/warm:1
  local:
    process: {command: [python3, -m, some_server]}
    lifecycle: on-demand
  staged:
    image: example/staged:1
    lifecycle: on-demand
  needy:
    image: example/needy:1
    lifecycle: on-demand
    secrets:
      - name: needy.token
        env: NEEDY_TOKEN
"""


def test_only_enabled_usable_on_demand_containers_are_advertised(tmp_path: Path) -> None:
    home = tmp_path / "fleet"
    (home / "catalogs").mkdir(parents=True)
    (home / "catalogs" / "fleet.yaml").write_text(CATALOG)
    (home / "registry.yaml").write_text(
        "registry:\n  cold: {}\n  warm: {}\n  local: {}\n  needy: {}\n"
        "  staged:\n    enabled: false\n"
    )
    desired = load_fleet(resolve_files(home))
    assert desired.servers["needy"].problems  # its secret is missing
    specs = on_demand_specs(desired)
    # warm: always; local: a child of the controller; staged: disabled; needy: failing.
    assert list(specs) == ["cold"]
    assert specs["cold"] is desired.servers["cold"]
