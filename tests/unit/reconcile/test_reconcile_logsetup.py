"""Structured log lines (text and JSON) and the secret redaction filter (escaped forms too)."""

from __future__ import annotations

import base64
import io
import json
import logging
import urllib.parse

import pytest
from mcp_fleet import logsetup
from mcp_fleet.logsetup import SecretRedactor, log_event, redactor, secret_forms, setup_logging


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


# -- escaped forms -------------------------------------------------------------------------

#: Quotes, a backslash, a space, a slash, a plus, non-ASCII: every escaping changes it.
ODD = 'pa"ss\\wo rd/+?é' + "'x"


def spellings(value: str) -> dict[str, str]:
    """How a server may print ``value`` inside other text, by name."""
    raw = value.encode()
    return {
        "json": json.dumps({"token": value}),
        "json unicode": json.dumps({"token": value}, ensure_ascii=False),
        "repr": repr({"token": value}),
        "repr bytes": repr(raw),
        "quote": "https://h/cb?t=" + urllib.parse.quote(value),
        "quote safe none": urllib.parse.quote(value, safe=""),
        "quote_plus": urllib.parse.urlencode({"t": value}),
        "base64": base64.b64encode(raw).decode(),
        "base64 unpadded": base64.b64encode(raw).decode().rstrip("="),
        "urlsafe base64": base64.urlsafe_b64encode(raw).decode(),
        "urlsafe unpadded": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "basic auth": "Authorization: Basic " + base64.b64encode(b"user:" + raw).decode(),
        "after two bytes": base64.b64encode(b"ab" + raw + b"cd").decode(),
    }


@pytest.mark.parametrize("value", [ODD, "plain-secret-value-1234", "tok\nen\t\\u0041\x00end"])
def test_escaped_forms_of_a_secret_are_masked(value: str) -> None:
    masker = SecretRedactor()
    masker.set_secrets([value])
    for name, text in spellings(value).items():
        out = masker.redact(text)
        assert "***" in out, f"{name}: {text!r} -> {out!r}"
        for form in secret_forms(value):
            assert form not in out, f"{name}: {form!r} left in {out!r}"


def test_each_escaped_form_is_in_the_set() -> None:
    forms = secret_forms(ODD)
    raw = ODD.encode()
    expected = {
        ODD,
        json.dumps(ODD)[1:-1],
        json.dumps(ODD, ensure_ascii=False)[1:-1],
        repr(ODD)[1:-1],
        urllib.parse.quote(ODD),
        urllib.parse.quote(ODD, safe=""),
        urllib.parse.quote_plus(ODD),
        base64.b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }
    assert expected <= forms


def test_forms_are_built_once_per_secret_set_not_per_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    real = logsetup.secret_forms

    def counting(value: str) -> frozenset[str]:
        calls.append(value)
        return real(value)

    monkeypatch.setattr(logsetup, "secret_forms", counting)
    masker = SecretRedactor()
    masker.set_secrets(["first-secret", "second-secret"])
    assert sorted(calls) == ["first-secret", "second-secret"]
    for _ in range(1000):
        masker.redact("a line with first-secret and " + json.dumps("second-secret"))
    assert len(calls) == 2
    assert masker.forms == tuple(sorted(masker.forms, key=lambda f: (-len(f), f))), (
        "longest first, so a form containing another is masked whole"
    )


def test_short_values_and_short_encodings_are_left_alone() -> None:
    masker = SecretRedactor()
    masker.set_secrets(["abc", "wxyz"])
    assert masker.redact("abc " + base64.b64encode(b"abc").decode()) == "abc YWJj"
    # 4 characters are masked as they are, but 5 characters of base64 would match by chance
    assert all(len(f) >= 6 for f in secret_forms("wxyz") if f != "wxyz")
    assert masker.redact("wxyz d3h5eg== d3h5") == "*** *** d3h5"


def test_a_document_is_redacted_in_every_string() -> None:
    masker = SecretRedactor()
    masker.set_secrets([ODD])
    doc = {"a": [json.dumps(ODD), {"b": (urllib.parse.quote(ODD),)}], "n": 3, "none": None}
    assert masker.redact_document(doc) == {"a": ['"***"', {"b": ["***"]}], "n": 3, "none": None}
    assert json.dumps(ODD) in doc["a"], "the original is not changed"  # type: ignore[operator]
