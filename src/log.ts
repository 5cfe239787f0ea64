// The root logger. Listeners and connections log through children that carry
// their context (protocol, listen address; client, backend).
import pino from 'pino';
import type { LogLevel } from './config';

export type Logger = pino.Logger;

export function createLogger(level: LogLevel): Logger {
  // Asynchronous writes keep logging off the data path's critical section;
  // flushLogger() runs before every exit so no line is lost.
  const destination = pino.destination({ dest: 1, sync: false });
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
