// The UDP session table: client (address, port, and the listener address it
// sent to) -> session. Bounded by count (LRU) and by idle time. Every way a
// session leaves the table (evicted, expired, closed) runs one callback, which
// closes its socket at once, so relay's fds never outgrow the table.
// Generic over the session type so the table is tested without sockets.
import { LRUCache } from 'lru-cache';

export type SessionEnd = 'idle' | 'evicted' | 'responses' | 'refused' | 'error' | 'shutdown' | 'address-removed'
  | 'backend-removed';

export interface SessionTableOptions<S extends object> {
  maxSessions: number;
  idleTimeoutMs: number;
  /** Called exactly once per session, after it left the table. */
  onEnd(session: S, reason: SessionEnd): void;
}

export class SessionTable<S extends object> {
  private readonly cache: LRUCache<string, S>;
  /** Why a session is being deleted, set just before delete() (lru-cache only says 'delete'). */
  private pendingReason: SessionEnd | undefined;
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly options: SessionTableOptions<S>) {
    this.cache = new LRUCache<string, S>({
      max: options.maxSessions,
      ttl: options.idleTimeoutMs,
      // Traffic either way refreshes a session: both directions look it up with get().
      updateAgeOnGet: true,
      // The clock is read at most once per ms even under a flood.
      ttlResolution: 1,
      dispose: (session, _key, reason) => {
        const why: SessionEnd = reason === 'evict' ? 'evicted'
          : reason === 'expire' ? 'idle' : this.pendingReason ?? 'error';
        options.onEnd(session, why);
      },
    });
    // lru-cache notices expiry lazily; a sweep closes idle sessions' sockets
    // within a quarter of the timeout (at most a second) of their expiry.
    this.sweeper = setInterval(() => this.cache.purgeStale(), Math.min(1000, Math.max(10, options.idleTimeoutMs / 4)));
    this.sweeper.unref();
  }

  get size(): number {
    return this.cache.size;
  }

  /** The live session for key, refreshing its idle timer and recency. */
  get(key: string): S | undefined {
    return this.cache.get(key);
  }

  /** Add a session; the least recently used one is evicted past maxSessions. */
  add(key: string, session: S): void {
    this.cache.set(key, session);
  }

  end(key: string, reason: SessionEnd): void {
    this.pendingReason = reason;
    try {
      this.cache.delete(key);
    } finally {
      this.pendingReason = undefined;
    }
  }

  /**
   * End every session that matches (those of a listener whose address left
   * the host, or of a backend a reload removed). Returns how many.
   */
  endWhere(matches: (session: S) => boolean, reason: SessionEnd): number {
    const keys: string[] = [];
    for (const [key, session] of this.cache.entries()) if (matches(session)) keys.push(key);
    for (const key of keys) this.end(key, reason);
    return keys.length;
  }

  /** How many sessions match, without touching their recency. */
  count(matches: (session: S) => boolean): number {
    let n = 0;
    for (const session of this.cache.values()) if (matches(session)) n++;
    return n;
  }

  /** End every session (shutdown) and stop the sweeper. */
  clear(reason: SessionEnd = 'shutdown'): void {
    clearInterval(this.sweeper);
    this.pendingReason = reason;
    try {
      this.cache.clear();
    } finally {
      this.pendingReason = undefined;
    }
  }
}

/** A session is one client socket talking to one listener: both ends are in the key. */
export function sessionKey(listenAddress: string, listenPort: number, clientAddress: string, clientPort: number): string {
  return `${listenAddress}|${listenPort}|${clientAddress}|${clientPort}`;
}
