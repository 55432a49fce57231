"""The resuming subscriber against the real server: start positions, resume
from a saved cursor, exact resume across server restarts (killed and
graceful), batches, resets, gap healing, heartbeats, credentials."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Dict, List, Optional, Union

import pytest

import hubcast
from conftest import API_KEY, AUTH_CONFIG, JWT_SECRET, Server, ServerFactory

FAST = hubcast.ReconnectPolicy(min_delay=0.05, max_delay=0.5, try_again_later=0.5)
UPDATE_TIMEOUT = 15.0


def subscriber(server: Server, **options: Any) -> hubcast.AsyncSubscriber:
    options.setdefault("reconnect", FAST)
    options.setdefault("heartbeat", hubcast.Heartbeat(interval=1.0, timeout=2.0))
    return hubcast.AsyncSubscriber(server.url, **options)


async def take(sub: hubcast.AsyncSubscriber, n: int, timeout: float = UPDATE_TIMEOUT) -> List[hubcast.Update]:
    """The next `n` updates (each within `timeout`)."""
    out: List[hubcast.Update] = []
    for _ in range(n):
        try:
            out.append(await asyncio.wait_for(sub.__anext__(), timeout))
        except asyncio.TimeoutError:
            raise AssertionError(f"got {len(out)} of {n} updates: {out}") from None
    return out


async def assert_quiet(sub: hubcast.AsyncSubscriber, seconds: float = 0.5) -> None:
    """Nothing more arrives (a check for duplicates, not a latency assertion)."""
    try:
        extra = await asyncio.wait_for(sub.__anext__(), seconds)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"unexpected update: {extra}")


def events(updates: List[hubcast.Update]) -> List[hubcast.Event]:
    assert all(isinstance(u, hubcast.Event) for u in updates), updates
    return [u for u in updates if isinstance(u, hubcast.Event)]


async def post(server: Server, room: str, data: object) -> int:
    return await asyncio.to_thread(server.post, room, data)


@pytest.mark.asyncio
async def test_start_positions_live_cursor_and_rewind(server: Server) -> None:
    for n in (1, 2, 3):
        await post(server, "r", {"n": n})
    async with subscriber(server) as from_start, subscriber(server) as live, subscriber(server) as rewound:
        from_start.subscribe("r", cursor=hubcast.Cursor(None, 0))
        got = events(await take(from_start, 3))
        assert [(e.room, e.seq, e.data) for e in got] == [("r", n, {"n": n}) for n in (1, 2, 3)]
        epoch = got[0].epoch
        assert epoch is not None and all(e.epoch == epoch for e in got)
        assert from_start.cursor("r") == hubcast.Cursor(epoch, 3)

        live.subscribe("r")
        await live.wait_subscribed("r", 10)
        assert live.cursor("r") == hubcast.Cursor(epoch, 3)  # a live start: the head
        await post(server, "r", {"n": 4})
        assert [e.seq for e in events(await take(live, 1))] == [4]
        assert [e.seq for e in events(await take(from_start, 1))] == [4]

        rewound.subscribe("r", rewind=2)
        assert [e.seq for e in events(await take(rewound, 2))] == [3, 4]
        await post(server, "r", {"n": 5})
        for sub in (from_start, live, rewound):
            assert [e.seq for e in events(await take(sub, 1))] == [5]
            await assert_quiet(sub, 0.3)
            assert sub.cursor("r") == hubcast.Cursor(epoch, 5)
            assert sub.state == "open"
    assert from_start.state == "closed"


@pytest.mark.asyncio
async def test_resume_from_a_saved_cursor(server: Server) -> None:
    for n in range(1, 4):
        await post(server, "room:1", n)
    async with subscriber(server) as first:
        first.subscribe("room:1", cursor=hubcast.Cursor(None, 0))
        await take(first, 3)
        saved = first.cursor("room:1")
    assert saved is not None and saved.seq == 3
    for n in range(4, 7):
        await post(server, "room:1", n)
    async with subscriber(server) as second:
        second.subscribe("room:1", cursor=saved)
        got = events(await take(second, 3))
        assert [(e.seq, e.data) for e in got] == [(4, 4), (5, 5), (6, 6)]
        await assert_quiet(second)


async def _resume_across(server: Server, stop: str) -> None:
    """A publisher with idempotency keys and retries appends 0..59 to two
    rooms while the server is stopped (`kill`: SIGKILL, `terminate`: SIGTERM)
    and started again on the same port; a subscriber must see every event of
    both rooms exactly once, in order."""
    states: List[str] = []
    total = 60
    async with subscriber(server, on_state=states.append) as sub, hubcast.AsyncClient(
        server.url, retry=hubcast.RetryPolicy(retries=100, min_delay=0.05, max_delay=0.3)
    ) as client:
        sub.subscribe("a", cursor=hubcast.Cursor(None, 0))
        sub.subscribe("b", cursor=hubcast.Cursor(None, 0))
        await sub.wait_subscribed("a", 10)

        async def publish_all() -> None:
            for n in range(total):
                await client.publish("a" if n % 2 == 0 else "b", {"n": n}, idempotency_key=f"k{n}")
                await asyncio.sleep(0.01)

        publisher = asyncio.ensure_future(publish_all())
        received: Dict[str, List[hubcast.Event]] = {"a": [], "b": []}

        async def receive(count: int) -> None:
            for event in events(await take(sub, count)):
                received[event.room].append(event)

        await receive(10)
        if stop == "kill":
            await asyncio.to_thread(server.kill)
        else:
            assert await asyncio.to_thread(server.terminate) == 0
        await asyncio.sleep(0.3)  # let the subscriber notice and the publisher retry
        await asyncio.to_thread(server.start, server.port)
        await asyncio.wait_for(publisher, 60)
        await receive(total - 10)
        await assert_quiet(sub, 0.5)

    for room, parity in (("a", 0), ("b", 1)):
        got = received[room]
        assert [e.seq for e in got] == list(range(1, total // 2 + 1)), room
        assert [e.data["n"] for e in got] == list(range(parity, total, 2)), room
        assert len({e.epoch for e in got}) == 1
    assert sub.stats.connections >= 2
    assert "reconnecting" in states
    return None


@pytest.mark.asyncio
async def test_resumes_exactly_across_a_killed_server(server: Server) -> None:
    await _resume_across(server, "kill")


@pytest.mark.asyncio
async def test_resumes_exactly_across_a_graceful_restart(server: Server) -> None:
    await _resume_across(server, "terminate")


@pytest.mark.asyncio
async def test_resumes_after_a_restart_with_events_published_while_disconnected(server: Server) -> None:
    # Publish 1..5, kill, restart, publish 6..10 at once (before the subscriber
    # is back, some of them): 6..10 come by replay and live, nothing twice.
    async with subscriber(server) as sub:
        sub.subscribe("r", cursor=hubcast.Cursor(None, 0))
        for n in range(1, 6):
            await post(server, "r", n)
        assert [e.seq for e in events(await take(sub, 5))] == [1, 2, 3, 4, 5]
        await asyncio.to_thread(server.restart)
        for n in range(6, 11):
            await post(server, "r", n)
        assert [(e.seq, e.data) for e in events(await take(sub, 5))] == [(n, n) for n in range(6, 11)]
        await assert_quiet(sub)
        assert sub.stats.connections >= 2


@pytest.mark.asyncio
async def test_batch_frames_are_unpacked_in_order(hubcast_server: ServerFactory) -> None:
    server = hubcast_server('[[namespaces]]\nprefix = "ticks:"\nbatch_ms = 50\nbatch_max = 16\n')
    async with subscriber(server) as sub, hubcast.AsyncClient(server.url) as client:
        sub.subscribe("ticks:btc")
        await sub.wait_subscribed("ticks:btc", 10)
        await asyncio.gather(*(client.publish("ticks:btc", {"p": n}, idempotency_key=f"t{n}") for n in range(40)))
        got = events(await take(sub, 40))
        assert [e.seq for e in got] == list(range(1, 41))
        assert sorted(e.data["p"] for e in got) == list(range(40))
        await assert_quiet(sub, 0.3)
        assert sub.stats.batches > 0 and sub.stats.batches < 40


@pytest.mark.asyncio
async def test_a_cursor_that_cannot_be_served_is_a_reset(server: Server) -> None:
    for n in range(1, 4):
        await post(server, "r", n)
    wrong = hubcast.Cursor("0000000000000000", 2)
    async with subscriber(server) as sub:
        sub.subscribe("r", cursor=wrong)
        reset = (await take(sub, 1))[0]
        assert isinstance(reset, hubcast.Reset)
        assert (reset.room, reset.head, reset.earliest, reset.previous) == ("r", 3, 1, wrong)
        assert reset.epoch != wrong.epoch and sub.cursor("r") == hubcast.Cursor(reset.epoch, 3)
        await post(server, "r", 4)  # delivery goes on after the head
        assert [e.seq for e in events(await take(sub, 1))] == [4]

        sub.subscribe("s", cursor=hubcast.Cursor(None, 99))  # ahead of the head (an empty room)
        ahead = (await take(sub, 1))[0]
        assert isinstance(ahead, hubcast.Reset) and (ahead.room, ahead.head) == ("s", 0)
        assert sub.stats.resets == 2


@pytest.mark.asyncio
async def test_a_gap_is_healed_from_the_history_route(server: Server) -> None:
    """Frames of seq 4 and 5 are lost on the way (dropped before the
    subscriber sees them); seq 6 shows the gap, which is read from the real
    server's history route, so 4, 5, 6 are delivered in order."""
    async with subscriber(server) as sub:
        original = sub._handle
        lost: List[int] = []

        def lossy(raw: Union[str, bytes]) -> bool:
            frame = json.loads(raw)
            if frame.get("type") == "event" and frame.get("seq") in (4, 5) and frame["seq"] not in lost:
                lost.append(frame["seq"])
                return False
            return original(raw)

        sub._handle = lossy  # type: ignore[method-assign]
        sub.subscribe("g", cursor=hubcast.Cursor(None, 0))
        await sub.wait_subscribed("g", 10)
        for n in range(1, 7):
            await post(server, "g", n)
        got = events(await take(sub, 6))
        assert [(e.seq, e.data) for e in got] == [(n, n) for n in range(1, 7)]
        assert lost == [4, 5]
        assert sub.stats.gaps_healed == 1 and sub.stats.history_reads >= 1
        await post(server, "g", 7)
        assert [e.seq for e in events(await take(sub, 1))] == [7]
        await assert_quiet(sub, 0.3)


