/**
 * An unbounded async queue exposed as an async iterator: `push` never blocks,
 * `next` waits for the next item. Ending it lets the consumer drain what is
 * queued, then finishes (or throws the error it was ended with).
 */
export class Channel<T> implements AsyncIterableIterator<T> {
  private readonly items: T[] = [];
  private readonly waiters: Array<{ resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void }> = [];
  private finished = false;
  private failure: { error: unknown } | null = null;

  constructor(private readonly onReturn: (channel: Channel<T>) => void) {}

  push(item: T): void {
    if (this.finished) return;
    const waiter = this.waiters.shift();
    if (waiter) waiter.resolve({ value: item, done: false });
    else this.items.push(item);
  }

  /** Ends the iteration; with `error`, the consumer's next `next()` after the queue drains throws it. */
  end(error?: unknown): void {
    if (this.finished) return;
    this.finished = true;
    if (error !== undefined) this.failure = { error };
    const waiters = this.waiters.splice(0);
    // Waiters exist only while the queue is empty: the error goes to them (once).
    for (const [i, waiter] of waiters.entries()) {
      if (this.failure && i === 0) waiter.reject(this.failure.error);
      else waiter.resolve({ value: undefined, done: true });
    }
    if (waiters.length > 0) this.failure = null;
  }

  get size(): number {
    return this.items.length;
  }

  next(): Promise<IteratorResult<T>> {
    if (this.items.length > 0) return Promise.resolve({ value: this.items.shift() as T, done: false });
    if (this.finished) {
      if (this.failure) {
        const { error } = this.failure;
        this.failure = null; // throw once, then report done
        return Promise.reject(error);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  return(): Promise<IteratorResult<T>> {
    this.items.length = 0;
    this.failure = null;
    this.end();
    this.onReturn(this);
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }
}
