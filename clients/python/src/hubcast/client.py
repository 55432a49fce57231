"""HTTP clients: publish (single, atomic batch, ephemeral), history, room
stats, and the admin routes. :class:`Client` is blocking, :class:`AsyncClient`
is for asyncio; both have the same methods."""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from collections import deque
from typing import Any, AsyncIterator, Collection, Deque, Dict, Iterable, Iterator, List, Optional, Tuple, Type, Union

import httpx

from ._common import (
    BatchItem,
    Pager,
    RetryPolicy,
    Timestamp,
    batch_request,
    bearer_headers,
    disconnect_request,
    ephemeral_request,
    error_from,
    http_base,
    new_idempotency_key,
    ok_body,
    publish_request,
    retryable_transport,
    revocation_request,
    room_path,
    transport_error,
    user_path,
)
from .errors import ApiError, HubcastError
from .types import (
    Cursor,
    Disconnected,
    EphemeralReceipt,
    Event,
    HistoryPage,
    Presence,
    Receipt,
    Revocation,
    RoomDeleted,
    RoomStats,
    parse_batch_receipts,
    parse_disconnected,
    parse_ephemeral_receipt,
    parse_history,
    parse_presence,
    parse_receipt,
    parse_revocation,
    parse_revocations,
    parse_room_deleted,
    parse_stats,
)

Timeout = Union[float, httpx.Timeout]


class _Base:
    def __init__(
        self,
        url: str,
        *,
        api_key: Optional[str],
        token: Optional[str],
        retry: RetryPolicy,
    ) -> None:
        self.url = http_base(url)
        self._headers = bearer_headers(api_key, token)
        self.retry = retry

    def _publish_plan(
        self, idempotency_key: Optional[str], retries: Optional[int]
    ) -> Tuple[Optional[str], int]:
        """The key to send and how many retries a publish may make: retries
        need an idempotency key (it is what makes them safe); one is generated
        when the caller asks for retries without giving a key."""
        if retries is not None and (not isinstance(retries, int) or retries < 0):
            raise ValueError("retries must be a non-negative integer")
        key = idempotency_key
        if key is None and retries:
            key = new_idempotency_key()
        if key is None:
            return None, 0
        return key, self.retry.retries if retries is None else retries


def _expect(response: httpx.Response, statuses: Collection[int], what: str) -> Any:
    """The JSON body of an answer with one of ``statuses``; the typed error for
    an error answer; ``ApiError("unexpected_status")`` for another 2xx."""
    body = ok_body(response)
    if response.status_code not in statuses:
        raise ApiError("unexpected_status", "%s answered %d" % (what, response.status_code),
                       status=response.status_code, body=body)
    return body


def _receipt(response: httpx.Response, key: Optional[str]) -> Receipt:
    if response.status_code == 202:
        # An `ephemeral = "only"` room takes every publish as ephemeral.
        raise ApiError("ephemeral_room", "the room takes only ephemeral messages: this one was handed to its "
                       "subscribers but not stored (use publish_ephemeral)", status=202, body=ok_body(response))
    body = _expect(response, (200, 201), "publish")
    return parse_receipt(body, duplicate=response.status_code == 200, idempotency_key=key)


def _batch_receipts(response: httpx.Response, key: Optional[str], count: int) -> List[Receipt]:
    body = _expect(response, (200, 201), "batch publish")
    return parse_batch_receipts(body, duplicate=response.status_code == 200, idempotency_key=key, count=count)