@pytest.mark.asyncio
async def test_a_frozen_server_is_noticed_by_the_heartbeat(server: Server) -> None:
    states: List[str] = []
    async with subscriber(
        server, heartbeat=hubcast.Heartbeat(interval=0.3, timeout=0.3), connect_timeout=1.0, on_state=states.append
    ) as sub:
        sub.subscribe("hb", cursor=hubcast.Cursor(None, 0))
        await post(server, "hb", 1)
        assert [e.seq for e in events(await take(sub, 1))] == [1]
        server.pause()  # SIGSTOP: the socket stays open, nothing answers
        try:
            deadline = time.monotonic() + 10
            while "reconnecting" not in states and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert "reconnecting" in states, states
        finally:
            server.resume()
        await post(server, "hb", 2)
        await post(server, "hb", 3)
        assert [e.seq for e in events(await take(sub, 2))] == [2, 3]
        await assert_quiet(sub, 0.3)
        assert sub.stats.connections >= 2


@pytest.mark.asyncio
async def test_unsubscribe_and_subscribe_again_from_the_cursor(server: Server) -> None:
    async with subscriber(server) as sub:
        sub.subscribe("u", cursor=hubcast.Cursor(None, 0))
        await post(server, "u", 1)
        await take(sub, 1)
        saved = sub.cursor("u")
        sub.unsubscribe("u")
        await post(server, "u", 2)
        sub.subscribe("u", cursor=saved)  # while the unsubscribe may still be in flight
        await post(server, "u", 3)
        assert [e.seq for e in events(await take(sub, 2))] == [2, 3]
        await assert_quiet(sub, 0.3)
        # Churn within one tick, before the server answers anything: the last
        # subscription wins and delivers each event once.
        saved = sub.cursor("u")
        for room in ("u", "v", "u", "v"):
            start = saved if room == "u" else hubcast.Cursor(None, 0)
            if room not in sub.rooms:
                sub.subscribe(room, cursor=start)
            sub.unsubscribe(room)
            sub.subscribe(room, cursor=start)
        await post(server, "u", 4)
        await post(server, "v", "v1")
        got = events(await take(sub, 2))
        assert sorted((e.room, e.seq) for e in got) == [("u", 4), ("v", 1)]
        await assert_quiet(sub, 0.5)
        with pytest.raises(ValueError):
            sub.subscribe("u")
        with pytest.raises(hubcast.InvalidRoomError):
            sub.subscribe("bad room")


