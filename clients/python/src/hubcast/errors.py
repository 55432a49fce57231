"""Typed errors.

Every error the library raises is a :class:`HubcastError` with a ``code``: the
server's error code (docs/protocol.md, *Error codes*) for answers from the
server, or one of the library's own codes (``connection_error``, ``timeout``,
``protocol_violation``, ``cursor_lost``, ``webhook_invalid``, ``closed``).

An HTTP error answer (``{"error": CODE, "message": TEXT}``) becomes the
:class:`ApiError` subclass for its code (or, for a code this library does not
know, for its status), carrying ``code``, ``status`` and the whole ``body``.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Type


class HubcastError(Exception):
    """Base of every error this library raises."""

    code: str
    message: str
    status: Optional[int]

    def __init__(self, code: str, message: str, *, status: Optional[int] = None) -> None:
        super().__init__(f"{code}: {message}" if status is None else f"{code} (HTTP {status}): {message}")
        self.code = code
        self.message = message
        self.status = status


# ---------------------------------------------------------------- HTTP answers


class ApiError(HubcastError):
    """An error answer from the server: ``status`` is its HTTP status, ``code``
    the body's ``error`` and ``body`` the whole JSON body."""

    status: int
    body: Mapping[str, Any]
    retry_after: Optional[float]

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int,
        body: Optional[Mapping[str, Any]] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(code, message, status=status)
        self.status = status
        self.body = dict(body) if body is not None else {}
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        """Whether the request may succeed when sent again unchanged (503, 429):
        nothing was appended, a retry with the same idempotency key is safe."""
        return self.status in (429, 503)


class BadRequestError(ApiError):
    """400: ``invalid_json``, ``bad_request``, ``invalid_room``, ``invalid_parameter``."""


class InvalidRoomError(BadRequestError, ValueError):
    """400 ``invalid_room``. Also raised before sending anything for a room name
    outside ``A-Z a-z 0-9 _ - : . @ =`` or longer than 128 bytes (so it is a
    ``ValueError`` too)."""


class UnauthenticatedError(ApiError):
    """401 ``unauthenticated``: no credential where one is needed, or a bad one."""


class TokenExpiredError(UnauthenticatedError):
    """401 ``token_expired``: the token's ``exp`` has passed."""


class TokenRevokedError(UnauthenticatedError):
    """401 ``token_revoked``: an operator revoked the token; a new one must be issued."""


class ForbiddenError(ApiError):
    """403 ``forbidden``: valid credentials without the grant (also
    ``ephemeral_not_allowed``: an ephemeral publish to a room whose namespace
    does not take them)."""


class NotFoundError(ApiError):
    """404 ``not_found`` (405 ``method_not_allowed`` too): no such route."""


class ConflictError(ApiError):
    """409 ``conflict``: ``expected_seq`` was not the room's head; nothing was
    appended. ``head`` and ``epoch`` are the room's current ones. For a batch,
    ``index`` is the (0-based) event that conflicted and ``room`` its room;
    nothing of the batch was appended, in any room."""

    head: int
    epoch: Optional[str]
    index: Optional[int]
    room: Optional[str]

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int,
        body: Optional[Mapping[str, Any]] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(code, message, status=status, body=body, retry_after=retry_after)
        raw_head = self.body.get("head")
        self.head = raw_head if isinstance(raw_head, int) else 0
        raw_epoch = self.body.get("epoch")
        self.epoch = raw_epoch if isinstance(raw_epoch, str) else None
        raw_index = self.body.get("index")
        self.index = raw_index if isinstance(raw_index, int) and not isinstance(raw_index, bool) else None
        raw_room = self.body.get("room")
        self.room = raw_room if isinstance(raw_room, str) else None


class IdempotencyMismatchError(ApiError):
    """422 ``idempotency_mismatch``: the idempotency key was used before for
    another event (or batch); nothing was appended. Use a new key for a new event."""


class TooLargeError(ApiError):
    """413 ``too_large``: the event is over the server's size limit."""


class RateLimitedError(ApiError):
    """429 ``rate_limited``: over the credential's publish rate; nothing was appended."""


class UnavailableError(ApiError):
    """503 ``store_unavailable``, ``auth_unavailable``, ``shutting_down``, ``over_capacity``: nothing was
    done; retry (with the same idempotency key) after ``retry_after`` seconds."""


class InternalServerError(ApiError):
    """500 ``internal``: a server bug."""


