"""Minting JWTs for hubcast clients (browsers, users).

The server (``[[auth.jwt]]`` in its config, docs/security.md) verifies: the
header's ``kid`` picks the key and ``alg`` must be that key's; ``exp`` is
required; ``nbf`` is honoured; ``aud`` and ``iss`` are required when the key
names them. The grants are the claims ``subscribe``, ``publish`` and
``presence``: lists of room patterns where ``*`` matches any run of
characters (``market:*``). ``sub`` names the user; ``info`` is free-form data
shown in presence.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, Dict, Iterable, List, Mapping, Optional, Union

import jwt

from .types import check_pattern

#: Seconds, or a ``timedelta``.
Duration = Union[int, float, timedelta]

#: The smallest HS256 secret the server accepts (``auth.jwt`` refuses shorter ones).
MIN_HS256_SECRET_BYTES = 32

_ALGORITHMS = ("HS256", "RS256", "EdDSA")


def _seconds(value: Duration) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _patterns(name: str, patterns: Iterable[str]) -> List[str]:
    if isinstance(patterns, str):
        raise TypeError("%s: give a list of room patterns, not one string" % name)
    return [check_pattern(p) for p in patterns]


def mint_token(
    key: Union[str, bytes],
    *,
    sub: Optional[str] = None,
    subscribe: Iterable[str] = (),
    publish: Iterable[str] = (),
    presence: Iterable[str] = (),
    info: Any = None,
    ttl: Duration = 600,
    kid: Optional[str] = None,
    audience: Optional[str] = None,
    issuer: Optional[str] = None,
    not_before: Optional[Duration] = None,
    algorithm: str = "HS256",
    claims: Optional[Mapping[str, Any]] = None,
    now: Optional[float] = None,
) -> str:
    """Signs a token granting ``subscribe`` / ``publish`` / ``presence`` on
    these room patterns, valid for ``ttl`` (default 10 minutes: keep tokens
    short-lived, they cannot be revoked before ``exp``).

    ``key`` is the HS256 shared secret (at least 32 bytes, as the server
    requires) or, for ``RS256`` / ``EdDSA``, the PEM private key (those need
    ``pip install hubcast[crypto]``). ``kid``, ``audience`` and ``issuer`` must
    match the server's ``[[auth.jwt]]`` entry when it names them.
    ``not_before`` delays validity by that long (the ``nbf`` claim). ``claims``
    adds claims of your own; ``now`` (Unix seconds) is for tests.
    """
    if algorithm not in _ALGORITHMS:
        raise ValueError("algorithm must be one of %s (the server accepts no other)" % ", ".join(_ALGORITHMS))
    if algorithm == "HS256":
        raw = key.encode() if isinstance(key, str) else key
        if len(raw) < MIN_HS256_SECRET_BYTES:
            raise ValueError("an HS256 secret must be at least %d bytes (the server refuses shorter ones)" % MIN_HS256_SECRET_BYTES)
    lifetime = _seconds(ttl)
    if lifetime <= 0:
        raise ValueError("ttl must be positive")
    issued = int(time.time() if now is None else now)
    payload: Dict[str, Any] = {"iat": issued, "exp": issued + max(1, int(lifetime))}
    if not_before is not None:
        payload["nbf"] = issued + int(_seconds(not_before))
    if sub is not None:
        payload["sub"] = sub
    for name, patterns in (("subscribe", subscribe), ("publish", publish), ("presence", presence)):
        checked = _patterns(name, patterns)
        if checked:
            payload[name] = checked
    if info is not None:
        payload["info"] = info
    if audience is not None:
        payload["aud"] = audience
    if issuer is not None:
        payload["iss"] = issuer
    if claims:
        payload.update(claims)
    headers: Dict[str, Any] = {}
    if kid is not None:
        headers["kid"] = kid
    # Older PyJWT releases type the key as str only; str and bytes both work.
    signing_key: Any = key
    return jwt.encode(payload, signing_key, algorithm=algorithm, headers=headers or None)


def token_claims(token: str) -> Dict[str, Any]:
    """The claims of ``token`` *without verifying it*: for logging and tests,
    never for a decision."""
    claims: Dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims
