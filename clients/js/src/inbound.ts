/**
 * Every frame the server sends, checked and handed to the part that owns it:
 * the session (`welcome`, `authenticated`), a room (subscription, events,
 * batches, presence lists), the publish tracker (`ack`, publish `error`s),
 * presence requests, or the application's `error` listeners. A frame that is
 * not a JSON object, or a known message of the wrong shape, is reported as
 * `protocol_violation` and ignored; unknown types are ignored
 * (docs/protocol.md, "Server → client").
 */
import type { Connection } from './connection.js';
import type { Credentials } from './credentials.js';
import type { Emitter } from './emitter.js';
import { HubcastError } from './errors.js';
import type { PresenceRequests } from './presence-requests.js';
import type { PublishTracker } from './publishes.js';
import type { WireEvent } from './room.js';
import type { RoomRegistry } from './rooms.js';
import type { ClientEvents } from './types.js';
import { isInteger, parseMember, parseMembers } from './wire.js';

/** The parts of the client frames go to. */
export interface Recipients {
  readonly emitter: Emitter<ClientEvents>;
  readonly connection: Connection;
  readonly credentials: Credentials;
  readonly rooms: RoomRegistry;
  readonly publishes: PublishTracker;
  readonly presence: PresenceRequests;
}

/** Handles one frame from the server (its liveness is recorded already). */
export function routeFrame(raw: unknown, to: Recipients): void {
  if (typeof raw !== 'string') {
    protocolViolation(to, 'a binary frame');
    return;
  }
  let frame: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(raw);
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not an object');
    frame = parsed as Record<string, unknown>;
  } catch {
    protocolViolation(to, `a frame that is not a JSON object: ${raw.slice(0, 100)}`);
    return;
  }
  const room = typeof frame.room === 'string' ? to.rooms.get(frame.room) : undefined;
  switch (frame.type) {
    case 'welcome':
      to.connection.onWelcome(typeof frame.session === 'string' ? frame.session : null);
      to.emitter.emit('welcome', {
        session: to.connection.session ?? '',
        heartbeatMs: isInteger(frame.heartbeat_ms) ? frame.heartbeat_ms : 0,
      });
      return;
    case 'subscribed':
      if (typeof frame.epoch !== 'string' || !isInteger(frame.head)) return protocolViolation(to, 'a malformed subscribed');
      room?.onSubscribed(frame.epoch, frame.head, frame.echo !== false);
      return;
    case 'reset':
      if (typeof frame.epoch !== 'string') return protocolViolation(to, 'a malformed reset');
      room?.onReset(frame.epoch, isInteger(frame.earliest) ? frame.earliest : null, isInteger(frame.head) ? frame.head : null);
      return;
    case 'event':
      if (!isInteger(frame.seq) || !('data' in frame)) return protocolViolation(to, 'a malformed event');
      room?.onEvent({ seq: frame.seq, ts: typeof frame.ts === 'number' ? frame.ts : 0, data: frame.data } satisfies WireEvent);
      return;
    case 'ephemeral':
      if (typeof frame.ts !== 'number' || !('data' in frame)) return protocolViolation(to, 'a malformed ephemeral');
      room?.onEphemeral(frame.ts, frame.data);
      return;
    case 'batch': {
      // Consecutive live events of a batching room: processed one by one, exactly like `event` frames.
      if (!Array.isArray(frame.events)) return protocolViolation(to, 'a malformed batch');
      for (const item of frame.events as unknown[]) {
        const e = item as Record<string, unknown> | null;
        if (e === null || typeof e !== 'object' || !isInteger(e.seq) || !('data' in e)) {
          protocolViolation(to, 'a malformed event in a batch');
          continue; // the missing seq is a gap, healed like any other
        }
        room?.onEvent({ seq: e.seq, ts: typeof e.ts === 'number' ? e.ts : 0, data: e.data } satisfies WireEvent);
      }
      return;
    }
    case 'presence': {
      const members = parseMembers(frame.members);
      if (typeof frame.room !== 'string' || members === null) return protocolViolation(to, 'a malformed presence');
      if (typeof frame.id === 'string') {
        // The answer to a presence request.
        if (to.presence.isAnswer(frame.room, frame.id)) to.presence.resolve(frame.room, members);
        return;
      }
      room?.onPresence(members); // the member list of a presence subscription
      return;
    }
    case 'join':
    case 'leave': {
      const member = parseMember(frame.member);
      if (member === null) return protocolViolation(to, `a malformed ${frame.type}`);
      room?.onMembership(frame.type as 'join' | 'leave', member);
      return;
    }
    case 'caught_up':
      if (!isInteger(frame.seq)) return protocolViolation(to, 'a malformed caught_up');
      room?.onCaughtUp(frame.seq);
      return;
    case 'unsubscribed':
      to.rooms.onUnsubscribed(frame.room);
      return;
    case 'ack':
      if (!to.publishes.onAck(frame)) protocolViolation(to, 'a malformed ack');
      return;
    case 'batch_ack':
      if (!to.publishes.onBatchAck(frame)) protocolViolation(to, 'a malformed batch_ack');
      return;
    case 'error':
      onErrorFrame(frame, to);
      return;
    case 'authenticated': {
      const info: { sub?: string; exp?: number } = {};
      if (typeof frame.sub === 'string') info.sub = frame.sub;
      if (typeof frame.exp === 'number') info.exp = frame.exp;
      to.emitter.emit('authenticated', info);
      return;
    }
    case 'pong':
      return; // liveness is recorded for every frame
    default:
      return; // unknown types are ignored (forward compatibility)
  }
}

/**
 * An `error` frame: with an `id`, the answer to a presence request or a
 * publish; `token_expired` for the session: refresh the token; with a `room`,
 * about that room's subscription; anything else goes to the `error` listeners.
 */
function onErrorFrame(frame: Record<string, unknown>, to: Recipients): void {
  const code = typeof frame.code === 'string' ? frame.code : 'unknown';
  const message = typeof frame.message === 'string' ? frame.message : code;
  const roomName = typeof frame.room === 'string' ? frame.room : undefined;
  if (typeof frame.id === 'string') {
    if (roomName !== undefined && to.presence.isAnswer(roomName, frame.id)) {
      to.presence.reject(new HubcastError(code, message, { room: roomName }), roomName);
      return;
    }
    if (to.publishes.onError(frame.id, code, message, frame.head, roomName)) return;
  }
  if (code === 'token_expired' && roomName === undefined && frame.id === undefined) {
    // The session's token ran out: send a fresh one within the server's grace period.
    if (to.credentials.enabled) {
      void to.credentials.refresh();
      return;
    }
  }
  if (roomName !== undefined) {
    if (to.rooms.isDraining(roomName) && code === 'not_subscribed') {
      to.rooms.onUnsubscribed(roomName);
      return;
    }
    const room = to.rooms.get(roomName);
    if (room) {
      const retryAfter = frame.retry_after_ms;
      room.onSubscriptionError(code, message, typeof retryAfter === 'number' && retryAfter > 0 ? retryAfter : 0);
      return;
    }
  }
  const details: { room?: string } = {};
  if (roomName !== undefined) details.room = roomName;
  to.emitter.emit('error', new HubcastError(code, message, details));
}

function protocolViolation(to: Recipients, what: string): void {
  to.emitter.emit('error', new HubcastError('protocol_violation', `the server sent ${what}; ignored`));
}
