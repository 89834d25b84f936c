"""Reading the fleet files for the controller: the last good state, and what masks secrets.

::

    reader = FleetReader(files, runtimes, preferred_runtime=RuntimeKind.PROCESS)
    desired = await reader.load()  # the last DesiredState that loaded, or None
    reader.file_errors             # why the files did not load at the last read
    reader.unsupported             # servers their runtime refuses, and why

- **Cheap when nothing changed.** A read is skipped when no fleet file
  changed since the last one (same size, mtime and inode), unless a resync
  period has passed: a pass woken by a server exit does not re-parse a
  hundred catalog entries. A read runs in a thread, so parsing YAML does
  not stall a router on the same event loop.
- **Last good state.** When a file breaks, the error is kept (file, line,
  field) and logged once, and ``load`` returns the last DesiredState that
  loaded; fixing the file resumes. Before any good load: None (the
  controller then touches nothing).
- **Secrets masked everywhere.** The log redactor is fed every value of
  secrets.env and of the servers' secrets at each read, a failed one too,
  so a value pasted into another file is masked in the error quoting it.
- **Refused specs fail at once.** Once per loaded DesiredState each enabled
  server's runtime is asked whether it can run the spec at all
  (``unsupported``: a volume Docker cannot mount...), so such a server is
  Failed instead of being started, refused and retried forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from mcp_fleet import conventions
from mcp_fleet.config.resolve import current_catalogs
from mcp_fleet.errors import Diagnostic, FleetConfigError
from mcp_fleet.logsetup import log_event, redactor
from mcp_fleet.model import DesiredState, FleetFiles, RuntimeKind, frozen_map
from mcp_fleet.runtimes.base import Runtime
from mcp_fleet.runtimes.select import place

log = logging.getLogger("mcp_fleet.controller")

Loader = Callable[[FleetFiles], DesiredState]
#: A secrets.env larger than this is not read for masking (the loader refuses it anyway).
_SECRETS_MASK_READ_LIMIT = 1024 * 1024


def default_loader(files: FleetFiles) -> DesiredState:
    from mcp_fleet.config import load_fleet

    return load_fleet(files)


class FleetReader:
    """Loads ``files`` for the controller (see the module docstring)."""

    def __init__(
        self,
        files: FleetFiles,
        runtimes: Mapping[RuntimeKind, Runtime],
        *,
        preferred_runtime: RuntimeKind = RuntimeKind.PROCESS,
        loader: Loader = default_loader,
        resync_seconds: float = conventions.DEFAULT_RESYNC_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.files = files
        self.runtimes = runtimes
        self.preferred_runtime = preferred_runtime
        self.loader = loader
        self.resync_seconds = resync_seconds
        self.clock = clock
        self._desired: DesiredState | None = None
        self._unsupported: Mapping[str, str] = frozen_map()
        self._file_errors: tuple[Diagnostic, ...] = ()
        self._signature: tuple[tuple[str, int, int, int], ...] = ()
        self._loaded_at = float("-inf")

    @property
    def desired(self) -> DesiredState | None:
        """The last DesiredState that loaded (kept while the files are broken)."""
        return self._desired

    @property
    def file_errors(self) -> tuple[Diagnostic, ...]:
        """Why the fleet files did not load at the last read (empty when they did)."""
        return self._file_errors

    @property
    def unsupported(self) -> Mapping[str, str]:
        """Enabled servers of the last good state their runtime cannot run, and why."""
        return self._unsupported

    async def load(self) -> DesiredState | None:
        """Read the fleet files (in a thread), or skip it when nothing changed; returns
        the last DesiredState that loaded (see the module docstring)."""
        signature = _signature(self.files)
        fresh = self.clock() - self._loaded_at < self.resync_seconds
        if signature == self._signature and fresh and (self._desired or self._file_errors):
            return self._desired
        self._signature, self._loaded_at = signature, self.clock()
        try:
            desired = await asyncio.to_thread(self.loader, self.files)
        except FleetConfigError as exc:
            await self._mask_secrets(self._desired)
            self._set_file_errors(exc.diagnostics)
            return self._desired
        except Exception as exc:  # a loader bug must not tear the fleet down either
            await self._mask_secrets(self._desired)
            log.exception("loading the fleet files failed")
            self._set_file_errors((Diagnostic(f"cannot load the fleet: {exc}"),))
            return self._desired
        if self._file_errors:
            log_event(log, logging.INFO, "fleet files valid again", home=str(self.files.home))
        self._file_errors = ()
        await self._mask_secrets(desired)
        if desired is not self._desired:
            self._unsupported = self._unsupported_by_runtimes(desired)
        self._desired = desired
        return desired

    async def _mask_secrets(self, desired: DesiredState | None) -> None:
        """Feed the redactor every secret value: of ``desired``'s servers and of secrets.env.

        All of secrets.env, not only the values servers use, and on a failed
        load too: a value pasted into registry.yaml is quoted by the error
        about it (log, status file, status page) before any load succeeds.
        """
        values = set(await asyncio.to_thread(_secrets_file_values, self.files))
        if desired is not None:
            values.update(v for spec in desired.servers.values() for v in spec.secret_env.values())
        redactor().set_secrets(values)

    def _unsupported_by_runtimes(self, desired: DesiredState) -> Mapping[str, str]:
        """Ask each enabled server's runtime whether it can run the spec at all."""
        available = frozenset(self.runtimes)
        out: dict[str, str] = {}
        for name, spec in desired.servers.items():
            if not spec.enabled or spec.entry is None:
                continue
            kind = place(spec, preferred=self.preferred_runtime, available=available).kind
            runtime = self.runtimes.get(kind) if kind is not None else None
            if runtime is None:
                continue
            try:
                why = runtime.unsupported_reason(spec)
            except Exception:  # a runtime bug must not stop the others from loading
                log.exception("checking %s against the %s runtime failed", name, kind)
                continue
            if why:
                out[name] = why.removeprefix(f"{name}: ")
        return frozen_map(out)

    def _set_file_errors(self, diagnostics: tuple[Diagnostic, ...]) -> None:
        if diagnostics != self._file_errors:
            for diag in diagnostics:
                log_event(
                    log,
                    logging.ERROR,
                    "fleet file invalid",
                    error=str(diag),
                    keeping="last good state" if self._desired else "nothing",
                )
        self._file_errors = diagnostics or (Diagnostic("the fleet files do not load"),)


def _secrets_file_values(files: FleetFiles) -> list[str]:
    """The values of secrets.env, to mask them (none when it is missing, huge or broken)."""
    from mcp_fleet.config.secrets import parse_secrets

    try:
        if files.secrets.stat().st_size > _SECRETS_MASK_READ_LIMIT:
            return []
        text = files.secrets.read_text(encoding="utf-8-sig")
        return list(parse_secrets(text, files.secrets).values())
    except (OSError, UnicodeDecodeError, ValueError, FleetConfigError):
        return []


def _signature(files: FleetFiles) -> tuple[tuple[str, int, int, int], ...]:
    """Size, mtime and inode of every fleet file: a cheap "did anything change"."""
    out = []
    for path in (
        *current_catalogs(files),
        files.registry,
        files.config,
        files.tools,
        files.secrets,
    ):
        try:
            st = path.stat()
        except OSError:
            out.append((str(path), -1, -1, -1))
            continue
        out.append((str(path), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)
