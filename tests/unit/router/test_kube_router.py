"""``router --kubernetes`` settings: namespaces, the token from the environment, the session key."""

from __future__ import annotations

import stat

import pytest
from mcp_fleet.gateway.tokens import TokenVerifier
from mcp_fleet.sources.kube_router import (
    KubeRouterError,
    env_tokens_file,
    resolve_namespaces,
    session_signer,
)


def test_namespaces_given_all_or_the_pods_own(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_namespaces(["a", "b", "a"], all_namespaces=False) == ("a", "b")
    assert resolve_namespaces(None, all_namespaces=True) is None
    with pytest.raises(KubeRouterError, match="exclude each other"):
        resolve_namespaces(["a"], all_namespaces=True)
    monkeypatch.setenv("POD_NAMESPACE", "mcp")
    assert resolve_namespaces([], all_namespaces=False) == ("mcp",)


def test_the_token_is_hashed_into_a_private_file_and_removed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = "s3cret-token-of-the-chart-0123456789"
    monkeypatch.setenv("MCP_FLEET_ROUTER_TOKEN", token)
    with env_tokens_file() as path:
        assert path is not None
        assert token not in path.read_text()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        verifier = TokenVerifier(path)
        assert verifier.configured
        identity = verifier.verify(token)
        assert identity is not None and identity.name == "router-token"
        assert verifier.verify(token + "x") is None
    assert not path.exists() and not path.parent.exists()
    monkeypatch.setenv("MCP_FLEET_ROUTER_TOKEN", "short")
    with pytest.raises(KubeRouterError, match="at least 16"), env_tokens_file():
        pass
    monkeypatch.delenv("MCP_FLEET_ROUTER_TOKEN")
    with env_tokens_file() as none:
        assert none is None


def test_session_key_from_a_chosen_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEAM_SESSION_KEY", raising=False)
    assert session_signer("TEAM_SESSION_KEY") is None
    monkeypatch.setenv("TEAM_SESSION_KEY", "tiny")
    with pytest.raises(KubeRouterError, match=r"\$TEAM_SESSION_KEY"):
        session_signer("TEAM_SESSION_KEY")
    monkeypatch.setenv("TEAM_SESSION_KEY", "k" * 32)
    assert session_signer("TEAM_SESSION_KEY") is not None
