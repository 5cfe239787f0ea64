// The root logger. Listeners and connections log through children that carry
// their context (protocol, listen address; client, backend).
import pino from 'pino';
import type { LogLevel } from './config';

export type Logger = pino.Logger;

/** Under load, lines are written in batches of this size (one write(2) each)... */
const LOG_BATCH_BYTES = 8 * 1024;
/** ...and no line waits longer than this when traffic is light. */
const LOG_FLUSH_INTERVAL_MS = 200;

export function createLogger(level: LogLevel): Logger {
  // Asynchronous, batched writes: one line per connection must not cost a
  // write(2) per connection. flushLogger() runs before every exit so no line is lost.
  const destination = pino.destination({ dest: 1, sync: false, minLength: LOG_BATCH_BYTES });
  setInterval(() => destination.flush(), LOG_FLUSH_INTERVAL_MS).unref();
  return pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, destination);
}

export function flushLogger(log: Logger): void {
  try {
    log.flush();
    const stream = (log as unknown as Record<symbol, { flushSync?: () => void }>)[pino.symbols.streamSym];
    stream?.flushSync?.();
  } catch {
    // Nothing useful to do if stdout is gone.
  }
}

/**
 * Lets through at most `limit` events per `windowMs` and reports how many it
 * held back, so a flood (rejected clients, evictions) costs a few lines, not one each.
 */
export class RateLimitedLog {
  private windowStart = 0;
  private inWindow = 0;
  private suppressed = 0;
  constructor(private readonly limit = 5, private readonly windowMs = 10_000) {}

  /** Returns how many were suppressed since the last line, or -1 to stay quiet. */
  take(now = Date.now()): number {
    if (now - this.windowStart >= this.windowMs) {
      this.windowStart = now;
      this.inWindow = 0;
    }
    if (this.inWindow >= this.limit) {
      this.suppressed++;
      return -1;
    }
    this.inWindow++;
    const held = this.suppressed;
    this.suppressed = 0;
    return held;
  }
}
