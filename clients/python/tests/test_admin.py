"""The admin routes against the real server: presence, disconnect, revocations,
deleting a room's log."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone
from typing import Any, Dict

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

import hubcast
from conftest import JWT_SECRET, ServerFactory

ADMIN_KEY = "admin-key-0123456789abcdef0123"
APP_KEY = "app-key-0123456789abcdef012345"

ADMIN_CONFIG = f"""
[[auth.api_keys]]
name = "ops"
key = "{ADMIN_KEY}"
admin = true

[[auth.api_keys]]
name = "app"
key = "{APP_KEY}"

[[auth.jwt]]
alg = "HS256"
secret = "{JWT_SECRET}"
"""


def user_token(sub: str, **claims: Any) -> str:
    return hubcast.mint_token(JWT_SECRET, sub=sub, subscribe=["chat:*"], publish=["chat:*"],
                              presence=["chat:*"], info={"name": sub.title()}, claims=claims or None)


async def next_frame(ws: Any, kind: str) -> Dict[str, Any]:
    while True:
        frame: Dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame["type"] == kind:
            return frame


async def closed_with(ws: Any) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    code: int = closed.value.rcvd.code
    return code


@pytest.mark.asyncio
async def test_presence_disconnect_and_revocations(hubcast_server: ServerFactory) -> None:
    server = hubcast_server(ADMIN_CONFIG)
    ws_url = server.url.replace("http://", "ws://") + "/v1/rooms/chat:1/ws?presence=true"
    alice = user_token("alice")
    async with hubcast.AsyncClient(server.url, api_key=ADMIN_KEY) as admin:
        async with websockets.connect(ws_url, additional_headers={"authorization": f"Bearer {alice}"}) as ws:
            await next_frame(ws, "presence")
            presence = await admin.presence("chat:1")
            assert presence.room == "chat:1"
            assert [(m.id, m.info) for m in presence.members] == [("alice", {"name": "Alice"})]
            assert presence.members[0].since > 1_600_000_000_000
            done = await admin.disconnect_user("alice", code=4020, reason="maintenance")
            assert (done.user, done.code, done.reason) == ("alice", 4020, "maintenance")
            assert await closed_with(ws) == 4020
        # Defaults.
        done = await admin.disconnect_user("bob")
        assert (done.code, done.reason) == (4011, "disconnected")
        with pytest.raises(ValueError):
            await admin.disconnect_user("bob", code=1000)

        # A user's tokens issued before now are refused from now on; live sessions close with 4012.
        async with websockets.connect(ws_url, additional_headers={"authorization": f"Bearer {alice}"}) as ws:
            await next_frame(ws, "caught_up")
            cutoff = int(time.time()) + 1
            revocation = await admin.revoke_user("alice", cutoff)
            assert (revocation.user, revocation.issued_before, revocation.jti) == ("alice", cutoff, None)
            assert revocation.expires_at > cutoff
            assert await closed_with(ws) == 4012
        async with hubcast.AsyncClient(server.url, token=alice) as revoked:
            with pytest.raises(hubcast.TokenRevokedError) as refused:
                await revoked.publish("chat:1", "x")
            assert (refused.value.status, refused.value.code) == (401, "token_revoked")

        # One token, by jti, with an expiry given as a datetime.
        carol = user_token("carol", jti="t-42")
        expires = datetime.fromtimestamp(time.time() + 3600, tz=timezone.utc)
        by_id = await admin.revoke_token("t-42", expires_at=expires)
        assert (by_id.jti, by_id.user, by_id.expires_at) == ("t-42", None, int(expires.timestamp()))
        async with hubcast.AsyncClient(server.url, token=carol) as revoked:
            with pytest.raises(hubcast.TokenRevokedError):
                await revoked.publish("chat:1", "x")
        async with hubcast.AsyncClient(server.url, token=user_token("carol", jti="t-43")) as fresh:
            assert (await fresh.publish("chat:1", "a new token works")).seq == 1
        listed = await admin.revocations()
        assert [r.user or r.jti for r in listed] == ["alice", "t-42"]
        with pytest.raises(ValueError):
            await admin.revoke_token("t-1", expires_at=datetime(2030, 1, 1))  # naive datetime


def test_delete_room_and_admin_access(hubcast_server: ServerFactory) -> None:
    server = hubcast_server(ADMIN_CONFIG)
    with hubcast.Client(server.url, api_key=ADMIN_KEY) as admin, hubcast.Client(server.url, api_key=APP_KEY) as app:
        first = app.publish("chat:9", "one")
        app.publish("chat:9", "two")
        deleted = admin.delete_room("chat:9")
        assert deleted.room == "chat:9" and deleted.epoch != first.epoch
        assert deleted.cursor == hubcast.Cursor(deleted.epoch, 0)
        assert list(app.history("chat:9")) == []
        after = app.publish("chat:9", "three")
        assert (after.seq, after.epoch) == (1, deleted.epoch)
        with pytest.raises(hubcast.CursorLostError):
            list(app.history("chat:9", epoch=first.epoch))
        with pytest.raises(hubcast.NotFoundError):
            admin.delete_room("never:written")
        # Admin routes need an admin's credentials.
        with pytest.raises(hubcast.ForbiddenError):
            app.delete_room("chat:9")
        with pytest.raises(hubcast.ForbiddenError):
            app.presence("chat:9")
        with pytest.raises(hubcast.ForbiddenError):
            app.revocations()
        assert admin.presence("chat:9").members == []
        assert admin.revocations() == []
    with hubcast.Client(server.url) as anonymous:
        with pytest.raises(hubcast.UnauthenticatedError):
            anonymous.disconnect_user("alice")
