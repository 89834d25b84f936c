"""Tokens: hashed at rest, mode 600, followed by a running verifier, revocable."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from mcp_fleet.errors import FleetConfigError
from mcp_fleet.gateway.identity import AllowList
from mcp_fleet.gateway.tokens import (
    TOKEN_PREFIX,
    TokenError,
    TokenVerifier,
    create_token,
    load_tokens,
    revoke_token,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_is_stored_as_a_hash_only_with_mode_600(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    token, record = create_token(path, "alice", allow=AllowList.all())
    assert token.startswith(TOKEN_PREFIX) and len(token) == len(TOKEN_PREFIX) + 43
    text = path.read_text()
    assert token not in text
    assert token[len(TOKEN_PREFIX) :] not in text
    assert hashlib.sha256(token.encode()).hexdigest() in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert record.name == "alice" and record.created.endswith("Z")
    assert load_tokens(path)["alice"].digest == record.digest


def test_two_tokens_differ_and_names_are_unique(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    first, _ = create_token(path, "alice", allow=AllowList.all())
    second, _ = create_token(path, "bob", allow=AllowList.parse(["time"]))
    assert first != second
    with pytest.raises(TokenError, match="exists"):
        create_token(path, "alice", allow=AllowList.all())
    with pytest.raises(TokenError, match="invalid token name"):
        create_token(path, "../etc", allow=AllowList.all())
    assert sorted(load_tokens(path)) == ["alice", "bob"]
    assert load_tokens(path)["bob"].allow.patterns() == ["time"]


def test_verifier_accepts_the_token_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    token, _ = create_token(path, "ci", allow=AllowList.parse(["time:get_current_time"]))
    verifier = TokenVerifier(path)
    identity = verifier.verify(token)
    assert identity is not None and identity.label == "token:ci"
    assert identity.allows("time", "get_current_time")
    assert not identity.allows("time", "convert_time")
    assert verifier.verify(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert verifier.verify("") is None
    assert verifier.verify("x" * 10_000) is None


def test_create_and_revoke_reach_a_running_verifier_after_the_check_interval(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tokens.yaml"
    clock = Clock()
    verifier = TokenVerifier(path, clock=clock)
    assert not verifier.configured
    token, _ = create_token(path, "alice", allow=AllowList.all())
    clock.now += 0.5
    assert verifier.verify(token) is None, "the file is not stat'ed more than once a second"
    clock.now += 1.0
    assert verifier.verify(token) is not None
    assert verifier.configured
    assert revoke_token(path, "alice")
    assert not revoke_token(path, "alice")
    clock.now += 1.5
    assert verifier.verify(token) is None
    assert not verifier.configured


def test_broken_file_names_the_line_at_start_and_keeps_last_good_while_running(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tokens.yaml"
    token, _ = create_token(path, "alice", allow=AllowList.all())
    clock = Clock()
    verifier = TokenVerifier(path, clock=clock)
    good = path.read_text()
    path.write_text(good.replace("allow: ['*']", "allow: ['bad name!']"))
    clock.now += 2
    assert verifier.verify(token) is not None, "a broken file keeps the last good tokens"
    with pytest.raises(FleetConfigError) as err:
        TokenVerifier(path)
    text = str(err.value)
    assert "tokens.yaml:" in text and "tokens.alice.allow" in text and "bad name!" in text


def test_unknown_keys_and_bad_hashes_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(
        "version: 1\ntokens:\n  alice:\n    sha256: nothex\n    created: x\n    allow: ['*']\n"
    )
    with pytest.raises(FleetConfigError, match=r"tokens.yaml:4: tokens.alice.sha256"):
        load_tokens(path)
    path.write_text("version: 1\ntokens:\n  alice:\n    alow: ['*']\n")
    with pytest.raises(FleetConfigError, match="alow"):
        load_tokens(path)
