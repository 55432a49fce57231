"""The values the library hands out: receipts, events, cursors, pages, stats,
and the admin routes' answers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional

from .errors import InvalidRoomError, ProtocolViolation

#: Any JSON value (event data).
JSON = Any

_ROOM = re.compile(r"[A-Za-z0-9_\-:.@=]{1,128}")
_PATTERN = re.compile(r"[A-Za-z0-9_\-:.@=*]{1,128}")


def check_room(room: str) -> str:
    """Returns ``room`` if it is a valid room name (1–128 characters from
    ``A-Z a-z 0-9 _ - : . @ =``), else raises :class:`InvalidRoomError`
    with status 400, as the server would: refused before anything was sent."""
    if not isinstance(room, str) or _ROOM.fullmatch(room) is None:
        raise InvalidRoomError(
            "invalid_room",
            "room name %r: 1 to 128 characters from A-Z a-z 0-9 _ - : . @ = (refused before sending)" % (room,),
            status=400,
        )
    return room


def check_pattern(pattern: str) -> str:
    """Returns ``pattern`` if it is a valid room pattern (a room name in which
    ``*`` stands for any run of characters), else raises ``ValueError``."""
    if not isinstance(pattern, str) or _PATTERN.fullmatch(pattern) is None:
        raise ValueError("room pattern %r: 1 to 128 characters from A-Z a-z 0-9 _ - : . @ = *" % (pattern,))
    return pattern


@dataclass(frozen=True)
class Cursor:
    """Where a reader is in a room: the room's ``epoch`` and the ``seq`` of the
    last event it processed. Persist it to resume later."""

    epoch: Optional[str]
    seq: int


@dataclass(frozen=True)
class Receipt:
    """The answer to a publish.

    ``duplicate`` is ``True`` when the server answered 200: the idempotency key
    had already been used in this room (perhaps by an earlier attempt of this
    very call that was appended but whose answer was lost), so this is the
    first append's receipt and nothing was appended now. ``False`` means 201:
    appended, durable.
    """

    room: str
    seq: int
    epoch: str
    ts: int
    duplicate: bool = False
    idempotency_key: Optional[str] = None

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.epoch, self.seq)


@dataclass(frozen=True)
class EphemeralReceipt:
    """The answer to an ephemeral publish (HTTP 202): handed to the room's
    current subscribers on every node at ``ts``; not stored, no seq."""

    room: str
    ts: int


@dataclass(frozen=True)
class BatchEvent:
    """One event of an atomic batch (:meth:`Client.publish_batch`): ``data``
    for ``room``, appended only if the room's head is ``expected_seq`` (when
    given; earlier events of the batch in the same room count)."""

    room: str
    data: JSON
    expected_seq: Optional[int] = None


@dataclass(frozen=True)
class Event:
    """One event of a room: ``seq`` is its place in the room's gapless log,
    ``ts`` milliseconds since the Unix epoch, ``data`` any JSON value;
    ``epoch`` the room's epoch (``None`` only if not known)."""

    room: str
    seq: int
    ts: int
    data: JSON
    epoch: Optional[str] = None

    @property
    def cursor(self) -> Cursor:
        """The cursor that resumes right after this event."""
        return Cursor(self.epoch, self.seq)


@dataclass(frozen=True)
class Reset:
    """The subscriber's cursor could not be served (pruned by retention, another
    epoch, or ahead of the head): reload your state. Delivery continues with
    the events after ``head`` of log ``epoch``. ``earliest`` is the oldest
    retained seq (``None`` when the server did not say); ``previous`` the
    cursor that could not be served."""

    room: str
    epoch: str
    earliest: Optional[int]
    head: int
    previous: Optional[Cursor] = None

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.epoch, self.head)


@dataclass(frozen=True)
class HistoryPage:
    """One answer of ``GET /v1/rooms/{room}/events``. ``epoch`` is ``None`` and
    ``head`` 0 for a room never written."""

    room: str
    epoch: Optional[str]
    head: int
    earliest: int
    events: List[Event] = field(default_factory=list)


@dataclass(frozen=True)
class RoomStats:
    """``GET /v1/rooms/{room}``: ``subscribers`` counts the answering node's sessions."""

    room: str
    epoch: Optional[str]
    head: int
    earliest: int
    retained: int
    subscribers: int


@dataclass(frozen=True)
class Member:
    """A member of a room's presence: ``id`` is the token's ``sub`` (or the
    session id of a session without one), ``info`` the token's ``info`` claim,
    ``since`` when it entered (ms since the Unix epoch)."""

    id: str
    since: int
    info: JSON = None


@dataclass(frozen=True)
class Presence:
    """``GET /v1/rooms/{room}/presence``: the room's members on every node, sorted by ``id``."""

    room: str
    members: List[Member] = field(default_factory=list)


@dataclass(frozen=True)
class Disconnected:
    """``POST /v1/users/{user}/disconnect``: every node was told to close the
    user's sessions with close ``code`` and ``reason``."""

    user: str
    code: int
    reason: str


@dataclass(frozen=True)
class Revocation:
    """A revocation in force: one token (``jti``) or every token of ``user``
    issued before ``issued_before`` (seconds since the Unix epoch; tokens
    without ``iat`` too). ``expires_at`` (seconds) is when it is forgotten."""

    expires_at: int
    jti: Optional[str] = None
    user: Optional[str] = None
    issued_before: Optional[int] = None


