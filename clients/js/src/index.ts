export { HubcastClient } from './client.js';
export { Room } from './room.js';
export { HubcastError } from './errors.js';
export { sseTransport, streamId } from './sse.js';
export type { EventSourceConstructor, EventSourceLike, PublishFetch } from './sse.js';
export type { SdkErrorCode, HubcastErrorDetails } from './errors.js';
export {
  backoffDelay,
  decideReconnect,
  isValidRoomName,
  IMMEDIATE_CLOSE_CODES,
  TERMINAL_CLOSE_CODES,
  TRY_LATER_CLOSE_CODES,
} from './policy.js';
export type { BackoffConfig, ReconnectDecision } from './policy.js';
export type {
  ClientEvents,
  ConnectionState,
  Cursor,
  EphemeralAck,
  EphemeralMessage,
  FetchLike,
  HeartbeatOptions,
  HubcastClientOptions,
  HubcastEvent,
  BatchEvent,
  BatchPublishOptions,
  PublishAck,
  PresenceChange,
  PresenceList,
  PresenceMember,
  PublishOptions,
  ReconnectOptions,
  ResetInfo,
  RoomEvents,
  RoomOptions,
  RoomUpdate,
  StateChange,
  WebSocketConstructor,
  WebSocketLike,
} from './types.js';
