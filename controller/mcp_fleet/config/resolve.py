"""From a fleet directory to one immutable ``DesiredState``.

``resolve_files`` decides where each input is read from: the fleet directory
(``--dir``, ``MCP_FLEET_HOME``, ``~/.mcp-fleet``) laid out like Docker's
``~/.docker/mcp``, with Docker's own flags (``--catalog``, ``--registry``,
``--config``, ``--tools-config``, ``--secrets``) overriding single files.

``load_fleet`` reads them all and resolves each registry entry against the
layered catalogs, config, tools and secrets. Two kinds of failure, on purpose:

- a file broken as a whole (not YAML, wrong shape, wrong field types) raises
  ``FleetConfigError`` listing every problem of every file; the controller
  keeps its last good state;
- a problem of one server (unknown to every catalog, missing required secret,
  refused secrets file, unfilled template, invalid name, nothing to run) lands
  in that ``ServerSpec.problems``: that server is unusable, the rest runs.

Warnings (unknown keys, overridden catalog entries, loose secrets file) go to
``DesiredState.diagnostics`` and to the ``mcp_fleet.config`` logger. No value
of a secret is ever put in a diagnostic or a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from mcp_fleet import conventions
from mcp_fleet.config.catalogs import UNSUPPORTED_TYPE_KEY, LayeredCatalog, load_catalogs
from mcp_fleet.config.config_check import check_config, warning
from mcp_fleet.config.registry import RegistryEntry, load_registry, load_tools, read_config
from mcp_fleet.config.secrets import SecretsFile, load_secrets
from mcp_fleet.config.templates import TemplateError, render
from mcp_fleet.config.yamlsource import YamlDoc
from mcp_fleet.errors import Diagnostic, FleetConfigError, Severity
from mcp_fleet.model import (
    CatalogEntry,
    DesiredState,
    FleetFiles,
    ProcessSpec,
    RemoteSpec,
    ServerSpec,
    ServerType,
    frozen_map,
)

log = logging.getLogger("mcp_fleet.config")

CATALOG_SUFFIXES = (".yaml", ".yml")


def default_catalogs(home: Path) -> tuple[Path, ...]:
    """The directory's catalogs, in file-name order (later files win)."""
    directory = home / conventions.CATALOGS_DIR
    if not directory.is_dir():
        return ()
    return tuple(
        sorted(
            p
            for p in directory.iterdir()
            if p.suffix in CATALOG_SUFFIXES and p.is_file() and not p.name.startswith(".")
        )
    )


def _catalog_path(root: Path, given: Path) -> Path:
    """A ``--catalog`` value: a path, or (like Docker's CLI) the name of a catalog of the home."""
    path = Path(given).expanduser()
    if path.exists() or len(path.parts) != 1:
        return path
    named = root / conventions.CATALOGS_DIR / (path.name if path.suffix else f"{path.name}.yaml")
    return named if named.exists() else path