class Client(_Base):
    """A blocking client of a hubcast server's HTTP API.

    ``url`` is the server's base URL (``http(s)://host:port``, a path prefix is
    kept; ``ws(s)://`` works too). ``api_key`` or ``token`` (a JWT) is sent as
    ``Authorization: Bearer``. ``retry`` says how transient failures (503 with
    ``Retry-After``, 429, connection errors, timeouts) are retried: reads
    always, publishes only when they carry an idempotency key.

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: Optional[str] = None,
        token: Optional[str] = None,
        timeout: Timeout = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        http: Optional[httpx.Client] = None,
    ) -> None:
        super().__init__(url, api_key=api_key, token=token, retry=retry)
        self._own_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._own_http:
            self._http.close()

    # ----------------------------------------------------------------- requests

    def _send(self, method: str, path: str, retries: int, **kwargs: Any) -> httpx.Response:
        headers: Dict[str, str] = dict(self._headers)
        headers.update(kwargs.pop("headers", {}))
        attempt = 0
        while True:
            try:
                response = self._http.request(method, self.url + path, headers=headers, **kwargs)
            except httpx.TransportError as err:
                if attempt < retries and retryable_transport(err):
                    time.sleep(self.retry.delay(attempt))
                    attempt += 1
                    continue
                raise transport_error(err) from err
            if response.status_code in (429, 503) and attempt < retries:
                error = error_from(response)
                time.sleep(self.retry.delay(attempt, error.retry_after))
                attempt += 1
                continue
            return response

    def publish(
        self,
        room: str,
        data: Any,
        *,
        idempotency_key: Optional[str] = None,
        expected_seq: Optional[int] = None,
        retries: Optional[int] = None,
    ) -> Receipt:
        """Appends ``data`` (any JSON value) to ``room``.

        Returns the :class:`Receipt` (``duplicate`` when the key had already
        been used in the room: nothing was appended). ``expected_seq`` appends
        only if the room's head is that seq, else raises
        :class:`~hubcast.ConflictError` with the current ``head``.

        With an ``idempotency_key``, transient failures are retried (up to
        ``retries``, default the client's ``retry.retries``); a retry of a
        publish that was appended gets its first receipt. ``retries=N``
        without a key generates one (``Receipt.idempotency_key``). Without
        either, a failure is raised at once.
        """
        key, retries_left = self._publish_plan(idempotency_key, retries)
        path, content, headers = publish_request(room, data, key, expected_seq)
        response = self._send("POST", path, retries_left, content=content, headers=headers)
        return _receipt(response, key)

    def publish_batch(
        self,
        events: Iterable[BatchItem],
        *,
        idempotency_key: Optional[str] = None,
        retries: Optional[int] = None,
    ) -> List[Receipt]:
        """Appends ``events`` (:class:`BatchEvent`\ s or ``(room, data)``
        pairs, to one or more rooms) atomically: all in one transaction, or
        none (``POST /v1/events``). Returns one :class:`Receipt` per event, in
        request order; within a room the seqs are consecutive.

        An ``expected_seq`` that is not its room's head (earlier events of the
        batch in that room count) raises :class:`~hubcast.ConflictError` with
        ``index`` (the event), ``room``, ``head`` and ``epoch``, and nothing is
        appended. ``idempotency_key`` and ``retries`` work as for
        :meth:`publish`, for the batch as a whole: a retry of a batch that was
        appended gets its receipts with ``duplicate=True``; the same key with
        another batch raises :class:`~hubcast.IdempotencyMismatchError`.
        """
        key, retries_left = self._publish_plan(idempotency_key, retries)
        path, content, headers, count = batch_request(events, key)
        response = self._send("POST", path, retries_left, content=content, headers=headers)
        return _batch_receipts(response, key, count)

    def publish_ephemeral(self, room: str, data: Any) -> EphemeralReceipt:
        """Hands ``data`` to the room's current subscribers on every node,
        live only: not stored, no seq, never replayed (``"ephemeral": true``;
        the room's namespace must set ``ephemeral = "allowed"`` or ``"only"``,
        else :class:`~hubcast.ForbiddenError` ``ephemeral_not_allowed``).
        Sent once: with nothing stored there is no key to make a retry safe."""
        path, content, headers = ephemeral_request(room, data)
        response = self._send("POST", path, 0, content=content, headers=headers)
        return parse_ephemeral_receipt(_expect(response, (202,), "ephemeral publish"))

    # ------------------------------------------------------------------ admin
    # Each needs admin access: an API key with `admin = true`, a token with the
    # `admin` claim, or (no credentials configured) a loopback client.

    def presence(self, room: str) -> Presence:
        """``GET /v1/rooms/{room}/presence``: the room's members on every node (admin)."""
        response = self._send("GET", room_path(room, "/presence"), self.retry.retries)
        return parse_presence(_expect(response, (200,), "presence"))

    def disconnect_user(self, user: str, *, code: Optional[int] = None, reason: Optional[str] = None) -> Disconnected:
        """Closes every session of ``user`` (a token's ``sub``) on every node
        with ``code`` (default 4011, final for the SDKs; 4000–4999) and
        ``reason`` (default ``disconnected``) (admin). Retried like a read:
        disconnecting twice does nothing more."""
        content, headers = disconnect_request(code, reason)
        response = self._send("POST", user_path(user, "/disconnect"), self.retry.retries, content=content, headers=headers)
        return parse_disconnected(_expect(response, (202,), "disconnect"))

    def revoke_token(self, jti: str, *, expires_at: Optional[Timestamp] = None) -> Revocation:
        """Refuses the token whose ``jti`` claim this is, from now on, on
        every node, and closes its sessions (4012) (admin). ``expires_at``
        (seconds or an aware datetime) is when the entry may be forgotten:
        when the token expires (default: the server's
        ``revocations.default_ttl_secs`` from now). Durable when this returns."""
        content, headers = revocation_request(jti, None, None, expires_at)
        response = self._send("POST", "/v1/revocations", self.retry.retries, content=content, headers=headers)
        return parse_revocation(_expect(response, (201,), "revocation"))

    def revoke_user(
        self, user: str, issued_before: Timestamp, *, expires_at: Optional[Timestamp] = None
    ) -> Revocation:
        """Refuses every token of ``user`` (``sub``) issued before
        ``issued_before`` (its ``iat``; tokens without ``iat`` too), and
        closes their sessions (4012) (admin). See :meth:`revoke_token`."""
        content, headers = revocation_request(None, user, issued_before, expires_at)
        response = self._send("POST", "/v1/revocations", self.retry.retries, content=content, headers=headers)
        return parse_revocation(_expect(response, (201,), "revocation"))

    def revocations(self) -> List[Revocation]:
        """``GET /v1/revocations``: the revocations in force, oldest first (admin)."""
        response = self._send("GET", "/v1/revocations", self.retry.retries)
        return parse_revocations(_expect(response, (200,), "revocations"))

    def delete_room(self, room: str) -> RoomDeleted:
        """Deletes the room's log (its events and idempotency keys); the room
        goes on with an empty log under a new epoch, and its subscribers get a
        live ``reset`` (admin). :class:`~hubcast.NotFoundError` for a room
        never written. Sent once: a retry could delete events published since."""
        response = self._send("DELETE", room_path(room), 0)
        return parse_room_deleted(_expect(response, (200,), "delete room"))

    def history_page(self, room: str, *, after: int = 0, limit: int = 100) -> HistoryPage:
        """One page of ``GET /v1/rooms/{room}/events``: the retained events with
        ``seq > after``, oldest first, at most ``limit`` (the server caps it)."""
        pager = Pager(room, after, None, limit)
        response = self._send("GET", room_path(room, "/events"), self.retry.retries, params=pager.params())
        return parse_history(room, ok_body(response))

    def history(
        self, room: str, *, after: int = 0, epoch: Optional[str] = None, page_size: int = 1000
    ) -> "History":
        """Iterates the room's events after seq ``after``, page by page, up to the
        head the last page reported. ``epoch`` (the epoch of your cursor) makes
        it raise :class:`~hubcast.CursorLostError` if the room's log is another
        one; so does a cursor whose next events were pruned by retention."""
        return History(self, Pager(room, after, epoch, page_size))

    def room_stats(self, room: str) -> RoomStats:
        """``GET /v1/rooms/{room}``: epoch, head, earliest, retained, subscribers."""
        response = self._send("GET", room_path(room), self.retry.retries)
        return parse_stats(ok_body(response))

    def _page(self, pager: Pager) -> List[Event]:
        response = self._send("GET", room_path(pager.room, "/events"), self.retry.retries, params=pager.params())
        return pager.accept(parse_history(pager.room, ok_body(response)))


