"""JWTs minted here, checked by the real server (HTTP); the subscribe side is
in test_subscriber.py. Plus API keys."""

from __future__ import annotations

import time
from datetime import timedelta

import jwt
import pytest

import hubcast
from conftest import API_KEY, JWT_KID_SECRET, JWT_SECRET, ROOMS_KEY, Server


def test_minted_claims_and_header() -> None:
    token = hubcast.mint_token(
        JWT_SECRET, sub="user-1", subscribe=["market:*", "user:1"], publish=["chat:1"],
        presence=["chat:*"], info={"name": "Ada"}, ttl=timedelta(minutes=5), now=1_700_000_000,
    )
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256" and "kid" not in header
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False})
    assert claims == {
        "iat": 1_700_000_000, "exp": 1_700_000_300, "sub": "user-1",
        "subscribe": ["market:*", "user:1"], "publish": ["chat:1"], "presence": ["chat:*"],
        "info": {"name": "Ada"},
    }
    with_kid = hubcast.mint_token(JWT_KID_SECRET, kid="2026-11", audience="hubcast", issuer="https://app.example",
                                  not_before=0, claims={"tenant": "t1"})
    assert jwt.get_unverified_header(with_kid)["kid"] == "2026-11"
    decoded = hubcast.token_claims(with_kid)
    assert decoded["aud"] == "hubcast" and decoded["iss"] == "https://app.example"
    assert decoded["nbf"] == decoded["iat"] and decoded["tenant"] == "t1"
    assert decoded["exp"] - decoded["iat"] == 600  # the default ttl
    assert "subscribe" not in decoded  # no empty grants


def test_minting_refuses_what_the_server_would_never_accept() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        hubcast.mint_token("too-short")
    with pytest.raises(ValueError, match="pattern"):
        hubcast.mint_token(JWT_SECRET, subscribe=["bad pattern"])
    with pytest.raises(TypeError):
        hubcast.mint_token(JWT_SECRET, subscribe="market:*")  # a str is iterable: refused at run time
    with pytest.raises(ValueError, match="algorithm"):
        hubcast.mint_token(JWT_SECRET, algorithm="none")
    with pytest.raises(ValueError, match="ttl"):
        hubcast.mint_token(JWT_SECRET, ttl=0)


def test_the_server_accepts_minted_tokens_within_their_grants(auth_server: Server) -> None:
    token = hubcast.mint_token(JWT_SECRET, sub="u1", subscribe=["market:*"], publish=["market:1"])
    with hubcast.Client(auth_server.url, api_key=API_KEY) as app:
        app.publish("market:1", "seeded")
        app.publish("secret:1", "hidden")
    with hubcast.Client(auth_server.url, token=token) as client:
        assert client.publish("market:1", {"by": "token"}).seq == 2
        assert [e.data for e in client.history("market:1")] == ["seeded", {"by": "token"}]
        assert client.room_stats("market:1").head == 2
        with pytest.raises(hubcast.ForbiddenError) as read:
            list(client.history("secret:1"))
        assert (read.value.status, read.value.code) == (403, "forbidden")
        with pytest.raises(hubcast.ForbiddenError):
            client.publish("market:2", "no publish grant")
        with pytest.raises(hubcast.ForbiddenError):
            client.room_stats("secret:1")


def test_the_server_checks_kid_audience_issuer_and_expiry(auth_server: Server) -> None:
    good = hubcast.mint_token(JWT_KID_SECRET, kid="2026-11", audience="hubcast", issuer="https://app.example",
                              subscribe=["*"])
    with hubcast.Client(auth_server.url, token=good) as client:
        assert client.room_stats("any:room").head == 0
    wrong_audience = hubcast.mint_token(JWT_KID_SECRET, kid="2026-11", audience="other",
                                        issuer="https://app.example", subscribe=["*"])
    unknown_kid = hubcast.mint_token(JWT_SECRET, kid="nope", subscribe=["*"])
    wrong_secret = hubcast.mint_token("x" * 40, subscribe=["*"])
    for bad in (wrong_audience, unknown_kid, wrong_secret):
        with hubcast.Client(auth_server.url, token=bad) as client:
            with pytest.raises(hubcast.UnauthenticatedError) as caught:
                client.room_stats("any:room")
            assert (caught.value.status, caught.value.code) == (401, "unauthenticated")
    # Expired beyond the server's 5 s leeway.
    expired = hubcast.mint_token(JWT_SECRET, subscribe=["*"], ttl=60, now=time.time() - 120)
    with hubcast.Client(auth_server.url, token=expired) as client:
        with pytest.raises(hubcast.TokenExpiredError) as caught_expired:
            client.room_stats("any:room")
    assert (caught_expired.value.status, caught_expired.value.code) == (401, "token_expired")
    assert isinstance(caught_expired.value, hubcast.UnauthenticatedError)


def test_api_keys(auth_server: Server) -> None:
    with hubcast.Client(auth_server.url) as anonymous:
        with pytest.raises(hubcast.UnauthenticatedError):
            anonymous.publish("market:1", 1)
    with hubcast.Client(auth_server.url, api_key=ROOMS_KEY) as limited:
        assert limited.publish("market:1", 1).seq == 1
        with pytest.raises(hubcast.ForbiddenError):
            limited.publish("chat:1", 1)
    with hubcast.Client(auth_server.url, api_key="not-a-key-0123456789") as wrong:
        with pytest.raises(hubcast.UnauthenticatedError):
            wrong.room_stats("market:1")
    with pytest.raises(ValueError):
        hubcast.Client(auth_server.url, api_key=API_KEY, token="a.b.c")
