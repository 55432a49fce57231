"""What the sync and async clients share: URLs, request building, answers,
retry delays and the history pager. No I/O here."""

from __future__ import annotations

import json
import random
import secrets
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from datetime import datetime
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from .errors import ApiError, CursorLostError, ProtocolViolation, TransportError, api_error
from .types import BatchEvent, Cursor, Event, HistoryPage, check_room

USER_AGENT = "hubcast-python/0.1.0"


def new_idempotency_key() -> str:
    """A fresh idempotency key: 128 random bits, hex."""
    return secrets.token_hex(16)


def http_base(url: str) -> str:
    """The HTTP base URL for a server URL given as ``http(s)://`` or ``ws(s)://``
    (a path prefix is kept, a trailing slash dropped)."""
    parts = urlsplit(url)
    scheme = {"http": "http", "https": "https", "ws": "http", "wss": "https"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError("server URL %r: expected http(s)://host[:port][/prefix] or ws(s)://…" % (url,))
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def ws_base(url: str) -> str:
    """The WebSocket base URL (``ws(s)://``) for a server URL."""
    base = http_base(url)
    return "ws" + base[len("http") :]


def room_path(room: str, suffix: str = "") -> str:
    return "/v1/rooms/" + quote(check_room(room), safe=":@=") + suffix


def bearer_headers(api_key: Optional[str], token: Optional[str]) -> Dict[str, str]:
    if api_key is not None and token is not None:
        raise ValueError("give api_key or token, not both")
    credential = api_key if api_key is not None else token
    headers = {"user-agent": USER_AGENT, "accept": "application/json"}
    if credential is not None:
        if not credential or credential != credential.strip():
            raise ValueError("credential must be a non-empty string without surrounding spaces")
        headers["authorization"] = "Bearer " + credential
    return headers


def check_idempotency_key(key: str) -> str:
    if not isinstance(key, str) or not 1 <= len(key) <= 128 or any(not 0x21 <= ord(c) <= 0x7E for c in key):
        raise ValueError("idempotency key %r: 1 to 128 visible ASCII characters" % (key,))
    return key


def check_expected_seq(expected_seq: Optional[int]) -> Optional[int]:
    if expected_seq is not None and (
        not isinstance(expected_seq, int) or isinstance(expected_seq, bool) or expected_seq < 0
    ):
        raise ValueError("expected_seq must be a non-negative integer")
    return expected_seq


def json_request(body: Any, idempotency_key: Optional[str] = None) -> Tuple[bytes, Dict[str, str]]:
    """The bytes and headers of a JSON request body."""
    # allow_nan=False: NaN and Infinity are not JSON; the server would refuse them.
    content = json.dumps(body, allow_nan=False, separators=(",", ":"), ensure_ascii=False).encode()
    headers = {"content-type": "application/json"}
    if idempotency_key is not None:
        headers["idempotency-key"] = check_idempotency_key(idempotency_key)
    return content, headers


def publish_request(
    room: str, data: Any, idempotency_key: Optional[str], expected_seq: Optional[int]
) -> Tuple[str, bytes, Dict[str, str]]:
    """Path, body and headers of a publish."""
    path = room_path(room, "/events")
    body: Dict[str, Any] = {"data": data}
    if check_expected_seq(expected_seq) is not None:
        body["expected_seq"] = expected_seq
    content, headers = json_request(body, idempotency_key)
    return path, content, headers


def ephemeral_request(room: str, data: Any) -> Tuple[str, bytes, Dict[str, str]]:
    """Path, body and headers of an ephemeral publish (no key: nothing is stored to retry against)."""
    content, headers = json_request({"data": data, "ephemeral": True})
    return room_path(room, "/events"), content, headers


BatchItem = Union[BatchEvent, Tuple[str, Any]]


def batch_request(
    events: Iterable[BatchItem], idempotency_key: Optional[str]
) -> Tuple[str, bytes, Dict[str, str], int]:
    """Path, body, headers and event count of an atomic batch (``POST /v1/events``)."""
    items: List[Dict[str, Any]] = []
    for n, event in enumerate(events):
        if isinstance(event, tuple) and len(event) == 2:
            event = BatchEvent(event[0], event[1])
        if not isinstance(event, BatchEvent):
            raise ValueError("events[%d]: a BatchEvent or a (room, data) pair, not %r" % (n, event))
        item: Dict[str, Any] = {"room": check_room(event.room), "data": event.data}
        if check_expected_seq(event.expected_seq) is not None:
            item["expected_seq"] = event.expected_seq
        items.append(item)
    if not items:
        raise ValueError("a batch needs at least one event")
    content, headers = json_request({"events": items}, idempotency_key)
    return "/v1/events", content, headers, len(items)


def user_path(user: str, suffix: str) -> str:
    if not isinstance(user, str) or not 1 <= len(user.encode()) <= 256:
        raise ValueError("user %r: 1 to 256 bytes" % (user,))
    return "/v1/users/" + quote(user, safe="") + suffix


def disconnect_request(code: Optional[int], reason: Optional[str]) -> Tuple[bytes, Dict[str, str]]:
    body: Dict[str, Any] = {}
    if code is not None:
        if not isinstance(code, int) or isinstance(code, bool) or not 4000 <= code <= 4999:
            raise ValueError("code must be from 4000 to 4999")
        body["code"] = code
    if reason is not None:
        if not isinstance(reason, str) or len(reason.encode()) > 123:
            raise ValueError("reason must be a string of at most 123 bytes")
        body["reason"] = reason
    return json_request(body)


Timestamp = Union[int, float, datetime]


def seconds(value: Timestamp, what: str) -> int:
    """Seconds since the Unix epoch, from seconds or an aware ``datetime``."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("%s: a timezone-aware datetime" % what)
        return int(value.timestamp())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("%s: seconds since the Unix epoch or a datetime" % what)
    return int(value)


def revocation_request(
    jti: Optional[str], user: Optional[str], issued_before: Optional[Timestamp], expires_at: Optional[Timestamp]
) -> Tuple[bytes, Dict[str, str]]:
    body: Dict[str, Any] = {}
    if jti is not None:
        body["jti"] = jti
    if user is not None:
        body["user"] = user
    if issued_before is not None:
        body["issued_before"] = seconds(issued_before, "issued_before")
    if expires_at is not None:
        body["expires_at"] = seconds(expires_at, "expires_at")
    return json_request(body)


def retry_after(response: httpx.Response) -> Optional[float]:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
        date = parsedate_to_datetime(response.headers.get("date", value))
        return max(0.0, (when - date).total_seconds())
    except (TypeError, ValueError):
        return None


def json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def error_from(response: httpx.Response) -> ApiError:
    return api_error(response.status_code, json_body(response), text=response.text, retry_after=retry_after(response))


def ok_body(response: httpx.Response) -> Any:
    """The JSON body of a 2xx answer; raises the typed error otherwise."""
    if not 200 <= response.status_code < 300:
        raise error_from(response)
    body = json_body(response)
    if body is None:
        raise ProtocolViolation("HTTP %d answer is not JSON: %r" % (response.status_code, response.text[:200]))
    return body


def transport_error(err: httpx.TransportError) -> TransportError:
    code = "timeout" if isinstance(err, httpx.TimeoutException) else "connection_error"
    return TransportError(code, "%s: %s" % (type(err).__name__, err))


def retryable_transport(err: httpx.TransportError) -> bool:
    """Connection failures and timeouts; not a bad URL or proxy setup."""
    return not isinstance(err, (httpx.UnsupportedProtocol, httpx.ProxyError))


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried: up to ``retries`` more attempts, the
    n-th after a random delay in ``[0, min(max_delay, min_delay * 2**n))``
    seconds (full jitter), and never sooner than a ``Retry-After`` answer says."""

    retries: int = 3
    min_delay: float = 0.25
    max_delay: float = 5.0

    def delay(self, attempt: int, server_hint: Optional[float] = None) -> float:
        jittered = random.random() * min(self.max_delay, self.min_delay * 2.0 ** min(attempt, 60))
        return max(jittered, server_hint or 0.0)


class Pager:
    """The history iteration's state, without I/O: which page to read next,
    and what a page means (events to yield; the epoch pinned; pruning)."""

    def __init__(self, room: str, after: int, epoch: Optional[str], page_size: int) -> None:
        check_room(room)
        if not isinstance(after, int) or after < 0:
            raise ValueError("after must be a non-negative integer")
        if not isinstance(page_size, int) or page_size < 1:
            raise ValueError("page_size must be a positive integer")
        self.room = room
        self.seq = after
        self.epoch = epoch
        self.head: Optional[int] = None
        self.page_size = page_size
        self.pages = 0
        self.done = False

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.epoch, self.seq)

    def params(self) -> Dict[str, int]:
        return {"after": self.seq, "limit": self.page_size}

    def accept(self, page: HistoryPage) -> List[Event]:
        self.pages += 1
        self.head = page.head
        if page.epoch is None:
            # A room never written. A cursor of some epoch: that log is gone.
            if self.epoch is not None:
                raise CursorLostError(self.room, "epoch", after=self.seq, epoch=None, earliest=page.earliest, head=page.head)
            self.done = True
            return []
        if self.epoch is None:
            self.epoch = page.epoch
        elif page.epoch != self.epoch:
            raise CursorLostError(self.room, "epoch", after=self.seq, epoch=page.epoch, earliest=page.earliest, head=page.head)
        events = [e for e in page.events if e.seq > self.seq]
        first = events[0].seq if events else None
        if (first is not None and first != self.seq + 1) or (
            first is None and self.seq < page.head and self.seq + 1 < page.earliest
        ):
            earliest = max(page.earliest, first or 0)
            raise CursorLostError(self.room, "pruned", after=self.seq, epoch=page.epoch, earliest=earliest, head=page.head)
        out: List[Event] = []
        for event in events:
            if event.seq != self.seq + 1:
                raise ProtocolViolation("history of %s: seq %d after %d" % (self.room, event.seq, self.seq))
            self.seq = event.seq
            out.append(event)
        if not out or self.seq >= page.head:
            self.done = True
        return out


def parse_json_mapping(body: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise ProtocolViolation("%s: not a JSON object" % what)
    return body
