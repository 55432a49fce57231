"""hubcast: a server-side Python library for the hubcast event fan-out server.

- :class:`Client` / :class:`AsyncClient`: publish (idempotent, with
  ``expected_seq``), atomic batches, ephemeral messages, history iteration,
  room stats and the admin routes (presence, disconnect, revocations, room
  deletion) over HTTP.
- :class:`AsyncSubscriber` / :class:`Subscriber`: a resuming WebSocket
  subscriber (a cursor per room, no gap, no duplicate across reconnects).
- :func:`mint_token`: JWTs with grants for browsers and users.
- :class:`Webhook`: Standard Webhooks signature verification.
"""

from ._common import RetryPolicy, new_idempotency_key
from .client import AsyncClient, AsyncHistory, Client, History
from .errors import (
    ApiError,
    BadRequestError,
    ClosedError,
    ConflictError,
    CursorLostError,
    ForbiddenError,
    HubcastError,
    IdempotencyMismatchError,
    InternalServerError,
    InvalidRoomError,
    NotFoundError,
    ProtocolViolation,
    RateLimitedError,
    SubscriptionError,
    TokenExpiredError,
    TokenRevokedError,
    TooLargeError,
    TransportError,
    UnauthenticatedError,
    UnavailableError,
    WebhookVerificationError,
)
from .subscriber import AsyncSubscriber, Heartbeat, ReconnectPolicy, Subscriber, SubscriberStats, Update
from .tokens import mint_token, token_claims
from .types import (
    JSON,
    BatchEvent,
    Cursor,
    Disconnected,
    EphemeralReceipt,
    Event,
    HistoryPage,
    Member,
    Presence,
    Receipt,
    Reset,
    Revocation,
    RoomDeleted,
    RoomStats,
)
from .webhooks import Webhook

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncHistory",
    "AsyncSubscriber",
    "BadRequestError",
    "BatchEvent",
    "Client",
    "ClosedError",
    "ConflictError",
    "Cursor",
    "CursorLostError",
    "Disconnected",
    "EphemeralReceipt",
    "Event",
    "ForbiddenError",
    "Heartbeat",
    "History",
    "HistoryPage",
    "HubcastError",
    "IdempotencyMismatchError",
    "InternalServerError",
    "InvalidRoomError",
    "JSON",
    "Member",
    "NotFoundError",
    "Presence",
    "ProtocolViolation",
    "RateLimitedError",
    "Receipt",
    "ReconnectPolicy",
    "Reset",
    "RetryPolicy",
    "Revocation",
    "RoomDeleted",
    "RoomStats",
    "Subscriber",
    "SubscriberStats",
    "SubscriptionError",
    "TokenExpiredError",
    "TokenRevokedError",
    "TooLargeError",
    "TransportError",
    "UnauthenticatedError",
    "UnavailableError",
    "Update",
    "Webhook",
    "WebhookVerificationError",
    "mint_token",
    "new_idempotency_key",
    "token_claims",
    "__version__",
]
