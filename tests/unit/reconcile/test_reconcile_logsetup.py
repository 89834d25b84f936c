"""Structured log lines (text and JSON) and the secret redaction filter."""

from __future__ import annotations

import io
import json
import logging

from mcp_fleet.logsetup import log_event, redactor, setup_logging


def capture(fmt: str) -> tuple[io.StringIO, logging.Handler]:
    out = io.StringIO()
    handler = setup_logging(fmt=fmt, stream=out)  # type: ignore[arg-type]
    return out, handler


def test_text_lines_carry_the_event_and_fields() -> None:
    out, handler = capture("text")
    try:
        log_event(logging.getLogger("mcp_fleet.test"), logging.INFO, "state", server="time",
                  to="Ready", reason="Initialized", message="two words")  # fmt: skip
    finally:
        logging.getLogger().removeHandler(handler)
    line = out.getvalue().strip()
    assert line.endswith(
        'INFO    state server=time to=Ready reason=Initialized message="two words"'
    )
    assert len(out.getvalue().splitlines()) == 1


def test_json_lines_are_one_object_each() -> None:
    out, handler = capture("json")
    try:
        log_event(logging.getLogger("mcp_fleet.test"), logging.WARNING, "server exited",
                  server="crash", exit_code=3)  # fmt: skip
    finally:
        logging.getLogger().removeHandler(handler)
    doc = json.loads(out.getvalue())
    assert {k: doc[k] for k in ("level", "event", "server", "exit_code")} == {
        "level": "warning", "event": "server exited", "server": "crash", "exit_code": 3,
    }  # fmt: skip


def test_known_secret_values_never_reach_the_output() -> None:
    out, handler = capture("json")
    redactor().set_secrets(["hunter2-very-secret", "abc"])
    try:
        log = logging.getLogger("mcp_fleet.test")
        log_event(log, logging.ERROR, "start failed", error="bad token hunter2-very-secret")
        log.error("plain %s message, abc stays", "hunter2-very-secret")
        try:
            raise ValueError("hunter2-very-secret")
        except ValueError:
            log.exception("boom")
    finally:
        redactor().set_secrets([])
        logging.getLogger().removeHandler(handler)
    text = out.getvalue()
    assert "hunter2-very-secret" not in text
    assert text.count("***") >= 3
    assert "abc stays" in text  # values shorter than 4 characters are not masked
