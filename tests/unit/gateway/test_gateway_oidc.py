"""OIDC: JWTs checked against a JWKS (file or URL) with a locally generated key."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from gateway_support import JwksServer
from jwt.algorithms import RSAAlgorithm
from mcp_fleet.errors import FleetConfigError
from mcp_fleet.gateway.identity import AuthError
from mcp_fleet.gateway.oidc import JwksSource, OidcValidator, load_oidc_config

ISSUER = "https://idp.example.test/"
AUDIENCE = "mcp-fleet"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    data: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**data, "kid": kid, "use": "sig", "alg": "RS256"}


def sign(key: rsa.RSAPrivateKey, kid: str, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, **claims}
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return new_key()


def write_config(tmp_path: Path, key: rsa.RSAPrivateKey, extra: str = "") -> Path:
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk(key, "k1")]}))
    path = tmp_path / "oidc.yaml"
    path.write_text(
        f"issuer: {ISSUER}\naudience: {AUDIENCE}\njwks_file: jwks.json\n"
        "identity_claim: email\ngroups_claim: groups\n"
        "identities:\n  alice@example.test: ['*']\n"
        "groups:\n  readers: ['time:get_current_time']\n" + extra
    )
    return path


async def test_valid_jwt_maps_to_its_allow_list(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    validator = OidcValidator(load_oidc_config(write_config(tmp_path, key)))
    identity, expires = await validator.verify(sign(key, "k1", email="alice@example.test"))
    assert identity.label == "oidc:alice@example.test" and identity.allows("any", "tool")
    assert expires > time.time()
    bob, _ = await validator.verify(sign(key, "k1", email="bob@example.test", groups=["readers"]))
    assert bob.allows("time", "get_current_time") and not bob.allows("time", "convert_time")


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"aud": "someone-else"}, "audience"),
        ({"iss": "https://evil.example/"}, "issuer"),
        ({"exp": None}, "'exp'"),
        ({"email": None}, "identity claim"),
    ],
)
async def test_invalid_claims_are_refused_with_the_reason(
    tmp_path: Path, key: rsa.RSAPrivateKey, claims: dict[str, Any], message: str
) -> None:
    validator = OidcValidator(load_oidc_config(write_config(tmp_path, key)))
    token = sign(key, "k1", **{"email": "alice@example.test", **claims})
    with pytest.raises(AuthError, match=message) as err:
        await validator.verify(token)
    assert err.value.status == 401


async def test_forged_tokens_are_refused(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    validator = OidcValidator(load_oidc_config(write_config(tmp_path, key)))
    other = new_key()
    with pytest.raises(AuthError, match="signature"):
        await validator.verify(sign(other, "k1", email="alice@example.test"))
    unsigned = jwt.encode(
        {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "exp": int(time.time()) + 60,
            "email": "alice@example.test",
        },
        key=None,
        algorithm="none",
    )
    with pytest.raises(AuthError, match="algorithm 'none'"):
        await validator.verify(unsigned)
    with pytest.raises(AuthError, match="unknown key"):
        await validator.verify(sign(key, "k9", email="alice@example.test"))
    with pytest.raises(AuthError, match="malformed"):
        await validator.verify("not-a-jwt")


async def test_unmapped_identity_is_forbidden_unless_a_default_exists(
    tmp_path: Path, key: rsa.RSAPrivateKey
) -> None:
    validator = OidcValidator(load_oidc_config(write_config(tmp_path, key)))
    with pytest.raises(AuthError, match="no access") as err:
        await validator.verify(sign(key, "k1", email="mallory@example.test"))
    assert err.value.status == 403
    with_default = OidcValidator(load_oidc_config(write_config(tmp_path, key, "default: [time]\n")))
    identity, _ = await with_default.verify(sign(key, "k1", email="mallory@example.test"))
    assert identity.allows("time", "x") and not identity.allows("github", "x")


def test_config_errors_name_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "oidc.yaml"
    path.write_text(
        "issuer: x\naudience: a\njwks_url: http://idp.example.test/jwks\n"
        "algorithms: [HS256]\nidentities:\n  alice: ['bad pattern!']\n"
    )
    with pytest.raises(FleetConfigError) as err:
        load_oidc_config(path)
    text = str(err.value)
    assert "oidc.yaml:3: jwks_url: must be an https:// URL" in text
    assert "oidc.yaml:4: algorithms" in text
    assert "oidc.yaml:6: identities.alice" in text


async def test_jwks_url_is_cached_and_refetched_on_key_rotation(
    tmp_path: Path, key: rsa.RSAPrivateKey, jwks_server: JwksServer
) -> None:
    jwks_server.doc = {"keys": [jwk(key, "k1")]}
    path = tmp_path / "oidc.yaml"
    path.write_text(
        f"issuer: {ISSUER}\naudience: {AUDIENCE}\njwks_url: {jwks_server.url}\n"
        "identities:\n  alice: ['*']\n"
    )
    now = [1000.0]
    source = JwksSource(url=jwks_server.url, min_refresh_seconds=30, clock=lambda: now[0])
    validator = OidcValidator(load_oidc_config(path), jwks=source)
    try:
        await validator.verify(sign(key, "k1", sub="alice"))
        await validator.verify(sign(key, "k1", sub="alice", jti="2"))
        assert jwks_server.hits == 1, "keys are cached"
        rotated = new_key()
        jwks_server.doc = {"keys": [jwk(key, "k1"), jwk(rotated, "k2")]}
        now[0] += 31
        identity, _ = await validator.verify(sign(rotated, "k2", sub="alice"))
        assert identity.name == "alice" and jwks_server.hits == 2
        with pytest.raises(AuthError, match="unknown key"):
            await validator.verify(sign(rotated, "k3", sub="alice"))
        assert jwks_server.hits == 2, "unknown kids do not refetch more than once per interval"
    finally:
        await validator.aclose()
