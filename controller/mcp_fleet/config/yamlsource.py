"""Read a YAML file into plain data plus the line of every node.

Error messages must point at a line (``registry.yaml:7: ...``), and the
validated models only see plain dicts and lists. So a file is read in two
steps: PyYAML composes the node graph (which carries a start mark per node)
and a small walk turns it into plain Python while recording, for every path
(``("registry", "cisco-asa", "enabled")``), the 1-based line it came from.
Scalars are built by PyYAML's own safe constructor, so typing rules (``yes``
is true, ``1.5`` is a float) are exactly YAML's.

Everything that can go wrong with bytes on disk (not UTF-8, not YAML, several
documents, duplicate keys, recursive aliases, absurd nesting, alias bombs) is
turned into one ``FleetConfigError`` with a line, never another exception:
the loaders are fuzzed with random bytes and must only ever raise that.

A fleet file larger than ``max_file_bytes()`` (8 MiB, or
``MCP_FLEET_MAX_FILE_BYTES``) is refused before it is parsed: parsing costs
several hundred times a file's size in memory (a 400 MB scalar took 3 GB),
and no catalog comes near the limit. Its size is checked (``fstat``) and at
most one byte past the limit is read, so a file that grows while it is read,
or one that is not a regular file, is refused as well.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeAlias

import yaml

from mcp_fleet.errors import Diagnostic, FleetConfigError

Key: TypeAlias = str | int
YamlPath: TypeAlias = tuple[Key, ...]

#: More nodes than this (after alias expansion) is refused: a guard against alias bombs.
MAX_NODES = 200_000
#: Largest fleet file read (catalogs, registry.yaml, config.yaml, tools.yaml, secrets.env).
DEFAULT_MAX_FILE_BYTES: Final = 8 * 1024 * 1024
#: Environment variable that changes ``DEFAULT_MAX_FILE_BYTES`` (a number of bytes).
ENV_MAX_FILE_BYTES: Final = "MCP_FLEET_MAX_FILE_BYTES"

_STR_TAG = "tag:yaml.org,2002:str"
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def dotted(path: YamlPath) -> str:
    """``("registry", "x", "secrets", 0, "name")`` -> ``registry.x.secrets[0].name``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass(frozen=True)
