"""hubcast: a server-side Python library for the hubcast event fan-out server.

- :class:`Client` / :class:`AsyncClient`: publish (idempotent, with
  ``expected_seq``), history iteration, room stats over HTTP.
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
    InternalServerError,
    InvalidRoomError,
    NotFoundError,
    ProtocolViolation,
    RateLimitedError,
    SubscriptionError,
    TokenExpiredError,
    TooLargeError,
    TransportError,
    UnauthenticatedError,
    UnavailableError,
    WebhookVerificationError,
)
from .subscriber import AsyncSubscriber, Heartbeat, ReconnectPolicy, Subscriber, SubscriberStats, Update
from .tokens import mint_token, token_claims
from .types import JSON, Cursor, Event, HistoryPage, Receipt, Reset, RoomStats
from .webhooks import Webhook

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncHistory",
    "AsyncSubscriber",
    "BadRequestError",
    "Client",
    "ClosedError",
    "ConflictError",
    "Cursor",
    "CursorLostError",
    "Event",
    "ForbiddenError",
    "Heartbeat",
    "History",
    "HistoryPage",
    "HubcastError",
    "InternalServerError",
    "InvalidRoomError",
    "JSON",
    "NotFoundError",
    "ProtocolViolation",
    "RateLimitedError",
    "Receipt",
    "ReconnectPolicy",
    "Reset",
    "RetryPolicy",
    "RoomStats",
    "Subscriber",
    "SubscriberStats",
    "SubscriptionError",
    "TokenExpiredError",
    "TooLargeError",
    "TransportError",
    "UnauthenticatedError",
    "UnavailableError",
    "Update",
    "Webhook",
    "WebhookVerificationError",
    "__version__",
    "mint_token",
    "new_idempotency_key",
    "token_claims",
]
