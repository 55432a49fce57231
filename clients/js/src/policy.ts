/**
 * The reconnect policy per close code (docs/clients.md, "Reconnect policy").
 */

/**
 * Close codes after which reconnecting as-is cannot help: surfaced as errors, no retry.
 * 4011: an operator disconnected the user; 4012: the token was revoked.
 */
export const TERMINAL_CLOSE_CODES: ReadonlySet<number> = new Set([1002, 1007, 1008, 1009, 4001, 4003, 4011, 4012]);
/** The node is going away or restarting: reconnect at once. */
export const IMMEDIATE_CLOSE_CODES: ReadonlySet<number> = new Set([1001, 1012]);
/** Over capacity, rate limited, or the auth hook could not decide (4013): back off at least `tryAgainLaterMs`. */
export const TRY_LATER_CLOSE_CODES: ReadonlySet<number> = new Set([1013, 4008, 4013]);

/** Local close codes for sockets the client abandons itself. */
export const LOCAL_HEARTBEAT_TIMEOUT = 4010;
export const LOCAL_ABNORMAL = 1006;

export interface BackoffConfig {
  minDelayMs: number;
  maxDelayMs: number;
  tryAgainLaterMs: number;
}

/** Full jitter: uniform in [0, min(max, min·2^attempt)], floored to whole ms. */
export function backoffDelay(attempt: number, config: BackoffConfig, random: () => number): number {
  const window = Math.min(config.maxDelayMs, config.minDelayMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * window);
}

export type ReconnectDecision = { retry: false } | { retry: true; delayMs: number };

/**
 * What to do after a socket closed with `code`.
 * @param attempt consecutive connection attempts since the last `welcome` that ended without one (0 when the closed session had received `welcome`).
 * @param welcomed whether the closed session had received `welcome`.
 */
export function decideReconnect(
  code: number,
  attempt: number,
  welcomed: boolean,
  config: BackoffConfig,
  random: () => number,
): ReconnectDecision {
  if (TERMINAL_CLOSE_CODES.has(code)) return { retry: false };
  if (IMMEDIATE_CLOSE_CODES.has(code) && welcomed) return { retry: true, delayMs: 0 };
  const delay = backoffDelay(attempt, config, random);
  if (TRY_LATER_CLOSE_CODES.has(code)) return { retry: true, delayMs: Math.max(config.tryAgainLaterMs, delay) };
  return { retry: true, delayMs: delay };
}

/** The SDK error code for a terminal close code. */
export function terminalErrorCode(code: number): string {
  switch (code) {
    case 4001:
      return 'unauthenticated';
    case 4003:
      return 'forbidden';
    case 1008:
      return 'policy_violation';
    case 1009:
      return 'frame_too_big';
    case 1002:
      return 'protocol_error';
    case 1007:
      return 'invalid_data';
    case 4011:
      return 'disconnected';
    case 4012:
      return 'token_revoked';
    default:
      return 'closed';
  }
}

const ROOM_NAME = /^[A-Za-z0-9_\-:.@=]{1,128}$/;

/** Whether `name` is a valid room name (1–128 characters from `A-Z a-z 0-9 _ - : . @ =`). */
export function isValidRoomName(name: string): boolean {
  return typeof name === 'string' && ROOM_NAME.test(name);
}