class YamlDoc:
    """One parsed file: its plain data and the line of each path in it."""

    path: Path
    data: Any
    lines: dict[YamlPath, int] = field(default_factory=dict)

    def line(self, path: YamlPath) -> int | None:
        """The line of ``path``, else of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return None

    def diag(self, path: YamlPath, message: str, **kwargs: Any) -> Diagnostic:
        """A diagnostic for ``path`` in this file, with the right line."""
        return Diagnostic(
            message=message,
            file=self.path,
            line=self.line(path),
            field=dotted(path) or None,
            **kwargs,
        )


class _Builder:
    """Turns a composed node graph into plain data, recording lines on the way."""

    def __init__(self, loader: yaml.SafeLoader, path: Path) -> None:
        self.loader = loader
        self.path = path
        self.lines: dict[YamlPath, int] = {}
        self.count = 0
        self.active: set[int] = set()

    def fail(self, node: yaml.Node | None, message: str, at: YamlPath = ()) -> FleetConfigError:
        line = node.start_mark.line + 1 if node is not None else None
        return FleetConfigError(
            Diagnostic(message=message, file=self.path, line=line, field=dotted(at) or None)
        )

    def build(self, node: yaml.Node, at: YamlPath, line: int | None = None) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.fail(node, f"document too large (more than {MAX_NODES} nodes)")
        self.lines.setdefault(at, line if line is not None else node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _STR_TAG:
                return node.value  # the common case, without the constructor's overhead
            try:
                return self.loader.construct_object(node, deep=True)
            except yaml.YAMLError as exc:
                raise self.fail(node, f"invalid value: {_problem(exc)}", at) from None
            except (ValueError, TypeError, OverflowError) as exc:
                raise self.fail(node, f"invalid value: {exc}", at) from None
        if id(node) in self.active:
            raise self.fail(node, "recursive alias", at)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*at, i)) for i, item in enumerate(node.value)]
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, at)
        finally:
            self.active.discard(id(node))
        raise self.fail(node, "unsupported YAML node", at)  # pragma: no cover

    def mapping(self, node: yaml.MappingNode, at: YamlPath) -> dict[str, Any]:
        try:
            self.loader.flatten_mapping(node)  # resolves ``<<`` merge keys in place
        except yaml.YAMLError as exc:
            raise self.fail(node, f"invalid merge key: {_problem(exc)}", at) from None
        out: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, "expected a plain key, got a mapping or list", at)
            key = str(key_node.value)
            key_line = key_node.start_mark.line + 1
            if key in out:
                raise self.fail(
                    key_node,
                    f"duplicate key {key!r} (first at line {first_line[key]})",
                    (*at, key),
                )
            first_line[key] = key_line
            out[key] = self.build(value_node, (*at, key), key_line)
        return out


def _problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    return str(problem or exc).strip().splitlines()[0] if str(problem or exc).strip() else "error"


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise FleetConfigError(
            Diagnostic(message="not valid UTF-8 text", file=path, line=line)
        ) from None


def parse_yaml(raw: bytes | str, path: Path) -> YamlDoc:
    """Parse one YAML document; ``FleetConfigError`` (with a line) on any problem."""
    text = _decode(raw, path) if isinstance(raw, bytes) else raw
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise FleetConfigError(
            Diagnostic(message="not a text file (NUL byte)", file=path, line=line)
        )
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.composer.ComposerError as exc:
            if "expected a single document" in str(exc.context or ""):
                mark = exc.problem_mark
                raise FleetConfigError(
                    Diagnostic(
                        message="expected one YAML document, found several ('---')",
                        file=path,
                        line=mark.line + 1 if mark else None,
                    )
                ) from None
            raise
        if node is None:
            return YamlDoc(path=path, data=None, lines={})
        builder = _Builder(loader, path)
        data = builder.build(node, ())
        return YamlDoc(path=path, data=data, lines=builder.lines)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise FleetConfigError(
            Diagnostic(
                message=f"invalid YAML: {_problem(exc)}",
                file=path,
                line=mark.line + 1 if mark else None,
            )
        ) from None
    except yaml.YAMLError as exc:
        raise FleetConfigError(
            Diagnostic(message=f"invalid YAML: {_problem(exc)}", file=path)
        ) from None
    except RecursionError:
        raise FleetConfigError(
            Diagnostic(message="invalid YAML: nesting too deep", file=path)
        ) from None
    finally:
        loader.dispose()


def max_file_bytes() -> int:
    """The size limit of a fleet file: ``MCP_FLEET_MAX_FILE_BYTES``, else 8 MiB."""
    text = os.environ.get(ENV_MAX_FILE_BYTES, "").strip()
    try:
        value = int(text) if text else DEFAULT_MAX_FILE_BYTES
    except ValueError:
        return DEFAULT_MAX_FILE_BYTES
    return value if value > 0 else DEFAULT_MAX_FILE_BYTES


def _too_large(path: Path, size: int | None, limit: int) -> FleetConfigError:
    if size is None:
        found = f"more than the limit of {limit} bytes"
    else:
        found = f"{size} bytes, the limit is {limit}"
    return FleetConfigError(
        Diagnostic(
            message=f"file too large, not read: {found} ({ENV_MAX_FILE_BYTES} changes it)",
            file=path,
        )
    )


def read_capped(path: Path) -> bytes:
    """The bytes of ``path``, refused (``FleetConfigError``) past ``max_file_bytes()``.

    Other failures are the ``OSError`` of opening or reading it (``FileNotFoundError``...).
    """
    limit = max_file_bytes()
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise _too_large(path, size, limit)
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise _too_large(path, None, limit)
    return raw


def read_bytes(path: Path) -> bytes:
    """The bytes of ``path``; a missing, unreadable or too large file is a ``FleetConfigError``."""
    try:
        return read_capped(path)
    except FileNotFoundError:
        raise FleetConfigError(Diagnostic(message="file not found", file=path)) from None
    except OSError as exc:
        raise FleetConfigError(
            Diagnostic(message=f"cannot read file: {exc.strerror or exc}", file=path)
        ) from None


def read_yaml(path: Path) -> YamlDoc:
    """Read and parse ``path``; a missing or unreadable file is a ``FleetConfigError``."""
    return parse_yaml(read_bytes(path), path)