@pytest.mark.asyncio
async def test_a_minted_token_subscribes_within_its_grant_only(auth_server: Server) -> None:
    token = hubcast.mint_token(JWT_SECRET, sub="u1", subscribe=["market:*"])
    await post(auth_server, "market:1", "m1")
    await post(auth_server, "secret:1", "s1")
    calls: List[int] = []

    def provider() -> str:
        calls.append(1)
        return token

    async with subscriber(auth_server, token=provider) as sub:
        sub.subscribe("market:1", cursor=hubcast.Cursor(None, 0))
        got = events(await take(sub, 1))
        assert [(e.room, e.data) for e in got] == [("market:1", "m1")]
        sub.subscribe("secret:1", cursor=hubcast.Cursor(None, 0))
        with pytest.raises(hubcast.SubscriptionError) as refused:
            await take(sub, 1)
        assert (refused.value.code, refused.value.room) == ("forbidden", "secret:1")
        # The subscriber goes on with the rooms it may read.
        await post(auth_server, "market:1", "m2")
        assert [e.data for e in events(await take(sub, 1))] == ["m2"]
        await assert_quiet(sub, 0.3)
        assert calls  # asked before connecting


@pytest.mark.asyncio
async def test_an_expiring_token_is_refreshed_on_the_open_session(hubcast_server: ServerFactory) -> None:
    # No leeway and a 1 s grace: a session whose token is not refreshed in time
    # would be closed with 4001 (final) well within this test.
    server = hubcast_server("[auth]\nleeway_secs = 0\nexpiry_grace_ms = 1000\n" + AUTH_CONFIG)
    tokens: List[str] = []

    async def provider() -> str:
        token = hubcast.mint_token(JWT_SECRET, sub="u1", subscribe=["r"], ttl=2 if not tokens else 300)
        tokens.append(token)
        return token

    async with subscriber(server, token=provider) as sub:
        sub.subscribe("r", cursor=hubcast.Cursor(None, 0))
        await post(server, "r", 1)
        assert [e.seq for e in events(await take(sub, 1))] == [1]
        await asyncio.sleep(4)  # exp passes: token_expired, a fresh token in an auth message
        await post(server, "r", 2)
        assert [e.seq for e in events(await take(sub, 1))] == [2]
        assert len(tokens) == 2 and sub.stats.connections == 1 and sub.state == "open"


