"""Publish, history and room stats against the real server, sync and async."""

from __future__ import annotations

import threading
import time
from typing import Any, List

import httpx
import pytest

import hubcast
from conftest import Server, ServerFactory


def test_publish_returns_an_appended_receipt(server: Server) -> None:
    with hubcast.Client(server.url) as client:
        first = client.publish("market:42", {"yes": 0.61})
        second = client.publish("market:42", [1, "two", None])
    assert (first.room, first.seq, first.duplicate) == ("market:42", 1, False)
    assert len(first.epoch) == 16 and first.ts > 1_600_000_000_000
    assert (second.seq, second.epoch) == (2, first.epoch)
    assert second.ts >= first.ts
    assert first.idempotency_key is None
    assert first.cursor == hubcast.Cursor(first.epoch, 1)


def test_an_idempotent_retry_gets_the_first_receipt(server: Server) -> None:
    with hubcast.Client(server.url) as client:
        first = client.publish("market:42", {"yes": 0.64}, idempotency_key="order-7")
        again = client.publish("market:42", {"yes": 0.64}, idempotency_key="order-7")
        stats = client.room_stats("market:42")
    assert first.duplicate is False and again.duplicate is True
    assert (again.seq, again.epoch, again.ts) == (first.seq, first.epoch, first.ts)
    assert again.idempotency_key == "order-7"
    assert stats.head == 1  # appended once


def test_retries_generate_a_key_when_none_is_given(server: Server) -> None:
    with hubcast.Client(server.url) as client:
        receipt = client.publish("r", 1, retries=2)
        plain = client.publish("r", 2)
    assert receipt.idempotency_key is not None and len(receipt.idempotency_key) == 32
    assert plain.idempotency_key is None


def test_expected_seq_conflict_raises_with_head_and_epoch(server: Server) -> None:
    with hubcast.Client(server.url) as client:
        first = client.publish("market:1", "a")
        client.publish("market:1", "b")
        ok = client.publish("market:1", "c", expected_seq=2)
        assert ok.seq == 3
        with pytest.raises(hubcast.ConflictError) as caught:
            client.publish("market:1", "stale", expected_seq=1)
        assert client.room_stats("market:1").head == 3  # nothing appended
    err = caught.value
    assert (err.code, err.status, err.head, err.epoch) == ("conflict", 409, 3, first.epoch)
    assert isinstance(err, hubcast.ApiError) and isinstance(err, hubcast.HubcastError)
    assert err.body["error"] == "conflict" and "head" in err.message


def test_a_retry_of_a_succeeded_conditional_publish_is_not_a_conflict(server: Server) -> None:
    # The key is checked before expected_seq (docs/protocol.md).
    with hubcast.Client(server.url) as client:
        first = client.publish("r", "x", expected_seq=0, idempotency_key="k1")
        again = client.publish("r", "x", expected_seq=0, idempotency_key="k1")
    assert (again.seq, again.duplicate) == (first.seq, True)


def test_error_answers_become_typed_errors(hubcast_server: ServerFactory) -> None:
    server = hubcast_server("[limits]\nmax_event_bytes = 64\n")
    with hubcast.Client(server.url) as client:
        with pytest.raises(hubcast.TooLargeError) as too_large:
            client.publish("r", "x" * 100)
        assert (too_large.value.code, too_large.value.status) == ("too_large", 413)
        with pytest.raises(hubcast.InvalidRoomError) as bad_room:
            client.publish("no spaces", 1)
        assert bad_room.value.code == "invalid_room"
        assert isinstance(bad_room.value, ValueError)
        with pytest.raises(ValueError):
            client.publish("r", float("nan"))  # not JSON
        with pytest.raises(ValueError):
            client.publish("r", 1, idempotency_key="has space")
        with pytest.raises(ValueError):
            client.publish("r", 1, expected_seq=-1)
    # A code sent by the server: an invalid history parameter.
    with hubcast.Client(server.url) as client:
        response = client._send("GET", "/v1/rooms/r/events?after=-1", 0)
    err = hubcast.errors.api_error(response.status_code, response.json())
    assert isinstance(err, hubcast.BadRequestError)
    assert (err.code, err.status) == ("invalid_parameter", 400)


