"""Round-trip YAML for files users also edit by hand: their comments survive.

PyYAML (used to *read* fleet files, with line numbers) drops comments, so
every command that *changes* a user's YAML (``server enable``, ``catalog
import``) goes through ruamel.yaml's round-trip mode instead, guessing the
file's own indentation so that an edit changes the lines it must and no
others. Writes go through ``atomic_write``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mcp_fleet.config.yamlsource import read_capped
from mcp_fleet.errors import Diagnostic, FleetConfigError


@dataclass(frozen=True)
class Indent:
    """A file's indentation: mapping step, sequence item content step, dash offset."""

    mapping: int = 2
    sequence: int = 4
    offset: int = 2


def guess_indent(text: str) -> Indent:
    """Guess a YAML file's block indentation from the first nested mapping and list."""
    mapping: int | None = None
    seq: tuple[int, int] | None = None
    parent: int | None = None  # indentation of the previous "key:" line
    for line in text.splitlines():
        body = line.lstrip(" ")
        if not body or body.startswith("#"):
            continue
        spaces = len(line) - len(body)
        if parent is not None and body.startswith("- ") and spaces >= parent:
            after = body[1:]
            content = spaces + 1 + len(after) - len(after.lstrip(" "))
            seq = seq or (content - parent, spaces - parent)
        elif parent is not None and spaces > parent:
            mapping = mapping or spaces - parent
        parent = spaces if body.rstrip().endswith(":") and not body.startswith("- ") else None
        if mapping is not None and seq is not None:
            break
    default = Indent()
    sequence, offset = seq or (default.sequence, default.offset)
    return Indent(mapping=mapping or default.mapping, sequence=sequence, offset=offset)


def _yaml(indent: Indent) -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=indent.mapping, sequence=indent.sequence, offset=indent.offset)
    return yaml


class RoundTrip:
    """A YAML document loaded for editing, remembering how to write it back alike."""

    def __init__(self, data: Any, *, indent: Indent | None = None) -> None:
        self.data = data
        self.indent = indent or Indent()

    @classmethod
    def load(cls, path: Path, *, default: Any = None) -> RoundTrip:
        """Load ``path`` (``default`` when it does not exist or is empty)."""
        try:
            text = read_capped(path).decode("utf-8-sig")
        except FileNotFoundError:
            return cls(default if default is not None else CommentedMap())
        return cls.parse(text, path, default=default)

    @classmethod
    def parse(cls, text: str, path: Path, *, default: Any = None) -> RoundTrip:
        indent = guess_indent(text)
        try:
            data = _yaml(indent).load(text)
        except YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise FleetConfigError(
                Diagnostic(
                    message=f"invalid YAML: {getattr(exc, 'problem', None) or exc}",
                    file=path,
                    line=mark.line + 1 if mark is not None else None,
                )
            ) from None
        except (ValueError, IndexError, TypeError):
            # ruamel's round-trip constructor fails on some plain scalars it takes for
            # numbers ("-_", "._"): name the value's line, as for any other bad YAML.
            raise FleetConfigError(
                Diagnostic(
                    message="invalid YAML: a plain value looks like a number but is not one"
                    " (quote it)",
                    file=path,
                    line=_unreadable_line(text, indent),
                )
            ) from None
        if data is None:
            data = default if default is not None else CommentedMap()
        return cls(data, indent=indent)

    def dump(self) -> str:
        out = io.StringIO()
        _yaml(self.indent).dump(self.data, out)
        return out.getvalue()


def _unreadable_line(text: str, indent: Indent) -> int | None:
    """The line of the first value the round-trip constructor cannot build, if found."""
    yaml = _yaml(indent)
    try:
        root = yaml.compose(text)
    except YAMLError:
        return None
    nodes: list[Node] = [root] if root is not None else []
    while nodes:
        node = nodes.pop(0)
        if isinstance(node, ScalarNode):
            try:
                yaml.constructor.construct_object(node, deep=True)
            except (ValueError, IndexError, TypeError):
                return int(node.start_mark.line) + 1
        elif isinstance(node, MappingNode):
            nodes += [part for pair in node.value for part in pair]
        elif isinstance(node, SequenceNode):
            nodes += node.value
    return None


def ensure_map(parent: Any, key: str) -> Any:
    """``parent[key]`` as an editable mapping, created (or replacing a null) if needed."""
    value = parent.get(key)
    if not isinstance(value, dict):
        value = CommentedMap()
        parent[key] = value
    return value
