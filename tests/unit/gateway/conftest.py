"""Fixtures of the gateway tests (helpers live in gateway_support)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gateway_support import JwksServer


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    """A JWKS endpoint on 127.0.0.1 whose keys a test can rotate."""
    server = JwksServer()
    yield server
    server.close()