_BY_CODE: Dict[str, Type[ApiError]] = {
    "invalid_json": BadRequestError,
    "bad_request": BadRequestError,
    "unknown_type": BadRequestError,
    "invalid_parameter": BadRequestError,
    "invalid_room": InvalidRoomError,
    "unauthenticated": UnauthenticatedError,
    "token_expired": TokenExpiredError,
    "token_revoked": TokenRevokedError,
    "forbidden": ForbiddenError,
    "ephemeral_not_allowed": ForbiddenError,
    "not_found": NotFoundError,
    "method_not_allowed": NotFoundError,
    "conflict": ConflictError,
    "idempotency_mismatch": IdempotencyMismatchError,
    "too_large": TooLargeError,
    "rate_limited": RateLimitedError,
    "over_capacity": UnavailableError,
    "store_unavailable": UnavailableError,
    "auth_unavailable": UnavailableError,
    "shutting_down": UnavailableError,
    "internal": InternalServerError,
}

_BY_STATUS: Dict[int, Type[ApiError]] = {
    400: BadRequestError,
    401: UnauthenticatedError,
    403: ForbiddenError,
    404: NotFoundError,
    405: NotFoundError,
    409: ConflictError,
    413: TooLargeError,
    429: RateLimitedError,
    503: UnavailableError,
    500: InternalServerError,
}


def api_error(
    status: int,
    body: Any,
    *,
    text: str = "",
    retry_after: Optional[float] = None,
) -> ApiError:
    """The typed error for an HTTP error answer. ``body`` is the parsed JSON body
    (or ``None`` when it was not JSON; ``text`` is then the raw body)."""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        code: str = body["error"]
        message = body.get("message")
        message = message if isinstance(message, str) else ""
        cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or ApiError
        return cls(code, message, status=status, body=body, retry_after=retry_after)
    # Not hubcast's JSON (a proxy in front, say): keep the status, name it by status.
    cls = _BY_STATUS.get(status) or ApiError
    code = "http_%d" % status
    return cls(code, text[:500] or "HTTP %d without an error body" % status, status=status, retry_after=retry_after)


# ------------------------------------------------------------ the library's own


class TransportError(HubcastError):
    """The request could not be made or answered (``connection_error``,
    ``timeout``): it may or may not have reached the server."""


class ProtocolViolation(HubcastError):
    """An answer or frame that is not what the protocol says (``protocol_violation``)."""

    def __init__(self, message: str) -> None:
        super().__init__("protocol_violation", message)


class CursorLostError(HubcastError):
    """History iteration cannot continue from its cursor (``cursor_lost``): the
    room's log was recreated (``reason == "epoch"``) or the events after the
    cursor were pruned by retention (``reason == "pruned"``). Reload your state.
    """

    room: str
    reason: str
    after: int
    epoch: Optional[str]
    earliest: int
    head: int

    def __init__(self, room: str, reason: str, *, after: int, epoch: Optional[str], earliest: int, head: int) -> None:
        what = (
            "the room's log has another epoch (%s) than the cursor's" % epoch
            if reason == "epoch"
            else "events after seq %d were pruned (earliest retained: %d)" % (after, earliest)
        )
        super().__init__("cursor_lost", "%s: %s" % (room, what))
        self.room = room
        self.reason = reason
        self.after = after
        self.epoch = epoch
        self.earliest = earliest
        self.head = head


class SubscriptionError(HubcastError):
    """The server refused or ended a room's subscription (``forbidden``,
    ``unauthenticated``, ``token_expired``, ``too_many_subscriptions``,
    ``invalid_room``). The room is not subscribed on this connection; the next
    connection tries again (unsubscribe the room to stop that)."""

    room: str

    def __init__(self, code: str, message: str, room: str) -> None:
        super().__init__(code, "%s: %s" % (room, message))
        self.room = room


class ClosedError(HubcastError):
    """The subscriber is closed for good: by :meth:`close` (``code == "closed"``),
    or by a terminal close code from the server (``close_code`` 4001
    ``unauthenticated``, 4003 ``forbidden``, 1008 ``policy_violation``, 1009
    ``frame_too_big``, 4011 ``disconnected``, 4012 ``token_revoked``), after
    which it never reconnects by itself."""

    close_code: Optional[int]

    def __init__(self, code: str, message: str, close_code: Optional[int] = None) -> None:
        super().__init__(code, message)
        self.close_code = close_code


class WebhookVerificationError(HubcastError):
    """A webhook whose headers or signature do not verify (``webhook_invalid``)."""

    def __init__(self, message: str) -> None:
        super().__init__("webhook_invalid", message)