def test_error_mapping_by_code_and_status() -> None:
    cases = [
        (401, {"error": "token_expired", "message": "m"}, hubcast.TokenExpiredError),
        (401, {"error": "unauthenticated", "message": "m"}, hubcast.UnauthenticatedError),
        (403, {"error": "forbidden", "message": "m"}, hubcast.ForbiddenError),
        (404, {"error": "not_found", "message": "m"}, hubcast.NotFoundError),
        (429, {"error": "rate_limited", "message": "m"}, hubcast.RateLimitedError),
        (503, {"error": "store_unavailable", "message": "m"}, hubcast.UnavailableError),
        (503, {"error": "shutting_down", "message": "m"}, hubcast.UnavailableError),
        (500, {"error": "internal", "message": "m"}, hubcast.InternalServerError),
        (418, {"error": "a_new_code", "message": "m"}, hubcast.ApiError),
        (502, None, hubcast.ApiError),
        (503, None, hubcast.UnavailableError),
    ]
    for status, body, cls in cases:
        err = hubcast.errors.api_error(status, body, text="Bad Gateway")
        assert type(err) is cls, (status, body, err)
        assert err.status == status
        assert err.code == (body["error"] if body else f"http_{status}")
    # Retry-After is read from the answer.
    response = httpx.Response(503, headers={"retry-after": "1"}, json={"error": "store_unavailable", "message": "m"})
    err = hubcast._common.error_from(response)
    assert isinstance(err, hubcast.UnavailableError) and err.retry_after == 1.0 and err.transient


def test_history_iterates_over_several_pages(server: Server) -> None:
    with hubcast.Client(server.url) as client:
        receipts = [client.publish("feed:1", {"n": n}) for n in range(1, 11)]
        history = client.history("feed:1", after=0, page_size=3)
        events = list(history)
        assert [e.seq for e in events] == list(range(1, 11))
        assert [e.data for e in events] == [{"n": n} for n in range(1, 11)]
        assert all(e.epoch == receipts[0].epoch and e.room == "feed:1" for e in events)
        assert history.pages == 4  # 3 + 3 + 3 + 1, the last page reaching the head
        assert history.head == 10 and history.cursor == hubcast.Cursor(receipts[0].epoch, 10)
        # From a cursor, with its epoch.
        tail = list(client.history("feed:1", after=7, epoch=receipts[0].epoch, page_size=2))
        assert [e.seq for e in tail] == [8, 9, 10]
        # One page.
        page = client.history_page("feed:1", after=8, limit=5)
        assert (page.epoch, page.head, page.earliest) == (receipts[0].epoch, 10, 1)
        assert [e.seq for e in page.events] == [9, 10]
        # A room never written: nothing, epoch unknown.
        empty = client.history("never:written")
        # A room never written: no events, the epoch it will be born with.
        assert list(empty) == [] and empty.head == 0 and empty.cursor.seq == 0 and isinstance(empty.cursor.epoch, str)


def test_history_refuses_a_cursor_of_another_epoch(server: Server) -> None:
    with hubcast.Client(server.url) as client:
        client.publish("r", 1)
        with pytest.raises(hubcast.CursorLostError) as caught:
            list(client.history("r", after=0, epoch="0000000000000000"))
    assert caught.value.reason == "epoch" and caught.value.code == "cursor_lost"


def test_history_notices_events_pruned_by_retention(hubcast_server: ServerFactory) -> None:
    server = hubcast_server('[[namespaces]]\nprefix = "short:"\nmax_events = 3\n\n[retention]\ninterval_ms = 100\n')
    with hubcast.Client(server.url) as client:
        for n in range(10):
            client.publish("short:1", n)
        deadline = time.monotonic() + 10
        while client.room_stats("short:1").earliest == 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        earliest = client.room_stats("short:1").earliest
        assert earliest > 1, "retention did not prune"
        with pytest.raises(hubcast.CursorLostError) as caught:
            list(client.history("short:1", after=0))
        assert caught.value.reason == "pruned" and caught.value.earliest == earliest
        # From just before the earliest retained event it works.
        assert [e.seq for e in client.history("short:1", after=earliest - 1)] == list(range(earliest, 11))