@pytest.mark.asyncio
async def test_bad_credentials_close_the_subscriber_for_good(auth_server: Server) -> None:
    forged = hubcast.mint_token("f" * 40, subscribe=["*"])
    async with subscriber(auth_server, token=forged) as sub:
        sub.subscribe("market:1")
        with pytest.raises(hubcast.ClosedError) as closed:
            await take(sub, 1)
        assert (closed.value.code, closed.value.close_code) == ("unauthenticated", 4001)
        assert sub.state == "closed"
        with pytest.raises(StopAsyncIteration):
            await sub.__anext__()
    # An API key works for the subscriber too.
    async with subscriber(auth_server, api_key=API_KEY) as keyed:
        keyed.subscribe("any:room", cursor=hubcast.Cursor(None, 0))
        await post(auth_server, "any:room", 1)
        assert [e.seq for e in events(await take(keyed, 1))] == [1]


ADMIN_KEY = "admin-key-0123456789abcdef"
ADMIN_CONFIG = f"""
[[auth.api_keys]]
name = "ops"
key = "{ADMIN_KEY}"
admin = true
"""


def admin_post(server: Server, path: str, body: object) -> int:
    import urllib.request

    request = urllib.request.Request(
        server.url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json", "authorization": f"Bearer {ADMIN_KEY}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "path, body, code, name",
    [
        ("/v1/users/u1/disconnect", {"reason": "bye"}, 4011, "disconnected"),
        ("/v1/revocations", {"jti": "u1-token"}, 4012, "token_revoked"),
    ],
)
async def test_an_operators_disconnect_or_revocation_closes_the_subscriber_for_good(
    hubcast_server: ServerFactory, path: str, body: object, code: int, name: str
) -> None:
    server = hubcast_server(AUTH_CONFIG + ADMIN_CONFIG)
    token = hubcast.mint_token(JWT_SECRET, sub="u1", subscribe=["*"], claims={"jti": "u1-token"})
    async with subscriber(server, token=token) as sub:
        sub.subscribe("r", cursor=hubcast.Cursor(None, 0))
        await post(server, "r", 1)
        assert [e.seq for e in events(await take(sub, 1))] == [1]
        assert await asyncio.to_thread(admin_post, server, path, body) < 300
        with pytest.raises(hubcast.ClosedError) as closed:
            await take(sub, 1)
        assert (closed.value.code, closed.value.close_code) == (name, code)
        assert sub.state == "closed" and sub.stats.connections == 1


