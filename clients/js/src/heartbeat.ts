/**
 * Application-level liveness of the open socket. Browsers cannot send or see
 * WebSocket pings, so the client watches frames itself: any frame counts;
 * after `intervalMs` of silence it sends `{"type":"ping"}`, and if nothing at
 * all arrives within `timeoutMs` after that the socket is declared dead
 * (docs/clients.md, "Heartbeat").
 */
import type { HeartbeatOptions } from './types.js';

export interface HeartbeatConfig {
  intervalMs: number;
  timeoutMs: number;
}

/** The options with their defaults; `null` when the heartbeat is off. */
export function heartbeatConfig(options: HeartbeatOptions | false | undefined): HeartbeatConfig | null {
  return options === false ? null : { intervalMs: options?.intervalMs ?? 10_000, timeoutMs: options?.timeoutMs ?? 5_000 };
}

/** What the heartbeat needs from the connection. */
export interface HeartbeatLink {
  /** Whether there is a socket and it is open. */
  isOpen(): boolean;
  sendPing(): void;
  /** Nothing came within `timeoutMs` of a ping: abandon the socket. */
  dead(): void;
}

export class Heartbeat {
  private timer: ReturnType<typeof setTimeout> | null = null;
  private lastFrameAt = 0;
  private framesReceived = 0;
  private ping: { sentAt: number; frames: number } | null = null;

  constructor(
    private readonly config: HeartbeatConfig | null,
    private readonly link: HeartbeatLink,
  ) {}

  /** Any frame from the server: the connection is alive. */
  frameReceived(): void {
    this.lastFrameAt = Date.now();
    this.framesReceived += 1;
  }

  /** The socket opened: start watching it. */
  start(): void {
    this.lastFrameAt = Date.now();
    this.ping = null;
    if (this.config) this.schedule(this.config.intervalMs);
  }

  stop(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.ping = null;
  }

  private schedule(ms: number): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.tick();
    }, Math.max(0, ms));
  }

  /**
   * Any frame counts as liveness. After `intervalMs` of silence a ping is sent;
   * if nothing at all arrives within `timeoutMs` after it, the socket is
   * abandoned and the client reconnects. So a dead connection is noticed at
   * most `intervalMs + timeoutMs` after the last frame.
   */
  private tick(): void {
    const hb = this.config;
    if (!hb || !this.link.isOpen()) return;
    const now = Date.now();
    if (this.ping !== null) {
      if (this.framesReceived > this.ping.frames) {
        this.ping = null;
      } else {
        const waited = now - this.ping.sentAt;
        if (waited >= hb.timeoutMs) {
          this.link.dead();
          return;
        }
        this.schedule(hb.timeoutMs - waited);
        return;
      }
    }
    const idle = now - this.lastFrameAt;
    if (idle >= hb.intervalMs) {
      this.link.sendPing();
      this.ping = { sentAt: now, frames: this.framesReceived };
      this.schedule(hb.timeoutMs);
    } else {
      this.schedule(hb.intervalMs - idle);
    }
  }
}