def test_room_stats(server: Server) -> None:
    with hubcast.Client(server.url) as client:
        empty = client.room_stats("stats:1")
        assert (empty.room, empty.head, empty.earliest, empty.retained) == ("stats:1", 0, 1, 0)
        assert isinstance(empty.epoch, str)  # the epoch the room will be born with
        receipt = client.publish("stats:1", "x")
        client.publish("stats:1", "y")
        stats = client.room_stats("stats:1")
    assert (stats.epoch, stats.head, stats.earliest, stats.retained, stats.subscribers) == (receipt.epoch, 2, 1, 2, 0)


def test_transient_refusals_are_retried_with_the_same_key(hubcast_server: ServerFactory) -> None:
    # One publish per second for the key: the second publish is refused with
    # 429 rate_limited until the quota refills, and retried meanwhile.
    server = hubcast_server("[rate_limits]\npublishes_per_key_per_second = 1\n")
    policy = hubcast.RetryPolicy(retries=12, min_delay=0.1, max_delay=0.5)
    with hubcast.Client(server.url, retry=policy) as client:
        client.publish("r", 1)
        with pytest.raises(hubcast.RateLimitedError) as refused:
            client.publish("r", 2)  # no key: not retried
        assert (refused.value.status, refused.value.code) == (429, "rate_limited")
        receipt = client.publish("r", 2, idempotency_key="second")
        assert (receipt.seq, receipt.duplicate) == (2, False)


def test_connection_errors_are_retried_until_the_server_is_back(server: Server) -> None:
    with hubcast.Client(server.url) as client:
        client.publish("r", "before")
    server.kill()
    with hubcast.Client(server.url) as down:
        with pytest.raises(hubcast.TransportError) as caught:
            down.publish("r", "no key, no retry")
        assert caught.value.code == "connection_error"

    restarted = threading.Timer(0.5, server.start, kwargs={"port": server.port})
    restarted.start()
    policy = hubcast.RetryPolicy(retries=30, min_delay=0.1, max_delay=0.3)
    try:
        with hubcast.Client(server.url, retry=policy) as client:
            receipt = client.publish("r", "during", retries=30)
            assert (receipt.seq, receipt.duplicate) == (2, False)
            assert [e.data for e in client.history("r")] == ["before", "during"]
    finally:
        restarted.join()


@pytest.mark.asyncio
async def test_async_client(server: Server) -> None:
    async with hubcast.AsyncClient(server.url) as client:
        first = await client.publish("a:1", {"n": 1}, idempotency_key="k")
        again = await client.publish("a:1", {"n": 1}, idempotency_key="k")
        assert (first.seq, first.duplicate, again.seq, again.duplicate) == (1, False, 1, True)
        for n in range(2, 8):
            await client.publish("a:1", {"n": n})
        with pytest.raises(hubcast.ConflictError) as caught:
            await client.publish("a:1", "stale", expected_seq=3)
        assert caught.value.head == 7
        history = client.history("a:1", page_size=2)
        seen: List[Any] = [e.data["n"] async for e in history]
        assert seen == list(range(1, 8)) and history.pages == 4
        page = await client.history_page("a:1", after=6)
        assert [e.seq for e in page.events] == [7]
        stats = await client.room_stats("a:1")
        assert (stats.head, stats.epoch) == (7, first.epoch)


def test_urls_with_ws_scheme_and_prefix_are_accepted(server: Server) -> None:
    with hubcast.Client(f"ws://127.0.0.1:{server.port}/") as client:
        assert client.url == server.url
        assert client.publish("r", 1).seq == 1
    with pytest.raises(ValueError):
        hubcast.Client("ftp://example")