class History(Iterator[Event]):
    """An iteration of a room's history (see :meth:`Client.history`).
    ``cursor`` is where it is (the epoch, the seq of the last event yielded);
    ``head`` the head the last page reported; ``pages`` how many were read."""

    def __init__(self, client: Client, pager: Pager) -> None:
        self._client = client
        self._pager = pager
        self._buffer: Deque[Event] = deque()

    @property
    def cursor(self) -> Cursor:
        return self._pager.cursor

    @property
    def head(self) -> Optional[int]:
        return self._pager.head

    @property
    def pages(self) -> int:
        return self._pager.pages

    def __iter__(self) -> "History":
        return self

    def __next__(self) -> Event:
        while not self._buffer:
            if self._pager.done:
                raise StopIteration
            self._buffer.extend(self._client._page(self._pager))
        return self._buffer.popleft()


class AsyncClient(_Base):
    """The asyncio twin of :class:`Client`: the same arguments and methods,
    awaited (``history`` is an async iterator). Use ``async with`` or
    ``await client.aclose()``."""

    def __init__(
        self,
        url: str,
        *,
        api_key: Optional[str] = None,
        token: Optional[str] = None,
        timeout: Timeout = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        http: Optional[httpx.AsyncClient] = None,
    ) -> None:
        super().__init__(url, api_key=api_key, token=token, retry=retry)
        self._own_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=timeout)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def _send(self, method: str, path: str, retries: int, **kwargs: Any) -> httpx.Response:
        headers: Dict[str, str] = dict(self._headers)
        headers.update(kwargs.pop("headers", {}))
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, self.url + path, headers=headers, **kwargs)
            except httpx.TransportError as err:
                if attempt < retries and retryable_transport(err):
                    await asyncio.sleep(self.retry.delay(attempt))
                    attempt += 1
                    continue
                raise transport_error(err) from err
            if response.status_code in (429, 503) and attempt < retries:
                error = error_from(response)
                await asyncio.sleep(self.retry.delay(attempt, error.retry_after))
                attempt += 1
                continue
            return response

    async def publish(
        self,
        room: str,
        data: Any,
        *,
        idempotency_key: Optional[str] = None,
        expected_seq: Optional[int] = None,
        retries: Optional[int] = None,
    ) -> Receipt:
        """See :meth:`Client.publish`."""
        key, retries_left = self._publish_plan(idempotency_key, retries)
        path, content, headers = publish_request(room, data, key, expected_seq)
        response = await self._send("POST", path, retries_left, content=content, headers=headers)
        return _receipt(response, key)

    async def publish_batch(
        self,
        events: Iterable[BatchItem],
        *,
        idempotency_key: Optional[str] = None,
        retries: Optional[int] = None,
    ) -> List[Receipt]:
        """See :meth:`Client.publish_batch`."""
        key, retries_left = self._publish_plan(idempotency_key, retries)
        path, content, headers, count = batch_request(events, key)
        response = await self._send("POST", path, retries_left, content=content, headers=headers)
        return _batch_receipts(response, key, count)

    async def publish_ephemeral(self, room: str, data: Any) -> EphemeralReceipt:
        """See :meth:`Client.publish_ephemeral`."""
        path, content, headers = ephemeral_request(room, data)
        response = await self._send("POST", path, 0, content=content, headers=headers)
        return parse_ephemeral_receipt(_expect(response, (202,), "ephemeral publish"))

    async def presence(self, room: str) -> Presence:
        """See :meth:`Client.presence`."""
        response = await self._send("GET", room_path(room, "/presence"), self.retry.retries)
        return parse_presence(_expect(response, (200,), "presence"))

    async def disconnect_user(
        self, user: str, *, code: Optional[int] = None, reason: Optional[str] = None
    ) -> Disconnected:
        """See :meth:`Client.disconnect_user`."""
        content, headers = disconnect_request(code, reason)
        response = await self._send(
            "POST", user_path(user, "/disconnect"), self.retry.retries, content=content, headers=headers
        )
        return parse_disconnected(_expect(response, (202,), "disconnect"))

    async def revoke_token(self, jti: str, *, expires_at: Optional[Timestamp] = None) -> Revocation:
        """See :meth:`Client.revoke_token`."""
        content, headers = revocation_request(jti, None, None, expires_at)
        response = await self._send("POST", "/v1/revocations", self.retry.retries, content=content, headers=headers)
        return parse_revocation(_expect(response, (201,), "revocation"))

    async def revoke_user(
        self, user: str, issued_before: Timestamp, *, expires_at: Optional[Timestamp] = None
    ) -> Revocation:
        """See :meth:`Client.revoke_user`."""
        content, headers = revocation_request(None, user, issued_before, expires_at)
        response = await self._send("POST", "/v1/revocations", self.retry.retries, content=content, headers=headers)
        return parse_revocation(_expect(response, (201,), "revocation"))

    async def revocations(self) -> List[Revocation]:
        """See :meth:`Client.revocations`."""
        response = await self._send("GET", "/v1/revocations", self.retry.retries)
        return parse_revocations(_expect(response, (200,), "revocations"))

    async def delete_room(self, room: str) -> RoomDeleted:
        """See :meth:`Client.delete_room`."""
        response = await self._send("DELETE", room_path(room), 0)
        return parse_room_deleted(_expect(response, (200,), "delete room"))

    async def history_page(self, room: str, *, after: int = 0, limit: int = 100) -> HistoryPage:
        """See :meth:`Client.history_page`."""
        pager = Pager(room, after, None, limit)
        response = await self._send("GET", room_path(room, "/events"), self.retry.retries, params=pager.params())
        return parse_history(room, ok_body(response))

    def history(
        self, room: str, *, after: int = 0, epoch: Optional[str] = None, page_size: int = 1000
    ) -> "AsyncHistory":
        """See :meth:`Client.history`; iterate with ``async for``."""
        return AsyncHistory(self, Pager(room, after, epoch, page_size))

    async def room_stats(self, room: str) -> RoomStats:
        """See :meth:`Client.room_stats`."""
        response = await self._send("GET", room_path(room), self.retry.retries)
        return parse_stats(ok_body(response))

    async def _page(self, pager: Pager) -> List[Event]:
        response = await self._send("GET", room_path(pager.room, "/events"), self.retry.retries, params=pager.params())
        return pager.accept(parse_history(pager.room, ok_body(response)))


class AsyncHistory(AsyncIterator[Event]):
    """The async twin of :class:`History`."""

    def __init__(self, client: AsyncClient, pager: Pager) -> None:
        self._client = client
        self._pager = pager
        self._buffer: Deque[Event] = deque()

    @property
    def cursor(self) -> Cursor:
        return self._pager.cursor

    @property
    def head(self) -> Optional[int]:
        return self._pager.head

    @property
    def pages(self) -> int:
        return self._pager.pages

    def __aiter__(self) -> "AsyncHistory":
        return self

    async def __anext__(self) -> Event:
        while not self._buffer:
            if self._pager.done:
                raise StopAsyncIteration
            self._buffer.extend(await self._client._page(self._pager))
        return self._buffer.popleft()


__all__ = ["Client", "AsyncClient", "History", "AsyncHistory", "RetryPolicy", "HubcastError"]