def resolve_files(
    home: Path | None = None,
    *,
    catalogs: Sequence[Path] = (),
    registry: Path | None = None,
    config: Path | None = None,
    tools: Path | None = None,
    secrets: Path | None = None,
) -> FleetFiles:
    """Where each fleet file is: the directory's, unless a Docker-style flag names another."""
    root = conventions.fleet_home(home)
    explicit = tuple(_catalog_path(root, c) for c in catalogs)
    return FleetFiles(
        home=root,
        catalogs=explicit or default_catalogs(root),
        catalogs_from_dir=not explicit,
        registry=Path(registry).expanduser() if registry else root / conventions.REGISTRY_FILE,
        config=Path(config).expanduser() if config else root / conventions.CONFIG_FILE,
        tools=Path(tools).expanduser() if tools else root / conventions.TOOLS_FILE,
        secrets=Path(secrets).expanduser() if secrets else root / conventions.SECRETS_FILE,
    )


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of config mappings: ``over`` wins, nested mappings merge."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class _Resolver:
    """Resolves registry entries one by one, collecting each server's problems."""

    def __init__(
        self,
        catalog: LayeredCatalog,
        config: Mapping[str, Mapping[str, Any]],
        tools: Mapping[str, tuple[str, ...]],
        secrets: SecretsFile,
        registry: Mapping[str, RegistryEntry],
        registry_path: Path,
        *,
        config_file: Path,
        config_doc: YamlDoc | None = None,
        resolve_secrets: bool = True,
    ) -> None:
        self.catalog = catalog
        self.resolve_secrets = resolve_secrets
        self.config_file = config_file
        self.config_doc = config_doc
        #: Warnings found while resolving (a catalog's broken config schema).
        self.warnings: list[Diagnostic] = []
        self.tools = tools
        self.secrets = secrets
        self.registry_path = registry_path
        # Inline registry config merges over config.yaml, per server.
        merged: dict[str, Any] = {k: dict(v) for k, v in config.items()}
        for name, reg in registry.items():
            if reg.config:
                merged[name] = _merge(merged.get(name, {}), reg.config)
        self.config = merged

    def problem(self, reg: RegistryEntry, message: str, field: str | None = None) -> Diagnostic:
        return Diagnostic(
            message=message,
            file=self.registry_path,
            line=reg.line,
            field=field or f"registry.{reg.name}",
            server=reg.name,
        )

    def find_entry(self, reg: RegistryEntry) -> tuple[CatalogEntry | None, Diagnostic | None]:
        if reg.catalog:
            cat = self.catalog.by_catalog_name(reg.catalog)
            if cat is None:
                loaded = ", ".join(c.name for c in self.catalog.files) or "none"
                return None, self.problem(
                    reg,
                    f"catalog {reg.catalog!r} is not loaded (loaded catalogs: {loaded})",
                    f"registry.{reg.name}.catalog",
                )
            entry = cat.entries.get(reg.name)
            if entry is None:
                return None, self.problem(
                    reg,
                    f"server {reg.name!r} is not in catalog {reg.catalog!r} ({cat.path})",
                    f"registry.{reg.name}.catalog",
                )
            return entry, None
        entry = self.catalog.merged.get(reg.name)
        if entry is None:
            hint = (
                f" (ref {reg.ref!r} is not fetched; add the server to a catalog)" if reg.ref else ""
            )
            return None, self.problem(reg, f"server {reg.name!r} is not in any catalog{hint}")
        return entry, None

    def fill(self, entry: CatalogEntry, reg: RegistryEntry, problems: list[Diagnostic]) -> Any:
        """The entry with templates filled, and the resolved non-secret env."""

        def r(text: str, where: str) -> str:
            try:
                return render(text, self.config)
            except TemplateError as exc:
                problems.append(self.problem(reg, f"{where}: {exc}"))
                return text

        env = {e.name: r(e.value, f"env {e.name}") for e in entry.env}
        process = entry.process
        if process is not None:
            process = ProcessSpec(
                command=tuple(r(a, "process.command") for a in process.command),
                env=frozen_map({k: r(v, f"process.env {k}") for k, v in process.env.items()}),
                cwd=r(process.cwd, "process.cwd") if process.cwd else None,
            )
        remote = entry.remote
        if remote is not None:
            remote = RemoteSpec(
                url=r(remote.url, "remote.url"),
                transport_type=remote.transport_type,
                headers=frozen_map(
                    {k: r(v, f"remote.headers {k}") for k, v in remote.headers.items()}
                ),
            )
        filled = replace(
            entry,
            command=tuple(r(a, "command") for a in entry.command),
            volumes=tuple(r(v, "volumes") for v in entry.volumes),
            process=process,
            remote=remote,
        )
        return filled, env

    def secret_env(
        self, entry: CatalogEntry, reg: RegistryEntry, problems: list[Diagnostic]
    ) -> dict[str, str]:
        out: dict[str, str] = {}
        if not entry.secrets or not self.resolve_secrets:
            return out
        if self.secrets.refused:
            names = ", ".join(s.name for s in entry.secrets)
            path = self.secrets.path
            problems.append(
                self.problem(
                    reg,
                    f"needs secrets {names}, but {path} is refused: {self.secrets.refused}; "
                    f"run: chmod 600 {path}",
                )
            )
            return out
        missing: list[str] = []
        unusable: list[str] = []
        for ref in entry.secrets:
            value = self.secrets.values.get(ref.name)
            if value is None or value == "":
                if ref.required:
                    missing.append(ref.name)
                continue
            if "\x00" in value:
                # No environment variable can carry a NUL (execve and Docker refuse it, and
                # Docker's refusal quotes the variable back, value included).
                unusable.append(ref.name)
                continue
            out[ref.env] = value
        if unusable:
            problems.append(
                self.problem(
                    reg,
                    f"secret {', '.join(unusable)} in {self.secrets.path} holds a NUL byte,"
                    " which no environment variable can carry (value not shown)",
                )
            )
        if missing:
            plural = "s" if len(missing) > 1 else ""
            verb = "are" if len(missing) > 1 else "is"
            problems.append(
                self.problem(
                    reg,
                    f"required secret{plural} {', '.join(missing)} {verb} not set in "
                    f"{self.secrets.path} (set with: mcp-fleet secret set NAME)",
                )
            )
        return out

    def config_problems(self, entry: CatalogEntry, reg: RegistryEntry) -> list[Diagnostic]:
        """The server's settings against its catalog's ``config`` schema (see config_check)."""

        def locate(path: tuple[str | int, ...], message: str) -> Diagnostic:
            field = ".".join(map(str, path))
            if path and path[0] == reg.name and len(path) > 1 and path[1] in reg.config:
                inline = ".".join(map(str, path[1:]))
                return self.problem(reg, message, f"registry.{reg.name}.config.{inline}")
            doc = self.config_doc
            return Diagnostic(
                message=message,
                file=self.config_file,
                line=doc.line(path) if doc is not None else None,
                field=field,
                server=reg.name,
            )

        def catalog_problem(message: str) -> Diagnostic:
            return warning(
                Diagnostic(
                    message=message,
                    file=entry.source,
                    line=entry.source_line,
                    field=f"registry.{entry.name}.config",
                    server=reg.name,
                )
            )

        assert entry.config_schema is not None
        return check_config(
            reg.name, entry.config_schema, self.config, locate=locate,
            catalog_problem=catalog_problem,
        )  # fmt: skip

    def resolve(self, reg: RegistryEntry) -> ServerSpec:
        problems: list[Diagnostic] = []
        if not conventions.SERVER_NAME_RE.match(reg.name):
            problems.append(
                self.problem(
                    reg,
                    f"invalid server name {reg.name!r}: use letters, digits, '.', '_' or '-' "
                    "(at most 63, starting and ending with a letter or digit)",
                )
            )
        entry, missing = self.find_entry(reg)
        if missing is not None:
            problems.append(missing)
        env: dict[str, str] = {}
        secret_env: dict[str, str] = {}
        if entry is not None:
            unsupported = entry.extra.get(UNSUPPORTED_TYPE_KEY)
            if unsupported is not None:
                problems.append(self.problem(reg, f"catalog type {unsupported!r} is not supported"))
            elif entry.type is ServerType.REMOTE and entry.remote is None:
                problems.append(self.problem(reg, "type: remote needs remote.url in the catalog"))
            elif entry.type is ServerType.SERVER and not entry.image and entry.process is None:
                problems.append(
                    self.problem(reg, "the catalog entry has neither image: nor process: to run")
                )
            entry, env = self.fill(entry, reg, problems)
            secret_env = self.secret_env(entry, reg, problems)
            if entry.config_schema:
                for diag in self.config_problems(entry, reg):
                    is_warning = diag.severity is Severity.WARNING
                    (self.warnings if is_warning else problems).append(diag)
        return ServerSpec(
            name=reg.name,
            enabled=reg.enabled,
            entry=entry,
            catalog=reg.catalog or (entry.source.stem if entry is not None else None),
            ref=reg.ref,
            env=frozen_map(env),
            secret_env=frozen_map(secret_env),
            config=frozen_map(self.config.get(reg.name, {})),
            tools_allow=self.tools.get(reg.name),
            problems=tuple(problems),
        )


