"""Atomic batches and ephemeral messages against the real server, sync and async."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Dict

import pytest
import websockets

import hubcast
from conftest import Server, ServerFactory


def test_a_batch_is_appended_in_request_order_across_rooms(server: Server) -> None:
    with hubcast.Client(server.url) as client:
        client.publish("market:btc", "before")
        receipts = client.publish_batch([
            hubcast.BatchEvent("market:btc", {"yes": 0.61}, expected_seq=1),
            ("portfolio:alice", {"btc": 3}),
            hubcast.BatchEvent("market:btc", {"yes": 0.62}, expected_seq=2),  # counts the batch's first event
        ])
        assert [(r.room, r.seq) for r in receipts] == [("market:btc", 2), ("portfolio:alice", 1), ("market:btc", 3)]
        assert not any(r.duplicate for r in receipts) and all(r.idempotency_key is None for r in receipts)
        assert receipts[0].epoch == receipts[2].epoch != receipts[1].epoch
        assert [e.data for e in client.history("market:btc")] == ["before", {"yes": 0.61}, {"yes": 0.62}]
        assert [e.data for e in client.history("portfolio:alice")] == [{"btc": 3}]


def test_a_retried_batch_gets_its_first_receipts(server: Server) -> None:
    batch = [("a:1", 1), ("b:1", 2)]
    with hubcast.Client(server.url) as client:
        first = client.publish_batch(batch, idempotency_key="trade-9")
        again = client.publish_batch(batch, idempotency_key="trade-9")
        assert [(r.room, r.seq, r.ts) for r in again] == [(r.room, r.seq, r.ts) for r in first]
        assert all(r.duplicate for r in again) and not any(r.duplicate for r in first)
        assert all(r.idempotency_key == "trade-9" for r in again)
        assert client.room_stats("a:1").head == 1 and client.room_stats("b:1").head == 1
        with pytest.raises(hubcast.IdempotencyMismatchError) as mismatch:
            client.publish_batch([("a:1", 1), ("b:1", 3)], idempotency_key="trade-9")
        assert (mismatch.value.status, mismatch.value.code) == (422, "idempotency_mismatch")
        # retries= without a key generates one for the whole batch.
        generated = client.publish_batch([("a:1", 4)], retries=2)
        assert generated[0].idempotency_key is not None and len(generated[0].idempotency_key) == 32


def test_a_batch_conflict_appends_nothing_anywhere(server: Server) -> None:
    with hubcast.Client(server.url) as client:
        first = client.publish("m:1", "x")
        with pytest.raises(hubcast.ConflictError) as caught:
            client.publish_batch([("p:1", "trade"), hubcast.BatchEvent("m:1", "quote", expected_seq=0)])
        err = caught.value
        assert (err.status, err.index, err.room, err.head, err.epoch) == (409, 1, "m:1", 1, first.epoch)
        assert client.room_stats("m:1").head == 1
        assert client.room_stats("p:1").head == 0  # the first event was not appended either


def test_a_batch_is_checked_before_sending(server: Server) -> None:
    with hubcast.Client(server.url) as client:
        with pytest.raises(ValueError):
            client.publish_batch([])
        with pytest.raises(hubcast.InvalidRoomError):
            client.publish_batch([("ok", 1), ("not ok", 2)])
        with pytest.raises(ValueError):
            client.publish_batch([hubcast.BatchEvent("r", 1, expected_seq=-1)])
        with pytest.raises(ValueError):
            client.publish_batch([("r", float("inf"))])
        with pytest.raises(ValueError):
            client.publish_batch(["r"])  # type: ignore[list-item]
        assert client.room_stats("ok").head == 0


def test_a_batch_needs_the_grant_on_every_room(auth_server: Server) -> None:
    # The `market-only` key may publish to market:* only: one other room refuses the whole batch.
    with hubcast.Client(auth_server.url, api_key="market-only-key-0123456789abcdef") as client:
        with pytest.raises(hubcast.ForbiddenError):
            client.publish_batch([("market:1", 1), ("other:1", 2)])
        assert [r.seq for r in client.publish_batch([("market:1", 1), ("market:2", 2)])] == [1, 1]
    with hubcast.Client(auth_server.url, api_key=auth_server.api_key) as admin:
        assert admin.room_stats("other:1").head == 0


EPHEMERAL_CONFIG = """
[[namespaces]]
prefix = "typing:"
ephemeral = "allowed"

[[namespaces]]
prefix = "cursor:"
ephemeral = "only"
"""


async def _next_frame(ws: Any, kind: str) -> Dict[str, Any]:
    while True:
        frame: Dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame["type"] == kind:
            return frame


@pytest.mark.asyncio
async def test_ephemeral_messages_reach_subscribers_and_are_not_stored(hubcast_server: ServerFactory) -> None:
    server = hubcast_server(EPHEMERAL_CONFIG)
    ws_url = server.url.replace("http://", "ws://")
    async with websockets.connect(f"{ws_url}/v1/rooms/typing:1/ws") as ws, hubcast.AsyncClient(server.url) as client:
        await _next_frame(ws, "caught_up")
        receipt = await client.publish_ephemeral("typing:1", {"user": "alice"})
        frame = await _next_frame(ws, "ephemeral")
        assert receipt.room == "typing:1" and receipt.ts > 1_600_000_000_000
        assert (frame["room"], frame["data"], frame["ts"]) == ("typing:1", {"user": "alice"}, receipt.ts)
        assert (await client.room_stats("typing:1")).head == 0
        # A stored publish to the same room still works.
        assert (await client.publish("typing:1", "stored")).seq == 1
        # Not allowed in a room whose namespace does not take them.
        with pytest.raises(hubcast.ForbiddenError) as refused:
            await client.publish_ephemeral("chat:1", "x")
        assert (refused.value.status, refused.value.code) == (403, "ephemeral_not_allowed")
        # An `ephemeral = "only"` room takes a plain publish as ephemeral: publish() says so.
        with pytest.raises(hubcast.ApiError) as only:
            await client.publish("cursor:1", {"x": 1})
        assert (only.value.status, only.value.code) == (202, "ephemeral_room")
        assert (await client.publish_ephemeral("cursor:1", {"x": 2})).room == "cursor:1"
        # Batches, async.
        receipts = await client.publish_batch([("chat:1", 1), ("chat:2", 2)], idempotency_key="k")
        again = await client.publish_batch([("chat:1", 1), ("chat:2", 2)], idempotency_key="k")
        assert [r.seq for r in receipts] == [r.seq for r in again] == [1, 1]
        assert [r.duplicate for r in again] == [True, True]
        with pytest.raises(hubcast.ConflictError) as conflict:
            await client.publish_batch([hubcast.BatchEvent("chat:1", 2, expected_seq=5)])
        assert (conflict.value.index, conflict.value.room, conflict.value.head) == (0, "chat:1", 1)


def test_sync_ephemeral_publish(hubcast_server: ServerFactory) -> None:
    server = hubcast_server(EPHEMERAL_CONFIG)
    with hubcast.Client(server.url) as client:
        receipt = client.publish_ephemeral("typing:2", "hi")
        assert receipt.room == "typing:2"
        with pytest.raises(hubcast.ForbiddenError):
            client.publish_ephemeral("chat:2", "x")
        with pytest.raises(hubcast.InvalidRoomError):
            client.publish_ephemeral("no spaces", "x")
        assert client.room_stats("typing:2").head == 0
