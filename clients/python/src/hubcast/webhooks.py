"""Verifying (and signing) webhooks per the Standard Webhooks specification.

A webhook is an HTTP POST whose raw body is signed with a shared secret:

- ``webhook-id``: the message id (the same on every delivery attempt: use it
  to drop duplicates);
- ``webhook-timestamp``: Unix seconds when it was sent;
- ``webhook-signature``: one or more space-separated ``v1,<base64>``
  signatures, each the HMAC-SHA256 of ``"{id}.{timestamp}.{body}"`` under the
  secret (several while a secret is being rotated).

The secret is ``whsec_`` followed by the base64 of the key bytes. Verify
against the *raw* body bytes, before any JSON parsing: re-serialized JSON does
not have the same bytes.

hubcast sends webhooks in this format (``[[webhooks]]``, see docs/webhooks.md);
this module verifies them, and any other Standard Webhooks sender.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from datetime import timedelta
from typing import Any, Dict, Mapping, Optional, Union

from .errors import WebhookVerificationError

SECRET_PREFIX = "whsec_"
#: How far a timestamp may be from now, either way (seconds).
DEFAULT_TOLERANCE = 5 * 60

Body = Union[bytes, bytearray, memoryview, str]


def _header(headers: Mapping[str, str], name: str) -> Optional[str]:
    value = headers.get(name)
    if value is not None:
        return value
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _bytes(body: Body) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


class Webhook:
    """A webhook secret: ``Webhook("whsec_…")`` (a bare base64 string or the raw
    key bytes work too).

    >>> wh = Webhook("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    >>> payload = wh.verify(request_body, request_headers)   # raises if forged
    """

    def __init__(self, secret: Union[str, bytes]) -> None:
        if isinstance(secret, (bytes, bytearray)):
            key = bytes(secret)
        else:
            text = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
            try:
                key = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("webhook secret: expected whsec_ followed by base64") from None
        if not key:
            raise ValueError("webhook secret is empty")
        self._key = key

    @staticmethod
    def generate_secret(nbytes: int = 32) -> str:
        """A new random secret, ``whsec_`` + base64 of ``nbytes`` random bytes."""
        return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(nbytes)).decode()

    def signature(self, msg_id: str, timestamp: int, body: Body) -> str:
        """The ``v1,<base64>`` signature of a message."""
        signed = b"%s.%d.%s" % (msg_id.encode("utf-8"), timestamp, _bytes(body))
        mac = hmac.new(self._key, signed, hashlib.sha256).digest()
        return "v1," + base64.b64encode(mac).decode()

    def sign(self, body: Body, *, msg_id: Optional[str] = None, timestamp: Optional[int] = None) -> Dict[str, str]:
        """The three headers of a webhook carrying ``body`` (for senders, and
        for testing receivers). ``msg_id`` defaults to a random ``msg_…`` id,
        ``timestamp`` to now."""
        msg_id = msg_id if msg_id is not None else "msg_" + secrets.token_hex(12)
        timestamp = int(time.time()) if timestamp is None else timestamp
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": self.signature(msg_id, timestamp, body),
        }

    def verify_signature(
        self,
        body: Body,
        headers: Mapping[str, str],
        *,
        tolerance: Union[int, float, timedelta] = DEFAULT_TOLERANCE,
        now: Optional[float] = None,
    ) -> None:
        """Raises :class:`~hubcast.WebhookVerificationError` unless one of the
        ``v1`` signatures in ``headers`` signs ``body`` and the timestamp is
        within ``tolerance`` of ``now`` (default: 5 minutes, either way).
        Header names are matched case-insensitively."""
        msg_id = _header(headers, "webhook-id")
        stamp = _header(headers, "webhook-timestamp")
        signatures = _header(headers, "webhook-signature")
        if not msg_id or not stamp or not signatures:
            raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header")
        stamp = stamp.strip()
        if not stamp.isdigit():
            raise WebhookVerificationError("webhook-timestamp is not an integer")
        timestamp = int(stamp)
        limit = tolerance.total_seconds() if isinstance(tolerance, timedelta) else float(tolerance)
        current = time.time() if now is None else now
        if timestamp < current - limit:
            raise WebhookVerificationError("message timestamp too old")
        if timestamp > current + limit:
            raise WebhookVerificationError("message timestamp too new")
        expected = self.signature(msg_id, timestamp, body).encode()
        found = False
        for candidate in signatures.split(" "):
            version, _, _value = candidate.partition(",")
            # Compare every v1 signature, in constant time, and stop at none:
            # the timing shows neither which one matched nor how much of it.
            if version == "v1" and hmac.compare_digest(candidate.encode(), expected):
                found = True
        if not found:
            raise WebhookVerificationError("no matching signature")

    def verify(
        self,
        body: Body,
        headers: Mapping[str, str],
        *,
        tolerance: Union[int, float, timedelta] = DEFAULT_TOLERANCE,
        now: Optional[float] = None,
    ) -> Any:
        """Like :meth:`verify_signature`, then returns the body parsed as JSON."""
        self.verify_signature(body, headers, tolerance=tolerance, now=now)
        try:
            return json.loads(_bytes(body))
        except ValueError:
            raise WebhookVerificationError("the signed body is not JSON") from None
