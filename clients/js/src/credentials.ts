/**
 * The session's credentials: the token `getToken()` last returned. The
 * connection asks for one before every attempt, the history reader sends it
 * as `Authorization: Bearer`, and a refresh (on `token_expired`, a history 401
 * or the application's request) hands the fresh one to the open session in an
 * `auth` message. One holder, so all of them use the same token.
 */
import { HubcastError } from './errors.js';
import type { HubcastClientOptions } from './types.js';

export class Credentials {
  /** The last token `getToken` returned. */
  token: string | null = null;
  private refreshing: Promise<string | null> | null = null;

  constructor(
    /** Read on every use, like every option. */
    private readonly options: HubcastClientOptions,
    /** Sends a frame on the open session; returns whether it was sent. */
    private readonly send: (frame: object) => boolean,
    private readonly reportError: (err: HubcastError) => void,
  ) {}

  /** Whether the application gave a `getToken` (else there is never a token). */
  get enabled(): boolean {
    return Boolean(this.options.getToken);
  }

  /**
   * Gets a fresh token from `getToken` and hands it to the open session in
   * an `auth` message. Resolves with the new token, or `null` if there is
   * none; concurrent calls share one `getToken` call.
   */
  refresh(): Promise<string | null> {
    if (!this.options.getToken) return Promise.resolve(null);
    if (this.refreshing) return this.refreshing;
    this.refreshing = (async () => {
      try {
        const token = (await this.options.getToken!()) ?? null;
        this.token = token;
        if (token) this.send({ type: 'auth', token });
        return token;
      } catch (err) {
        this.reportError(new HubcastError('token_error', `getToken failed: ${String(err)}`, { cause: err }));
        return null;
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }
}
