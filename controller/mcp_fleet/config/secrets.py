"""secrets.env: read it, check who may read it, and edit it without leaking a value.

The format is Docker's ``--secrets`` file: ``NAME=value`` lines. Comments,
blank lines, an ``export`` prefix and single or double quotes are tolerated
(double quotes understand ``\\n``, ``\\"`` and ``\\\\`` so a PEM key fits on
one line). Everything after the first ``=`` of an unquoted line is the value,
as Docker reads it (API keys often end in ``==``).

Permissions: a secrets file readable by group or others is **refused**: its
values are not used, every server that declares secrets gets a problem naming
the file and ``chmod 600``, and the rest of the fleet runs. We refuse rather
than warn because a warning scrolls by while the key stays exposed; refusing
makes the fix part of getting the server up.

No function here ever puts a value in an exception, a diagnostic or a log
line; errors name the file, the line and at most the variable's name.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mcp_fleet.config.atomic import atomic_write
from mcp_fleet.config.yamlsource import read_capped
from mcp_fleet.errors import Diagnostic, FleetConfigError, Severity

SECRETS_MODE = 0o600
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_LINE_RE = re.compile(r"^\s*(?:export\s+)?([^=\s]+)\s*=(.*)$")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


@dataclass(frozen=True)
class SecretsFile:
    """What secrets.env holds, or why its values may not be used."""

    path: Path
    exists: bool
    values: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: Set when the file is readable by group/others: values are then empty.
    refused: str | None = None
    mode: int | None = None
    diagnostics: tuple[Diagnostic, ...] = ()


def _unquote(raw: str, path: Path, line: int) -> str:
    text = raw.strip()
    if not text or text[0] not in "'\"":
        return raw.strip()
    quote = text[0]
    out: list[str] = []
    i = 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            rest = text[i + 1 :].strip()
            if rest and not rest.startswith("#"):
                raise FleetConfigError(
                    Diagnostic(
                        message="unexpected text after the closing quote",
                        file=path,
                        line=line,
                    )
                )
            return "".join(out)
        if ch == "\\" and quote == '"' and i + 1 < len(text):
            nxt = text[i + 1]
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    raise FleetConfigError(Diagnostic(message="unterminated quoted value", file=path, line=line))


def split_lines(text: str) -> list[str]:
    """Lines split on ``\n`` (and ``\r\n``) only: other separators may be part of a value."""
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def parse_secrets(text: str, path: Path) -> dict[str, str]:
    """``NAME=value`` lines into a dict (a later line wins); errors never show a value."""
    values: dict[str, str] = {}
    errors: list[Diagnostic] = []
    for number, line in enumerate(split_lines(text), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE_RE.match(line)
        if match is None:
            errors.append(
                Diagnostic(message="expected NAME=value (line not shown)", file=path, line=number)
            )
            continue
        name, raw = match.group(1), match.group(2)
        if not NAME_RE.match(name):
            errors.append(
                Diagnostic(
                    message="expected a secret name of letters, digits and _ . - before '='",
                    file=path,
                    line=number,
                )
            )
            continue
        try:
            values[name] = _unquote(raw, path, number)
        except FleetConfigError as exc:
            errors.extend(
                Diagnostic(message=d.message, file=d.file, line=d.line, field=name)
                for d in exc.diagnostics
            )
    if errors:
        raise FleetConfigError(errors)
    return values


def too_open(mode: int) -> bool:
    """True when group or others may read (or write) the file."""
    return bool(mode & 0o077)


def load_secrets(path: Path) -> SecretsFile:
    """Read secrets.env; a missing file holds no secrets, a loose one is refused."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return SecretsFile(path=path, exists=False)
    except OSError as exc:
        raise FleetConfigError(
            Diagnostic(message=f"cannot read file: {exc.strerror or exc}", file=path)
        ) from None
    mode = stat.S_IMODE(st.st_mode)
    if too_open(mode):
        reason = f"readable by group or others (mode {mode:03o})"
        warning = Diagnostic(
            message=f"{reason}: its secrets are refused until you run: chmod 600 {path}",
            file=path,
            severity=Severity.WARNING,
        )
        return SecretsFile(
            path=path, exists=True, refused=reason, mode=mode, diagnostics=(warning,)
        )
    try:
        raw = read_capped(path)
    except OSError as exc:
        raise FleetConfigError(
            Diagnostic(message=f"cannot read file: {exc.strerror or exc}", file=path)
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise FleetConfigError(
            Diagnostic(message="not valid UTF-8 text", file=path, line=line)
        ) from None
    return SecretsFile(path=path, exists=True, values=parse_secrets(text, path), mode=mode)


# --- editing ----------------------------------------------------------------


def check_name(name: str) -> str:
    """Validate a secret name given on the command line."""
    if not NAME_RE.match(name):
        raise FleetConfigError(
            Diagnostic(
                message=f"invalid secret name {name!r}: use letters, digits and _ . - "
                "(not starting with a digit)",
                field="NAME",
            )
        )
    return name


def format_value(value: str) -> str:
    """How a value is written: as is when safe (Docker reads it too), else double-quoted."""
    plain = (
        value == value.strip()
        and not any(ch in value for ch in "\n\r\t\"'\\#")
        and not value.startswith(("'", '"'))
    )
    if plain:
        return value
    escaped = (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def _defines(line: str, name: str) -> bool:
    match = _LINE_RE.match(line)
    return bool(match and match.group(1) == name and not line.strip().startswith("#"))


def _read_lines(path: Path) -> list[str]:
    try:
        text = read_capped(path).decode("utf-8-sig")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError:
        raise FleetConfigError(Diagnostic(message="not valid UTF-8 text", file=path)) from None
    parse_secrets(text, path)  # refuse to edit a file we cannot read back
    return split_lines(text)


def set_secret(path: Path, name: str, value: str) -> bool:
    """Set ``name`` in secrets.env (mode 600, atomic). True when it already existed.

    Comments and other lines are kept; the last definition of ``name`` is
    replaced in place and earlier duplicates removed.
    """
    check_name(name)
    lines = _read_lines(path)
    line = f"{name}={format_value(value)}"
    hits = [i for i, text in enumerate(lines) if _defines(text, name)]
    if hits:
        lines[hits[-1]] = line
        for i in reversed(hits[:-1]):
            del lines[i]
    else:
        lines.append(line)
    atomic_write(path, "\n".join(lines) + "\n", mode=SECRETS_MODE)
    return bool(hits)


def remove_secret(path: Path, name: str) -> bool:
    """Remove every definition of ``name``; False when it was not there."""
    check_name(name)
    lines = _read_lines(path)
    kept = [text for text in lines if not _defines(text, name)]
    if len(kept) == len(lines):
        return False
    atomic_write(path, "\n".join(kept) + ("\n" if kept else ""), mode=SECRETS_MODE)
    return True


def secret_names(path: Path) -> list[str]:
    """The names secrets.env defines, sorted (read even when its mode is loose: names only)."""
    return sorted(parse_secrets("\n".join(_read_lines(path)), path))