def current_catalogs(files: FleetFiles) -> tuple[Path, ...]:
    """The catalog files as of now: rescanned when they come from the directory."""
    return default_catalogs(files.home) if files.catalogs_from_dir else files.catalogs


def load_fleet(
    files: FleetFiles, *, fleet: str | None = None, resolve_secrets: bool = True
) -> DesiredState:
    """Read and resolve every fleet file; ``FleetConfigError`` when a file is broken.

    ``resolve_secrets=False`` is for secrets delivered by someone else (a
    Kubernetes Secret the kubelet injects): the secrets file is not read, and
    ``secret_env`` stays empty without a missing-secret problem.
    """
    files = replace(files, catalogs=current_catalogs(files))
    errors: list[Diagnostic] = []

    def attempt(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except FleetConfigError as exc:
            errors.extend(exc.diagnostics)
            return None

    catalog: LayeredCatalog | None = attempt(load_catalogs, files.catalogs)
    registry = attempt(load_registry, files.registry)
    config_read = attempt(read_config, files.config)
    config, config_doc = config_read if config_read is not None else ({}, None)
    tools = attempt(load_tools, files.tools)
    secrets: SecretsFile | None = (
        attempt(load_secrets, files.secrets)
        if resolve_secrets
        else SecretsFile(path=files.secrets, exists=False)
    )
    if errors or catalog is None or registry is None or secrets is None:
        raise FleetConfigError(errors)

    resolver = _Resolver(
        catalog, config, tools, secrets, registry.entries, registry.path,
        config_file=files.config, config_doc=config_doc, resolve_secrets=resolve_secrets,
    )  # fmt: skip
    servers = {name: resolver.resolve(reg) for name, reg in sorted(registry.entries.items())}

    diagnostics: list[Diagnostic] = [*catalog.diagnostics, *registry.diagnostics]
    diagnostics.extend(resolver.warnings)
    diagnostics.extend(secrets.diagnostics)
    for name in tools or {}:
        if name not in registry.entries:
            diagnostics.append(
                Diagnostic(
                    message=f"tools.yaml lists {name!r}, which the registry does not",
                    file=files.tools,
                    field=name,
                    severity=Severity.WARNING,
                )
            )
    for spec in servers.values():
        if spec.enabled:  # a staged (disabled) server's problems show in `server ls` only
            diagnostics.extend(spec.problems)
    for diag in diagnostics:
        level = logging.WARNING if diag.severity is Severity.WARNING else logging.ERROR
        log.log(level, "%s", diag)
    return DesiredState(
        fleet=fleet or conventions.fleet_name(files.home),
        files=files,
        catalog=frozen_map(catalog.merged),
        servers=frozen_map(servers),
        diagnostics=tuple(diagnostics),
    )
