"""HTTP clients: publish, history, room stats. :class:`Client` is blocking,
:class:`AsyncClient` is for asyncio; both have the same methods."""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from collections import deque
from typing import Any, AsyncIterator, Deque, Dict, Iterator, List, Optional, Tuple, Type, Union

import httpx

from ._common import (
    Pager,
    RetryPolicy,
    bearer_headers,
    error_from,
    http_base,
    new_idempotency_key,
    ok_body,
    publish_request,
    retryable_transport,
    room_path,
    transport_error,
)
from .errors import ApiError, HubcastError
from .types import Cursor, Event, HistoryPage, Receipt, RoomStats, parse_history, parse_receipt, parse_stats

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


def _receipt(response: httpx.Response, key: Optional[str]) -> Receipt:
    body = ok_body(response)
    if response.status_code not in (200, 201):
        raise ApiError("unexpected_status", "publish answered %d" % response.status_code, status=response.status_code, body=body)
    return parse_receipt(body, duplicate=response.status_code == 200, idempotency_key=key)


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
