/**
 * Every error the SDK surfaces is a {@link HubcastError}. `code` is either a
 * protocol error code from docs/protocol.md (`conflict`, `store_unavailable`,
 * `invalid_room`, …) or one of the SDK's own codes listed in {@link SdkErrorCode}.
 */
export type SdkErrorCode =
  /** The client was closed with `close()` before the operation finished. */
  | 'closed'
  /** A publish was not acknowledged within `publishTimeoutMs`. */
  | 'timeout'
  /** More than `maxQueuedPublishes` publishes were waiting for an ack. */
  | 'queue_full'
  /** Close 4001: credentials missing or refused. Not retried. */
  | 'unauthenticated'
  /** Close 4003: credentials do not allow this. Not retried. */
  | 'forbidden'
  /** Close 1008: the server refused a frame of ours (policy). Not retried. */
  | 'policy_violation'
  /** Close 1009: a frame of ours was too big. Not retried. */
  | 'frame_too_big'
  /** `getToken()` threw or rejected; the connection attempt counts as failed. */
  | 'token_error'
  /** The HTTP history route could not be read while healing a gap. */
  | 'history_unavailable'
  /** The server sent something the protocol does not allow; it was ignored. */
  | 'protocol_violation'
  /** An application listener threw; delivery went on. */
  | 'listener_error';

export interface HubcastErrorDetails {
  /** The WebSocket close code, for errors caused by a close. */
  closeCode?: number;
  /** The room the error is about, when there is one. */
  room?: string;
  /** The publish id, for publish errors. */
  id?: string;
  /** The room's head, with `conflict`. */
  head?: number;
  /** The HTTP status, for history errors. */
  status?: number;
  cause?: unknown;
}

export class HubcastError extends Error {
  readonly code: string;
  declare readonly closeCode?: number;
  declare readonly room?: string;
  declare readonly id?: string;
  declare readonly head?: number;
  declare readonly status?: number;

  constructor(code: SdkErrorCode | (string & {}), message: string, details: HubcastErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'HubcastError';
    this.code = code;
    if (details.closeCode !== undefined) this.closeCode = details.closeCode;
    if (details.room !== undefined) this.room = details.room;
    if (details.id !== undefined) this.id = details.id;
    if (details.head !== undefined) this.head = details.head;
    if (details.status !== undefined) this.status = details.status;
  }
}