def test_the_blocking_subscriber(server: Server) -> None:
    seen: List[Optional[hubcast.Cursor]] = []
    with hubcast.Subscriber(server.url, reconnect=FAST) as sub, hubcast.Client(server.url) as client:
        sub.subscribe("sync:1", cursor=hubcast.Cursor(None, 0))
        receipts = [client.publish("sync:1", {"n": n}) for n in range(3)]
        for update in sub:
            assert isinstance(update, hubcast.Event)
            seen.append(update.cursor)
            if len(seen) == 3:
                break
        assert seen == [r.cursor for r in receipts]
        assert sub.cursor("sync:1") == receipts[-1].cursor
        with pytest.raises(TimeoutError):
            sub.get(timeout=0.3)
        client.publish("sync:1", "after a timeout")  # nothing was lost by the timeout
        last = sub.get(timeout=UPDATE_TIMEOUT)
        assert isinstance(last, hubcast.Event) and (last.seq, last.data) == (4, "after a timeout")
        sub.wait_subscribed("sync:1", 5)
        assert sub.state == "open" and sub.rooms == ["sync:1"]
    assert sub.state == "closed"
    assert sub.cursor("sync:1") == hubcast.Cursor(receipts[0].epoch, 4)  # to persist after closing
    with pytest.raises(StopIteration):
        sub.get(timeout=1)
    with pytest.raises(hubcast.ClosedError):
        sub.subscribe("sync:2")
