"""The official Python `pusher` server library against hubcast.

Run by tests/pusher.rs with HUBCAST_URLS (comma-separated, one per node):
triggers to several channels and batches land as durable, ordered events
in the channels' rooms (read back through hubcast's own history API);
channel info, users and terminate_connections answer as Pusher's do; a
wrong secret and a stale timestamp are refused; webhooks signed by hubcast
validate with the library's `validate_webhook`.
"""

import json
import os
import random
import string
import sys
import urllib.request

import pusher
from pusher.errors import PusherBadAuth, PusherBadRequest, PusherError

URLS = [u for u in os.environ["HUBCAST_URLS"].split(",") if u]
APP_ID, KEY, SECRET = "123", "key1", "secret1"


def node(i=0):
    host, port = URLS[i % len(URLS)].removeprefix("http://").split(":")
    return host, int(port)


def client(i=0, secret=SECRET, app_id=APP_ID):
    host, port = node(i)
    return pusher.Pusher(app_id=app_id, key=KEY, secret=secret, host=host, port=port, ssl=False, timeout=10)


def unique(name):
    return name + "-py-" + "".join(random.choices(string.ascii_lowercase, k=8))


def history(channel):
    room = "pusher:%s:%s" % (APP_ID, channel.replace(",", ":2C").replace(";", ":3B"))
    with urllib.request.urlopen("%s/v1/rooms/%s/events?after=0" % (URLS[0], room), timeout=10) as r:
        return json.load(r)


def main():
    a, b = unique("news"), unique("odd,name;here")
    result = client(1).trigger([a, b], "headline", {"text": "hi"})
    assert result == {}, result
    for channel in (a, b):
        events = history(channel)["events"]
        assert [e["seq"] for e in events] == [1], events
        assert events[0]["data"]["event"] == "headline", events
        assert json.loads(events[0]["data"]["data"]) == {"text": "hi"}, events

    c = unique("batch")
    client().trigger_batch([
        {"channel": c, "name": "tick", "data": {"n": 1}},
        {"channel": c, "name": "tick", "data": {"n": 2}, "socket_id": "123.456"},
    ])
    events = history(c)["events"]
    assert [json.loads(e["data"]["data"])["n"] for e in events] == [1, 2], events
    assert events[1]["data"]["socket_id"] == "123.456", events

    info = client().channel_info(c, ["subscription_count"])
    assert info == {"occupied": False, "subscription_count": 0}, info
    channels = client().channels_info(prefix_filter="presence-", attributes=["user_count"])
    assert "channels" in channels, channels
    presence = unique("presence-empty")
    assert client().users_info(presence) == {"users": []}
    assert client().terminate_user_connections("nobody") == {}

    try:
        client(secret="wrong").trigger(c, "x", {})
        raise AssertionError("a wrong secret was accepted")
    except PusherBadAuth:
        pass
    try:
        client().channel_info(c, ["user_count"])
        raise AssertionError("user_count of a channel without presence was accepted")
    except PusherBadRequest:
        pass
    try:
        client(app_id="999").trigger(c, "x", {})
        raise AssertionError("an unknown app was accepted")
    except PusherError:
        pass

    receiver = os.environ.get("WEBHOOK_RECEIVER")
    if receiver:
        # The receiver keeps the raw deliveries too: validate one with the library.
        with urllib.request.urlopen(receiver + "/raw", timeout=10) as r:
            raw = json.load(r)
        if raw:
            delivery = raw[0]
            body = client().validate_webhook(KEY, delivery["signature"], delivery["body"])
            assert body is not None and "events" in body, delivery
    print("python pusher library: ok")


if __name__ == "__main__":
    try:
        main()
    except Exception as err:  # noqa: BLE001 - report and fail the process
        print("FAILED: %r" % (err,), file=sys.stderr)
        raise
