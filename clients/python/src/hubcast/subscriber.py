"""A resuming subscriber over hubcast's WebSocket protocol.

:class:`AsyncSubscriber` holds one WebSocket to ``GET /v1/ws``, subscribes to
rooms with ``subscribe`` messages and yields their events, each at most once
and in order, across reconnects: it keeps a cursor ``(epoch, seq)`` per room,
resubscribes from it after every reconnect (the server replays what was
missed), drops anything at or below it, heals gaps from the history route,
surfaces ``reset`` when the cursor cannot be served, and unpacks ``batch``
frames. It follows the client contract of docs/clients.md; see the README for
what it leaves out (socket publishes, presence).

:class:`Subscriber` is a blocking wrapper that runs one in a background thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import logging
import random
import threading
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import (
    Any,
    Awaitable,
    Callable,
    Coroutine,
    Deque,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Set,
    Tuple,
    Type,
    TypeVar,
    Union,
)

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ._common import USER_AGENT, http_base, ok_body, room_path, ws_base
from .errors import ClosedError, HubcastError, ProtocolViolation, SubscriptionError, UnauthenticatedError
from .types import Cursor, Event, Reset, check_room, parse_history, parse_wire_event

log = logging.getLogger("hubcast")

#: What iterating a subscriber yields.
Update = Union[Event, Reset]
#: A token, or a function (sync or async) that returns a fresh one; called
#: before every connection attempt and when the server says ``token_expired``.
TokenProvider = Callable[[], Union[str, Awaitable[str]]]

_T = TypeVar("_T")

#: Close codes after which the subscriber never reconnects by itself.
TERMINAL_CLOSE_CODES: Mapping[int, str] = {
    4001: "unauthenticated",
    4003: "forbidden",
    1008: "policy_violation",
    1009: "frame_too_big",
    4011: "disconnected",  # an operator disconnected the user
    4012: "token_revoked",  # the token was revoked
}
#: Ahead-of-cursor events kept per room while a gap is healed.
MAX_KEPT = 10_000


@dataclass(frozen=True)
class ReconnectPolicy:
    """Backoff after a dropped connection: exponential with full jitter,
    ``random() * min(max_delay, min_delay * 2**attempt)`` seconds, where
    ``attempt`` counts failed attempts since the last session that got its
    ``welcome``. After 1013 (over capacity), 4008 (rate limited) or 4013 (the
    application's connect hook could not decide) it waits at
    least ``try_again_later``; after 1012 (restart) or 1001 (going away) of a
    welcomed session it reconnects at once."""

    min_delay: float = 0.25
    max_delay: float = 30.0
    try_again_later: float = 5.0

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        return rand() * min(self.max_delay, self.min_delay * 2.0 ** min(attempt, 60))


@dataclass(frozen=True)
class Heartbeat:
    """Liveness check: after ``interval`` seconds without any frame from the
    server, send ``{"type":"ping"}``; if nothing arrives within ``timeout``
    more, drop the connection and resume on a new one."""

    interval: float = 10.0
    timeout: float = 5.0


@dataclass
class SubscriberStats:
    """Counters, for diagnostics and tests."""

    connections: int = 0  #: sessions opened (the first one and every reconnect)
    frames: int = 0  #: frames received
    batches: int = 0  #: ``batch`` frames received
    delivered: int = 0  #: events handed to the application's queue
    duplicates: int = 0  #: events dropped because their seq was at or below the cursor
    gaps_healed: int = 0  #: gaps filled from the history route
    history_reads: int = 0  #: history pages read to heal gaps
    resyncs: int = 0  #: subscriptions restarted from the cursor
    resets: int = 0  #: resets surfaced


class _Dead(Exception):
    """The heartbeat found the connection dead."""


class _Room:
    """One room's subscription: its cursor and where it is on the socket.

    ``wire``: ``idle`` (not on this socket), ``waiting`` (an earlier
    unsubscribe of the name is in flight), ``subscribing``, ``active``,
    ``resyncing`` (unsubscribe sent to restart from the cursor), ``failed``
    (refused; the next connection tries again).
    """

    def __init__(self, host: "AsyncSubscriber", name: str, cursor: Optional[Cursor], rewind: Optional[int]) -> None:
        self.host = host
        self.name = name
        self.epoch: Optional[str] = cursor.epoch if cursor else None
        self.seq: Optional[int] = cursor.seq if cursor else None
        self.rewind = rewind
        self.wire = "idle"
        self.sub_head = 0
        self.sub_epoch = ""
        self.awaiting_reset = False
        self.kept: Dict[int, Event] = {}
        self.healing = False
        self.heal_gen = 0
        self.heal_target = 0
        self.subscribe_attempts = 0
        self.retry: Optional[asyncio.TimerHandle] = None
        self.subscribed = asyncio.Event()
        self.closed = False

    @property
    def cursor(self) -> Optional[Cursor]:
        return None if self.seq is None else Cursor(self.epoch, self.seq)

    # ---------------------------------------------------------- socket → room

    def subscribe_now(self) -> None:
        if self.closed or not self.host._is_open():
            return
        if self.wire in ("subscribing", "active", "resyncing"):
            return
        if self.name in self.host._draining:
            self.wire = "waiting"
            return
        frame: Dict[str, Any] = {"type": "subscribe", "room": self.name}
        if self.seq is not None:
            frame["cursor"] = self.seq
            if self.epoch is not None:
                frame["epoch"] = self.epoch
        elif self.rewind is not None:
            frame["rewind"] = self.rewind
        if self.host._send(frame):
            self.wire = "subscribing"

    def socket_closed(self) -> None:
        self.wire = "idle"
        self.awaiting_reset = False
        self.subscribed.clear()
        self._clear_retry()
        self._cancel_heal()

    def on_subscribed(self, epoch: str, head: int) -> None:
        if self.closed or self.wire != "subscribing":
            return
        self.wire = "active"
        self.subscribe_attempts = 0
        self.sub_head = head
        self.sub_epoch = epoch
        self.awaiting_reset = self.seq is not None and self.epoch is not None and epoch != self.epoch
        if self.epoch is None:
            self.epoch = epoch
        if self.seq is None and self.rewind is None:
            self.seq = head  # a live start
        self.subscribed.set()

    def on_reset(self, epoch: str, earliest: Optional[int], head: Optional[int] = None) -> None:
        """``head``: a live reset's (the room's log was deleted); the cursor
        moves to it instead of the ``subscribed`` head."""
        if self.closed or self.wire != "active":
            return
        previous = self.cursor
        self._cancel_heal()
        self.awaiting_reset = False
        if head is not None:
            self.sub_head = head
        self.epoch = epoch
        self.seq = self.sub_head
        self.host.stats.resets += 1
        self.host._emit(Reset(self.name, epoch, earliest, self.sub_head, previous))

    def on_event(self, event: Event) -> None:
        if self.closed or self.wire != "active":
            return
        if self.awaiting_reset:
            self.on_reset(self.sub_epoch, None)
        self._offer(event, "socket")

    def on_caught_up(self, seq: int) -> None:
        if self.closed or self.wire != "active":
            return
        if self.awaiting_reset:
            self.on_reset(self.sub_epoch, None)
        if self.seq is None:
            self.seq = seq  # a rewind that found no events
        elif seq > self.seq:
            self._request_heal(seq)

    def on_unsubscribed(self) -> None:
        if self.closed:
            return
        if self.wire == "resyncing":
            self.wire = "idle"
            self.subscribe_now()

    def on_subscription_error(self, code: str, message: str, retry_after_ms: int = 0) -> None:
        if self.closed:
            return
        if code == "already_subscribed":
            # The server still holds an older subscription of ours: restart it.
            if self.wire == "subscribing":
                self.wire = "active"
                self._resync()
            return
        if code in ("store_unavailable", "auth_unavailable", "over_capacity", "rate_limited"):
            # Nothing subscribed: ask again after a backoff.
            if self.wire in ("subscribing", "active"):
                self.wire = "idle"
                self.subscribed.clear()
                self._cancel_heal()
                # The server's retry_after_ms first, then the usual jittered
                # backoff, so refused clients do not all come back at once.
                delay = retry_after_ms / 1000 + self.host._reconnect.delay(self.subscribe_attempts)
                self.subscribe_attempts += 1
                self._clear_retry()
                self.retry = asyncio.get_running_loop().call_later(delay, self._retry_subscribe)
            self.host._report(SubscriptionError(code, message, self.name))
            return
        # forbidden, unauthenticated, token_expired, too_many_subscriptions,
        # invalid_room: over on this socket; the next connection tries again.
        if self.wire in ("subscribing", "active", "resyncing"):
            self.wire = "failed"
            self.subscribed.clear()
            self._cancel_heal()
        self.host._emit_error(SubscriptionError(code, message, self.name))

    def close(self) -> None:
        self.closed = True
        self._cancel_heal()
        self._clear_retry()
        self.wire = "idle"

    # ------------------------------------------------------------------ delivery

    def _retry_subscribe(self) -> None:
        self.retry = None
        self.subscribe_now()

    def _clear_retry(self) -> None:
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None

    def _offer(self, event: Event, source: str) -> None:
        if self.seq is None:
            # A rewind start: the first event of the subscription sets the base.
            if source == "socket":
                self._deliver(event)
                self._drain()
            return
        if event.seq <= self.seq:
            self.host.stats.duplicates += 1  # a duplicate, or a replay overlapping what was delivered
            return
        if event.seq == self.seq + 1:
            self._deliver(event)
            self._drain()
            return
        # A gap: keep the event, fetch what is missing before delivering it.
        if len(self.kept) < MAX_KEPT:
            self.kept[event.seq] = event
        self._request_heal(event.seq - 1)

    def _deliver(self, event: Event) -> None:
        self.seq = event.seq
        self.host.stats.delivered += 1
        if event.epoch != self.epoch or event.room != self.name:
            event = Event(self.name, event.seq, event.ts, event.data, self.epoch)
        self.host._emit(event)

    def _drain(self) -> None:
        while not self.closed and self.seq is not None and self.kept:
            following = self.kept.pop(self.seq + 1, None)
            if following is None:
                break
            self._deliver(following)
        if self.seq is None or not self.kept:
            return
        for seq in [s for s in self.kept if s <= self.seq]:
            del self.kept[seq]
        if self.kept:
            self._request_heal(min(self.kept) - 1)

    def _request_heal(self, target: int) -> None:
        self.heal_target = max(self.heal_target, target)
        if self.healing or self.closed or self.wire != "active":
            return
        self.healing = True
        self.heal_gen += 1
        self.host._spawn(self._heal(self.heal_gen))

    def _cancel_heal(self) -> None:
        self.heal_gen += 1
        self.healing = False
        self.heal_target = 0
        self.kept.clear()

    async def _heal(self, gen: int) -> None:
        """Reads the history after the cursor until ``heal_target`` is delivered;
        restarts the subscription from the cursor when the history cannot."""
        outcome = "done"
        failure: Optional[BaseException] = None
        start = self.seq
        try:
            while True:
                after = self.seq
                if after is None or after >= self.heal_target:
                    break
                limit = max(1, min(self.host._page_size, self.heal_target - after))
                page = await self.host._fetch_history(self.name, after, limit)
                self.host.stats.history_reads += 1
                if gen != self.heal_gen:
                    return  # cancelled: reset, reconnect, resync or closed
                current = self.seq if self.seq is not None else after
                if self.epoch is None and page.epoch is not None:
                    self.epoch = page.epoch
                if page.epoch != self.epoch and not (page.epoch is None and current == 0):
                    outcome = "resync"  # another log: the server answers with a reset
                    break
                if current + 1 < page.earliest:
                    outcome = "resync"  # pruned: the server answers with a reset
                    break
                for event in page.events:
                    self._offer(event, "history")
                    if gen != self.heal_gen:
                        return
                now = self.seq if self.seq is not None else current
                if now >= self.heal_target:
                    break
                if now == current:
                    outcome = "resync"  # no progress: ask the server again
                    break
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - any failure falls back to the socket
            if gen != self.heal_gen:
                return
            failure = err
        if gen != self.heal_gen:
            return
        self.healing = False
        if failure is not None:
            self.host._report(
                HubcastError("history_unavailable", "history of %s could not be read: %s" % (self.name, failure))
            )
            self._resync()
            return
        if outcome == "resync":
            self._resync()
            return
        self.heal_target = 0
        if self.seq != start:
            self.host.stats.gaps_healed += 1
        self._drain()

    def _resync(self) -> None:
        """Restarts the subscription from the cursor: ``unsubscribe``, then
        ``subscribe`` with the cursor on ``unsubscribed``."""
        self._cancel_heal()
        self.host.stats.resyncs += 1
        if self.wire != "active" or not self.host._is_open():
            return  # the next subscribe starts from the cursor anyway
        if self.host._send({"type": "unsubscribe", "room": self.name}):
            self.wire = "resyncing"
            self.subscribed.clear()


class AsyncSubscriber:
    """Subscribes to rooms and yields their events (and resets) in order, each
    at most once, across reconnects and server restarts.

    ::

        async with AsyncSubscriber("http://127.0.0.1:8787", api_key=KEY) as sub:
            sub.subscribe("market:42", cursor=saved_cursor)   # or rewind=N, or live
            async for update in sub:
                if isinstance(update, hubcast.Reset):
                    reload_state(update.room)
                else:
                    apply(update)                # update.cursor: persist it

    ``token`` is a JWT or a function (sync or async) returning a fresh one,
    called before every connection attempt and when the server says
    ``token_expired``; ``api_key`` an API key. Either goes as
    ``Authorization: Bearer`` on the upgrade and on history reads.

    Iteration raises :class:`~hubcast.SubscriptionError` when the server
    refuses a room (the subscriber goes on; iterate again), and
    :class:`~hubcast.ClosedError` once after a terminal close code (4001,
    4003, 1008, 1009), after which it ends. Up to ``max_queued`` updates wait
    for the application; past that the subscriber stops reading the socket
    (the server then cuts it, and it resumes from its cursor: nothing is lost).
    Non-fatal problems (a history read that failed, a room refused for now)
    go to ``on_error`` and the ``hubcast`` logger.
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: Optional[str] = None,
        token: Optional[Union[str, TokenProvider]] = None,
        reconnect: ReconnectPolicy = ReconnectPolicy(),
        heartbeat: Optional[Heartbeat] = Heartbeat(),
        connect_timeout: float = 10.0,
        history_page_size: int = 1000,
        max_queued: int = 10_000,
        on_error: Optional[Callable[[HubcastError], None]] = None,
        on_state: Optional[Callable[[str], None]] = None,
    ) -> None:
        if api_key is not None and token is not None:
            raise ValueError("give api_key or token, not both")
        self._ws_url = ws_base(url) + "/v1/ws"
        self._http_url = http_base(url)
        self._api_key = api_key
        self._token_source = token
        self._token: Optional[str] = token if isinstance(token, str) else None
        self._reconnect = reconnect
        self._heartbeat = heartbeat
        self._connect_timeout = connect_timeout
        self._page_size = history_page_size
        self._max_queued = max(1, max_queued)
        self._on_error = on_error
        self._on_state = on_state
        self._rooms: Dict[str, _Room] = {}
        self._draining: Set[str] = set()
        self._queue: Deque[Union[Update, HubcastError]] = deque()
        self._consumed: Dict[str, Cursor] = {}
        self._ready: Optional[asyncio.Event] = None
        self._space: Optional[asyncio.Event] = None
        self._task: Optional["asyncio.Task[None]"] = None
        self._tasks: Set["asyncio.Task[None]"] = set()
        self._ws: Optional[ClientConnection] = None
        self._outbox: Optional["asyncio.Queue[str]"] = None
        self._http: Optional[httpx.AsyncClient] = None
        self._state = "idle"
        self._closing = False
        self._finished = False
        self.stats = SubscriberStats()

    # -------------------------------------------------------------- public API

    @property
    def state(self) -> str:
        """``idle``, ``connecting``, ``open``, ``reconnecting`` or ``closed``."""
        return self._state

    @property
    def rooms(self) -> List[str]:
        return list(self._rooms)

    def cursor(self, room: str) -> Optional[Cursor]:
        """The cursor of the last update of ``room`` the application took from
        the iterator (or the start cursor given), ``None`` if not known yet:
        what to persist and pass back as ``cursor=`` to resume."""
        r = self._rooms.get(room)
        if r is not None and r.seq is not None and not self._pending(room):
            return r.cursor
        return self._consumed.get(room)

    def subscribe(self, room: str, *, cursor: Optional[Cursor] = None, rewind: Optional[int] = None) -> None:
        """Starts following ``room``: after ``cursor`` (the events after it,
        then live), else the last ``rewind`` events, else live from now.
        Connects on the first subscription. Call it from the event loop."""
        check_room(room)
        if cursor is not None and (not isinstance(cursor.seq, int) or cursor.seq < 0):
            raise ValueError("cursor.seq must be a non-negative integer")
        if rewind is not None and (not isinstance(rewind, int) or rewind < 0):
            raise ValueError("rewind must be a non-negative integer")
        if self._closing or self._finished:
            raise ClosedError("closed", "the subscriber is closed")
        if room in self._rooms:
            raise ValueError("already subscribed to %s" % room)
        self._prims()
        r = _Room(self, room, cursor, rewind)
        self._rooms[room] = r
        if cursor is not None:
            self._consumed[room] = cursor
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        r.subscribe_now()

    def unsubscribe(self, room: str) -> None:
        """Stops following ``room``. Updates of it already queued are still
        yielded."""
        r = self._rooms.pop(room, None)
        if r is None:
            return
        on_server = r.wire in ("subscribing", "active", "resyncing")
        r.close()
        if on_server and self._send({"type": "unsubscribe", "room": room}):
            self._draining.add(room)

    async def wait_subscribed(self, room: str, timeout: Optional[float] = None) -> None:
        """Waits until ``room`` is subscribed on the current connection (its
        ``subscribed`` came): from then on, events published are delivered."""
        r = self._rooms.get(room)
        if r is None:
            raise ValueError("not subscribed to %s" % room)
        await asyncio.wait_for(r.subscribed.wait(), timeout)

    async def close(self) -> None:
        """Closes the connection; iteration ends. Idempotent."""
        if self._closing:
            return
        self._closing = True
        for r in self._rooms.values():
            r.close()
        ws = self._ws
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), 2.0)
            except (asyncio.TimeoutError, OSError, ConnectionClosed):
                pass
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
        self._set_state("closed")
        self._finish()

    async def __aenter__(self) -> "AsyncSubscriber":
        return self

    async def __aexit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        await self.close()

    def __aiter__(self) -> "AsyncSubscriber":
        return self

    async def __anext__(self) -> Update:
        ready, space = self._prims()
        while True:
            if self._closing:
                raise StopAsyncIteration
            if self._queue:
                item = self._queue.popleft()
                if len(self._queue) < self._max_queued:
                    space.set()
                if isinstance(item, HubcastError):
                    raise item
                self._consumed[item.room] = item.cursor
                return item
            if self._finished:
                raise StopAsyncIteration
            ready.clear()
            await ready.wait()

    # ------------------------------------------------------------- internals

    def _prims(self) -> Tuple[asyncio.Event, asyncio.Event]:
        # Created on first use inside the loop (Python 3.9 binds them to a loop).
        if self._ready is None or self._space is None:
            self._ready = asyncio.Event()
            self._space = asyncio.Event()
            self._space.set()
        return self._ready, self._space

    def _pending(self, room: str) -> bool:
        return any(not isinstance(i, HubcastError) and i.room == room for i in self._queue)

    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            if self._on_state is not None:
                try:
                    self._on_state(state)
                except Exception:  # noqa: BLE001 - the application's bug must not stop the subscriber
                    log.exception("hubcast: on_state raised")

    def _emit(self, item: Union[Update, HubcastError]) -> None:
        ready, space = self._prims()
        self._queue.append(item)
        if len(self._queue) >= self._max_queued:
            space.clear()
        ready.set()

    def _emit_error(self, error: HubcastError) -> None:
        log.warning("hubcast: %s", error)
        self._emit(error)

    def _report(self, error: HubcastError) -> None:
        log.warning("hubcast: %s", error)
        if self._on_error is not None:
            try:
                self._on_error(error)
            except Exception:  # noqa: BLE001 - the application's bug must not stop the subscriber
                log.exception("hubcast: on_error raised")

    def _finish(self, error: Optional[HubcastError] = None) -> None:
        if error is not None:
            self._emit(error)
        self._finished = True
        ready, _ = self._prims()
        ready.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _is_open(self) -> bool:
        return self._outbox is not None

    def _send(self, frame: Mapping[str, Any]) -> bool:
        if self._outbox is None:
            return False
        self._outbox.put_nowait(json.dumps(frame, separators=(",", ":")))
        return True

    async def _credential(self, fresh: bool = False) -> Optional[str]:
        if self._api_key is not None:
            return self._api_key
        source = self._token_source
        if source is None or isinstance(source, str):
            return source
        if self._token is None or fresh:
            value = source()
            token = await value if inspect.isawaitable(value) else value
            if not isinstance(token, str) or not token:
                raise HubcastError("token_error", "the token provider returned %r" % (token,))
            self._token = token
        return self._token

    async def _fetch_history(self, room: str, after: int, limit: int) -> Any:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=10.0)
        url = self._http_url + room_path(room, "/events")
        params = {"after": after, "limit": limit}
        for attempt in range(2):
            headers = {"user-agent": USER_AGENT, "accept": "application/json"}
            credential = await self._credential(fresh=attempt > 0)
            if credential is not None:
                headers["authorization"] = "Bearer " + credential
            response = await self._http.get(url, params=params, headers=headers)
            try:
                return parse_history(room, ok_body(response))
            except UnauthenticatedError:
                # A token that expired: once more with a fresh one.
                if attempt > 0 or not callable(self._token_source):
                    raise
        raise AssertionError("unreachable")

    # ------------------------------------------------------------ connection

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            self._set_state("connecting")
            welcomed = False
            code = 1006
            reason = ""
            ws: Optional[ClientConnection] = None
            try:
                headers = {}
                # A token provider is asked before every attempt.
                credential = await self._credential(fresh=callable(self._token_source))
                if credential is not None:
                    headers["Authorization"] = "Bearer " + credential
                ws = await asyncio.wait_for(
                    connect(
                        self._ws_url,
                        additional_headers=headers,
                        user_agent_header=USER_AGENT,
                        open_timeout=None,
                        ping_interval=None,
                        close_timeout=2,
                        max_size=None,
                        compression=None,
                    ),
                    self._connect_timeout,
                )
            except asyncio.CancelledError:
                raise
            except HubcastError as err:
                self._report(err)
            except Exception as err:  # noqa: BLE001 - every failed attempt backs off
                log.info("hubcast: connection to %s failed: %s", self._ws_url, err)
            if ws is not None:
                try:
                    code, reason, welcomed = await self._session(ws)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - a bug here must not end the subscriber silently
                    log.exception("hubcast: the session failed; reconnecting")
                    ws.transport.abort()
                    code, reason = 1011, "client error"
                finally:
                    self._ws = None
                    self._outbox = None
                    self._draining.clear()
                    for r in self._rooms.values():
                        r.socket_closed()
            if self._closing:
                return
            if code in TERMINAL_CLOSE_CODES:
                name = TERMINAL_CLOSE_CODES[code]
                self._set_state("closed")
                self._finish(ClosedError(name, "the server closed the connection with %d %s" % (code, reason), code))
                return
            if welcomed:
                attempt = 0
            if welcomed and code in (1012, 1001):
                delay = 0.0
            else:
                delay = self._reconnect.delay(attempt)
                attempt += 1
                if code in (1013, 4008, 4013):
                    delay = max(delay, self._reconnect.try_again_later)
            log.info("hubcast: connection closed (%d %s); reconnecting in %.3fs", code, reason, delay)
            self._set_state("reconnecting")
            await asyncio.sleep(delay)

    async def _session(self, ws: ClientConnection) -> Tuple[int, str, bool]:
        """Runs one connection until it closes: (close code, reason, welcomed)."""
        self._ws = ws
        outbox: "asyncio.Queue[str]" = asyncio.Queue()
        self._outbox = outbox
        writer = asyncio.get_running_loop().create_task(self._write(ws, outbox))
        welcomed = False
        self.stats.connections += 1
        self._set_state("open")
        for r in list(self._rooms.values()):
            r.subscribe_now()
        try:
            while True:
                raw = await self._recv(ws)
                if self._handle(raw):
                    welcomed = True
                _, space = self._prims()
                if not space.is_set():
                    await space.wait()
        except ConnectionClosed as closed:
            frame = closed.rcvd
            return (frame.code, frame.reason, welcomed) if frame is not None else (1006, "", welcomed)
        except _Dead:
            log.info("hubcast: no frame within the heartbeat timeout; dropping the connection")
            ws.transport.abort()
            return 4010, "heartbeat timeout (client)", welcomed
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def _write(self, ws: ClientConnection, outbox: "asyncio.Queue[str]") -> None:
        try:
            while True:
                await ws.send(await outbox.get())
        except ConnectionClosed:
            pass

    async def _recv(self, ws: ClientConnection) -> Union[str, bytes]:
        hb = self._heartbeat
        if hb is None:
            return await ws.recv()
        try:
            return await asyncio.wait_for(ws.recv(), hb.interval)
        except asyncio.TimeoutError:
            self._send({"type": "ping"})
        try:
            return await asyncio.wait_for(ws.recv(), hb.timeout)
        except asyncio.TimeoutError:
            raise _Dead() from None

    def _handle(self, raw: Union[str, bytes]) -> bool:
        """Handles one frame; returns whether it was ``welcome``."""
        self.stats.frames += 1
        try:
            frame = json.loads(raw)
        except ValueError:
            self._report(ProtocolViolation("a frame that is not JSON: %r" % (raw[:200],)))
            return False
        if not isinstance(frame, dict):
            self._report(ProtocolViolation("a frame that is not a JSON object: %r" % (frame,)))
            return False
        kind = frame.get("type")
        room_name = frame.get("room")
        r = self._rooms.get(room_name) if isinstance(room_name, str) else None
        try:
            if kind == "welcome":
                return True
            if kind == "subscribed" and r is not None:
                r.on_subscribed(_str(frame, "epoch"), _int(frame, "head"))
            elif kind == "reset" and r is not None:
                earliest = frame.get("earliest")
                head = frame.get("head")
                r.on_reset(
                    _str(frame, "epoch"),
                    earliest if isinstance(earliest, int) else None,
                    head if isinstance(head, int) and not isinstance(head, bool) else None,
                )
            elif kind == "event" and r is not None:
                r.on_event(parse_wire_event(r.name, frame, r.epoch, "event frame"))
            elif kind == "batch" and r is not None:
                events = frame.get("events")
                if not isinstance(events, list):
                    raise ProtocolViolation("batch frame without events")
                self.stats.batches += 1
                for raw_event in events:
                    r.on_event(parse_wire_event(r.name, raw_event, r.epoch, "batch event"))
            elif kind == "caught_up" and r is not None:
                r.on_caught_up(_int(frame, "seq"))
            elif kind == "unsubscribed" and isinstance(room_name, str):
                self._unsubscribed(room_name, r)
            elif kind == "error":
                self._on_error_frame(frame, r)
        except ProtocolViolation as err:
            self._report(err)
        return False

    def _unsubscribed(self, name: str, r: Optional[_Room]) -> None:
        """An unsubscribe of ``name`` is done (``unsubscribed``, or ``not_subscribed``)."""
        self._draining.discard(name)
        if r is None:
            return
        if r.wire == "waiting":
            r.wire = "idle"
            r.subscribe_now()
        else:
            r.on_unsubscribed()

    def _on_error_frame(self, frame: Mapping[str, Any], r: Optional[_Room]) -> None:
        code = frame.get("code")
        code = code if isinstance(code, str) else "unknown"
        message = frame.get("message")
        message = message if isinstance(message, str) else ""
        if "id" in frame:
            return  # answers a publish or presence request; this subscriber sends none
        room_name = frame.get("room")
        if code == "not_subscribed" and isinstance(room_name, str):
            self._unsubscribed(room_name, r)  # expected while a subscription restarts
        elif r is not None:
            retry_after = frame.get("retry_after_ms")
            retry_after = retry_after if isinstance(retry_after, int) and retry_after > 0 else 0
            r.on_subscription_error(code, message, retry_after)
        elif isinstance(room_name, str):
            pass  # a room we no longer follow
        elif code == "token_expired" and callable(self._token_source):
            self._spawn(self._refresh_token())
        else:
            self._report(HubcastError(code, message))

    async def _refresh_token(self) -> None:
        try:
            token = await self._credential(fresh=True)
        except HubcastError as err:
            self._report(err)
            return
        if token is not None:
            self._send({"type": "auth", "token": token})


