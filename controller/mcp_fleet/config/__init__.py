"""Reading (and carefully editing) the fleet directory.

The public surface other parts use:

- ``resolve_files(home, *, catalogs, registry, config, tools, secrets)``:
  where each fleet file is (``--dir`` plus Docker's per-file flags);
- ``load_fleet(files, *, fleet=None)``: everything resolved into one
  immutable ``DesiredState``; raises ``FleetConfigError`` only when a file is
  broken as a whole, and marks single servers unusable otherwise;
- the edit helpers used by the CLI: ``import_catalog``, ``set_enabled``,
  ``set_secret``/``remove_secret``, all atomic (``atomic_write``).

Inside: ``yamlsource`` (YAML with lines), ``schema`` (pydantic edge models),
``catalogs``/``registry``/``secrets`` (one loader per file kind),
``templates``, ``resolve`` (the assembly), ``yamledit``/``registry_edit``/
``catalog_import`` (comment-preserving edits).

Owns the fleet files; imports only the shared modules at the top of
``mcp_fleet`` (never the controller, runtimes, router, gateway or CLI:
``lint-imports``, pyproject.toml), so anything may read a fleet.
"""

from mcp_fleet.config.atomic import atomic_write
from mcp_fleet.config.catalog_import import ImportReport, import_catalog
from mcp_fleet.config.catalogs import (
    CatalogFile,
    LayeredCatalog,
    load_catalog,
    load_catalogs,
    parse_catalog,
)
from mcp_fleet.config.registry import (
    Registry,
    RegistryEntry,
    load_config,
    load_registry,
    load_tools,
)
from mcp_fleet.config.registry_edit import RegistryEdit, set_enabled
from mcp_fleet.config.resolve import default_catalogs, load_fleet, resolve_files
from mcp_fleet.config.secrets import (
    SECRETS_MODE,
    SecretsFile,
    load_secrets,
    remove_secret,
    set_secret,
)
from mcp_fleet.config.yamlsource import YamlDoc, parse_yaml
from mcp_fleet.errors import FleetConfigError

__all__ = [
    "SECRETS_MODE",
    "CatalogFile",
    "FleetConfigError",
    "ImportReport",
    "LayeredCatalog",
    "Registry",
    "RegistryEdit",
    "RegistryEntry",
    "SecretsFile",
    "YamlDoc",
    "atomic_write",
    "default_catalogs",
    "import_catalog",
    "load_catalog",
    "load_catalogs",
    "load_config",
    "load_fleet",
    "load_registry",
    "load_secrets",
    "load_tools",
    "parse_catalog",
    "parse_registry",
    "parse_yaml",
    "remove_secret",
    "resolve_files",
    "set_enabled",
    "set_secret",
]
