"""The audit log: one JSON line per call, no argument values unless asked, never a secret."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from gateway_support import private_metrics
from mcp_fleet.gateway.audit import AuditLog, AuditSettings
from mcp_fleet.gateway.guard import CallGuard, CallTicket
from mcp_fleet.gateway.identity import AllowList, Identity
from mcp_fleet.gateway.limits import Limiter, LimitSettings
from mcp_fleet.logsetup import SecretRedactor

SECRET = "sk-live-4f9a8b7c6d5e"  # a value secrets.env holds
PASSWORD = "correct-horse-battery"  # a value under a secret-named key
BOB = Identity("bob", "token", AllowList.parse(["fetch"]))


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def guard_with(audit: AuditLog) -> CallGuard:
    return CallGuard(metrics=private_metrics(), limiter=Limiter(LimitSettings()), audit=audit)


def run_calls(audit: AuditLog) -> None:
    guard = guard_with(audit)
    args = {"url": f"https://api.example/?key={SECRET}", "password": PASSWORD, "n": 3}
    ok = guard.begin(BOB, "sess-1", "fetch", "fetch", request_bytes=120, arguments=args)
    assert isinstance(ok, CallTicket)
    ok.finish(outcome="ok", response_bytes=2048)
    failed = guard.begin(BOB, "sess-1", "fetch", "fetch", arguments=args)
    assert isinstance(failed, CallTicket)
    failed.finish(outcome="error", error=f"upstream said: bad key {SECRET}")
    refused = guard.begin(BOB, "sess-1", "github", "create_issue", arguments=args)
    assert isinstance(refused, dict)


@pytest.fixture
def redactor() -> SecretRedactor:
    r = SecretRedactor()
    r.set_secrets([SECRET])
    return r


def test_one_line_per_call_with_the_documented_fields(
    tmp_path: Path, redactor: SecretRedactor
) -> None:
    path = tmp_path / "logs" / "audit.jsonl"
    audit = AuditLog(AuditSettings(destination=path), secrets=redactor)
    run_calls(audit)
    audit.close()
    entries = lines(path)
    assert [e["outcome"] for e in entries] == ["ok", "error", "forbidden"]
    first = entries[0]
    assert list(first) == [
        "time", "identity", "session", "method", "server", "tool",
        "duration_ms", "outcome", "request_bytes", "response_bytes",
    ]  # fmt: skip
    assert first["identity"] == "token:bob" and first["session"] == "sess-1"
    assert first["server"] == "fetch" and first["tool"] == "fetch"
    assert first["request_bytes"] == 120 and first["response_bytes"] == 2048
    assert isinstance(first["duration_ms"], float) and str(first["time"]).endswith("Z")
    assert entries[2]["server"] == "github" and entries[2]["tool"] == "create_issue"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert SECRET not in text and PASSWORD not in text
    assert "arguments" not in text, "argument values are not logged by default"


def test_arguments_when_asked_are_redacted(tmp_path: Path, redactor: SecretRedactor) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(AuditSettings(destination=path, log_arguments=True), secrets=redactor)
    run_calls(audit)
    audit.close()
    entries = lines(path)
    assert entries[0]["arguments"] == {
        "url": "https://api.example/?key=***",
        "password": "***",
        "n": 3,
    }
    assert entries[1]["error"] == "upstream said: bad key ***"
    text = path.read_text()
    assert SECRET not in text and PASSWORD not in text


def test_audit_to_stdout(capsys: pytest.CaptureFixture[str], redactor: SecretRedactor) -> None:
    audit = AuditLog(AuditSettings(destination="stdout"), secrets=redactor)
    run_calls(audit)
    audit.close()
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 3 and SECRET not in out


def test_rotation_keeps_generations_private(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(AuditSettings(destination=path, max_bytes=600, backup_count=2))
    guard = guard_with(audit)
    for _ in range(20):
        ticket = guard.begin(BOB, "s", "fetch", "fetch")
        assert isinstance(ticket, CallTicket)
        ticket.finish(outcome="ok")
    audit.close()
    files = sorted(tmp_path.glob("audit.jsonl*"))
    assert [f.name for f in files] == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        assert all(json.loads(line)["server"] == "fetch" for line in f.read_text().splitlines())


def test_a_full_queue_drops_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(AuditSettings(destination=path, queue_size=1))
    assert audit._handler is not None
    audit._handler.acquire()  # the disk stalls: the writer blocks on its first line
    try:
        for _ in range(6):
            audit.record(
                identity="x", session=None, server="s", tool="t", duration_ms=1, outcome="ok"
            )
    finally:
        audit._handler.release()
    assert audit.dropped >= 4
    audit.flush()
    audit.close()
    entries = lines(path)
    written = [e for e in entries if "event" not in e]
    reported = sum(int(e["count"]) for e in entries if e.get("event") == "audit_dropped")
    assert len(written) + reported == 6
    assert reported == audit.dropped