def _int(frame: Mapping[str, Any], key: str) -> int:
    value = frame.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolViolation("%s frame: %r is not an integer" % (frame.get("type"), key))
    return value


def _str(frame: Mapping[str, Any], key: str) -> str:
    value = frame.get(key)
    if not isinstance(value, str):
        raise ProtocolViolation("%s frame: %r is not a string" % (frame.get("type"), key))
    return value


class Subscriber:
    """A blocking :class:`AsyncSubscriber`: it runs in a background thread with
    its own event loop. Same arguments; iterate it with ``for``, or call
    :meth:`get` with a timeout. Use it as a context manager or call
    :meth:`close`.

    ::

        with Subscriber("http://127.0.0.1:8787") as sub:
            sub.subscribe("market:42", cursor=saved)
            for update in sub:
                ...
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: Optional[str] = None,
        token: Optional[Union[str, TokenProvider]] = None,
        reconnect: ReconnectPolicy = ReconnectPolicy(),
        heartbeat: Optional[Heartbeat] = Heartbeat(),
        connect_timeout: float = 10.0,
        history_page_size: int = 1000,
        max_queued: int = 10_000,
        on_error: Optional[Callable[[HubcastError], None]] = None,
        on_state: Optional[Callable[[str], None]] = None,
    ) -> None:
        """See :class:`AsyncSubscriber` for the arguments. ``token`` (when a
        function) and the callbacks run in the subscriber's thread."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hubcast-subscriber", daemon=True)
        self._thread.start()

        async def make() -> AsyncSubscriber:
            return AsyncSubscriber(
                url,
                api_key=api_key,
                token=token,
                reconnect=reconnect,
                heartbeat=heartbeat,
                connect_timeout=connect_timeout,
                history_page_size=history_page_size,
                max_queued=max_queued,
                on_error=on_error,
                on_state=on_state,
            )

        try:
            self._sub = self._call(make())
        except BaseException:
            self._stop_loop()
            raise
        self._closed = False

    def _call(self, coro: Coroutine[Any, Any, _T], timeout: Optional[float] = None) -> _T:
        if self._loop.is_closed():
            coro.close()
            raise ClosedError("closed", "the subscriber is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError("no update within %ss" % timeout) from None

    @property
    def state(self) -> str:
        return self._sub.state

    @property
    def rooms(self) -> List[str]:
        return self._sub.rooms

    def cursor(self, room: str) -> Optional[Cursor]:
        """See :meth:`AsyncSubscriber.cursor` (still answers after :meth:`close`)."""
        if self._loop.is_closed():
            return self._sub.cursor(room)

        async def get() -> Optional[Cursor]:
            return self._sub.cursor(room)

        return self._call(get())

    def subscribe(self, room: str, *, cursor: Optional[Cursor] = None, rewind: Optional[int] = None) -> None:
        """See :meth:`AsyncSubscriber.subscribe`."""

        async def run() -> None:
            self._sub.subscribe(room, cursor=cursor, rewind=rewind)

        self._call(run())

    def unsubscribe(self, room: str) -> None:
        async def run() -> None:
            self._sub.unsubscribe(room)

        self._call(run())

    def wait_subscribed(self, room: str, timeout: Optional[float] = None) -> None:
        """See :meth:`AsyncSubscriber.wait_subscribed`."""
        self._call(self._sub.wait_subscribed(room, timeout))

    def get(self, timeout: Optional[float] = None) -> Update:
        """The next update; raises ``TimeoutError`` if none comes within
        ``timeout`` seconds, ``StopIteration`` once the subscriber is closed."""
        if self._closed:
            raise StopIteration
        try:
            return self._call(self._sub.__anext__(), timeout)
        except StopAsyncIteration:
            raise StopIteration from None

    def __iter__(self) -> Iterator[Update]:
        return self

    def __next__(self) -> Update:
        return self.get()

    def close(self) -> None:
        """Closes the connection and stops the background thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self._sub.close(), 10.0)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10.0)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.close()
