"""Standard Webhooks verification: the specification's published example, and
round trips. (hubcast does not send webhooks yet.)"""

from __future__ import annotations

import base64

import pytest

import hubcast

# The example of the Standard Webhooks specification's reference test suite.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_PAYLOAD = '{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

SPEC_HEADERS = {
    "webhook-id": SPEC_ID,
    "webhook-timestamp": str(SPEC_TIMESTAMP),
    "webhook-signature": SPEC_SIGNATURE,
}


def test_the_specification_example_verifies() -> None:
    wh = hubcast.Webhook(SPEC_SECRET)
    assert wh.signature(SPEC_ID, SPEC_TIMESTAMP, SPEC_PAYLOAD) == SPEC_SIGNATURE
    assert wh.verify(SPEC_PAYLOAD, SPEC_HEADERS, now=SPEC_TIMESTAMP) == {"test": 2432232314}
    assert wh.verify(SPEC_PAYLOAD.encode(), SPEC_HEADERS, now=SPEC_TIMESTAMP + 299) == {"test": 2432232314}
    # The secret without its prefix, or as raw bytes, is the same key.
    raw = base64.b64decode(SPEC_SECRET[len("whsec_"):])
    for secret in (SPEC_SECRET[len("whsec_"):], raw):
        hubcast.Webhook(secret).verify_signature(SPEC_PAYLOAD, SPEC_HEADERS, now=SPEC_TIMESTAMP)


def test_header_names_are_case_insensitive() -> None:
    headers = {k.title(): v for k, v in SPEC_HEADERS.items()}  # Webhook-Id, …
    hubcast.Webhook(SPEC_SECRET).verify_signature(SPEC_PAYLOAD, headers, now=SPEC_TIMESTAMP)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"body": '{"test": 2432232315}'}, "no matching signature"),
        ({"webhook-id": "msg_other"}, "no matching signature"),
        ({"webhook-timestamp": str(SPEC_TIMESTAMP + 1)}, "no matching signature"),
        ({"webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="}, "no matching signature"),
        ({"webhook-signature": "v2," + SPEC_SIGNATURE[3:]}, "no matching signature"),
        ({"webhook-signature": SPEC_SIGNATURE[3:]}, "no matching signature"),
        ({"webhook-signature": ""}, "missing"),
        ({"webhook-id": None}, "missing"),
        ({"webhook-timestamp": "not-a-number"}, "not an integer"),
        ({"now": SPEC_TIMESTAMP + 301}, "too old"),
        ({"now": SPEC_TIMESTAMP - 301}, "too new"),
        ({"secret": "whsec_" + base64.b64encode(b"another key of some bytes").decode()}, "no matching signature"),
    ],
)
def test_anything_changed_is_refused(change: dict, message: str) -> None:  # type: ignore[type-arg]
    headers = dict(SPEC_HEADERS)
    body = change.pop("body", SPEC_PAYLOAD)
    now = change.pop("now", SPEC_TIMESTAMP)
    secret = change.pop("secret", SPEC_SECRET)
    for name, value in change.items():
        if value is None:
            del headers[name]
        else:
            headers[name] = value
    with pytest.raises(hubcast.WebhookVerificationError, match=message) as caught:
        hubcast.Webhook(secret).verify(body, headers, now=now)
    assert caught.value.code == "webhook_invalid"


def test_one_matching_signature_among_several_is_enough() -> None:
    wh = hubcast.Webhook(SPEC_SECRET)
    rotated = hubcast.Webhook(hubcast.Webhook.generate_secret()).signature(SPEC_ID, SPEC_TIMESTAMP, SPEC_PAYLOAD)
    for signatures in (
        f"{rotated} {SPEC_SIGNATURE}",
        f"{SPEC_SIGNATURE} {rotated}",
        f"v1a,c29tZSBlZDI1NTE5IHNpZ25hdHVyZQ== {SPEC_SIGNATURE}",  # other schemes are skipped
    ):
        headers = dict(SPEC_HEADERS, **{"webhook-signature": signatures})
        wh.verify_signature(SPEC_PAYLOAD, headers, now=SPEC_TIMESTAMP)
    with pytest.raises(hubcast.WebhookVerificationError):
        wh.verify_signature(SPEC_PAYLOAD, dict(SPEC_HEADERS, **{"webhook-signature": rotated}), now=SPEC_TIMESTAMP)


def test_round_trip_with_a_generated_secret() -> None:
    secret = hubcast.Webhook.generate_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    sender, receiver = hubcast.Webhook(secret), hubcast.Webhook(secret)
    body = b'{"type":"room.event","room":"market:42","seq":7,"data":{"yes":0.61}}'
    headers = sender.sign(body)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert receiver.verify(body, headers)["seq"] == 7  # now: the real clock
    headers = sender.sign(body, msg_id="msg_1", timestamp=1_700_000_000)
    assert receiver.verify(body, headers, now=1_700_000_000, tolerance=0)["room"] == "market:42"
    with pytest.raises(hubcast.WebhookVerificationError, match="too old"):
        receiver.verify(body, headers, now=1_700_000_001, tolerance=0)
    # A signed body that is not JSON verifies as a signature, not as a payload.
    headers = sender.sign(b"plain text")
    receiver.verify_signature(b"plain text", headers)
    with pytest.raises(hubcast.WebhookVerificationError, match="not JSON"):
        receiver.verify(b"plain text", headers)


def test_bad_secrets_are_refused() -> None:
    with pytest.raises(ValueError):
        hubcast.Webhook("whsec_not base64!")
    with pytest.raises(ValueError):
        hubcast.Webhook(b"")