@dataclass(frozen=True)
class RoomDeleted:
    """``DELETE /v1/rooms/{room}``: the room goes on with an empty log under
    the new ``epoch``; its next publish is seq 1."""

    room: str
    epoch: str

    @property
    def cursor(self) -> Cursor:
        """The cursor at the start of the new log."""
        return Cursor(self.epoch, 0)


# ------------------------------------------------------------------ parsing


def _int(body: Mapping[str, Any], key: str, what: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolViolation("%s: %r is not an integer: %r" % (what, key, value))
    return value


def _str(body: Mapping[str, Any], key: str, what: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise ProtocolViolation("%s: %r is not a string: %r" % (what, key, value))
    return value


def _opt_str(body: Mapping[str, Any], key: str, what: str) -> Optional[str]:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise ProtocolViolation("%s: %r is not a string or null: %r" % (what, key, value))
    return value


def _object(body: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise ProtocolViolation("%s: not a JSON object: %r" % (what, body))
    return body


def parse_receipt(body: Any, *, duplicate: bool, idempotency_key: Optional[str]) -> Receipt:
    b = _object(body, "publish receipt")
    return Receipt(
        room=_str(b, "room", "publish receipt"),
        seq=_int(b, "seq", "publish receipt"),
        epoch=_str(b, "epoch", "publish receipt"),
        ts=_int(b, "ts", "publish receipt"),
        duplicate=duplicate,
        idempotency_key=idempotency_key,
    )


def parse_batch_receipts(body: Any, *, duplicate: bool, idempotency_key: Optional[str], count: int) -> List[Receipt]:
    b = _object(body, "batch receipt")
    raw = b.get("events")
    if not isinstance(raw, list) or len(raw) != count:
        raise ProtocolViolation("batch receipt: expected a list of %d receipts: %r" % (count, raw))
    return [parse_receipt(r, duplicate=duplicate, idempotency_key=idempotency_key) for r in raw]


def parse_ephemeral_receipt(body: Any) -> EphemeralReceipt:
    b = _object(body, "ephemeral receipt")
    if b.get("ephemeral") is not True:
        raise ProtocolViolation("ephemeral receipt: no \"ephemeral\": true: %r" % (b,))
    return EphemeralReceipt(room=_str(b, "room", "ephemeral receipt"), ts=_int(b, "ts", "ephemeral receipt"))


def parse_presence(body: Any) -> Presence:
    b = _object(body, "presence")
    raw = b.get("members")
    if not isinstance(raw, list):
        raise ProtocolViolation("presence: members is not a list")
    members = []
    for m in raw:
        member = _object(m, "presence member")
        members.append(Member(id=_str(member, "id", "presence member"), since=_int(member, "since", "presence member"),
                              info=member.get("info")))
    return Presence(room=_str(b, "room", "presence"), members=members)


def parse_disconnected(body: Any) -> Disconnected:
    b = _object(body, "disconnect")
    return Disconnected(user=_str(b, "user", "disconnect"), code=_int(b, "code", "disconnect"),
                        reason=_str(b, "reason", "disconnect"))


def parse_revocation(body: Any) -> Revocation:
    b = _object(body, "revocation")
    issued_before = b.get("issued_before")
    if issued_before is not None and (not isinstance(issued_before, int) or isinstance(issued_before, bool)):
        raise ProtocolViolation("revocation: issued_before is not an integer: %r" % (issued_before,))
    revocation = Revocation(
        expires_at=_int(b, "expires_at", "revocation"),
        jti=_opt_str(b, "jti", "revocation"),
        user=_opt_str(b, "user", "revocation"),
        issued_before=issued_before,
    )
    if (revocation.jti is None) == (revocation.user is None):
        raise ProtocolViolation("revocation: neither or both of jti and user: %r" % (b,))
    return revocation


def parse_revocations(body: Any) -> List[Revocation]:
    raw = _object(body, "revocations").get("revocations")
    if not isinstance(raw, list):
        raise ProtocolViolation("revocations: not a list")
    return [parse_revocation(r) for r in raw]


def parse_room_deleted(body: Any) -> RoomDeleted:
    b = _object(body, "deleted room")
    return RoomDeleted(room=_str(b, "room", "deleted room"), epoch=_str(b, "epoch", "deleted room"))


def parse_wire_event(room: str, raw: Any, epoch: Optional[str], what: str) -> Event:
    e = _object(raw, what)
    if "data" not in e:
        raise ProtocolViolation("%s: no data" % what)
    return Event(room=room, seq=_int(e, "seq", what), ts=_int(e, "ts", what), data=e["data"], epoch=epoch)


def parse_history(room: str, body: Any) -> HistoryPage:
    b = _object(body, "history page")
    epoch = _opt_str(b, "epoch", "history page")
    raw_events = b.get("events")
    if not isinstance(raw_events, list):
        raise ProtocolViolation("history page: events is not a list")
    return HistoryPage(
        room=room,
        epoch=epoch,
        head=_int(b, "head", "history page"),
        earliest=_int(b, "earliest", "history page"),
        events=[parse_wire_event(room, e, epoch, "history event") for e in raw_events],
    )


def parse_stats(body: Any) -> RoomStats:
    b = _object(body, "room stats")
    return RoomStats(
        room=_str(b, "room", "room stats"),
        epoch=_opt_str(b, "epoch", "room stats"),
        head=_int(b, "head", "room stats"),
        earliest=_int(b, "earliest", "room stats"),
        retained=_int(b, "retained", "room stats"),
        subscribers=_int(b, "subscribers", "room stats"),
    )
