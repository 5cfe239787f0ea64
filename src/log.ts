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
 * One kind of log line that can come in floods (rejected clients, evicted
 * sessions): at most `limit` lines per window; when a window ends with lines
 * held back, one more line says how many (`suppressed`), so nothing goes
 * uncounted and a flood costs a few lines, not one per event.
 */
export class RateLimitedLog {
  private windowStart = 0;
  private inWindow = 0;
  private suppressed = 0;
  private summaryTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly log: Logger,
    private readonly level: 'info' | 'warn' | 'error',
    private readonly msg: string,
    private readonly limit = 5,
    private readonly windowMs = 10_000,
  ) {}

  /** fields may be a function, called only for a line that is written. */
  write(fields: object | (() => object), now = Date.now()): void {
    if (!this.log.isLevelEnabled(this.level)) return;
    if (now - this.windowStart >= this.windowMs) {
      this.windowStart = now;
      this.inWindow = 0;
    }
    if (this.inWindow < this.limit) {
      this.inWindow++;
      this.log[this.level](typeof fields === 'function' ? fields() : fields, this.msg);
      return;
    }
    this.suppressed++;
    this.summaryTimer ??= setTimeout(() => this.summarize(), this.windowStart + this.windowMs - now).unref();
  }

  /** Log what is held back now (at shutdown), not when the window ends. */
  flush(): void {
    clearTimeout(this.summaryTimer);
    this.summarize();
  }

  private summarize(): void {
    this.summaryTimer = undefined;
    if (this.suppressed === 0) return;
    this.log[this.level]({ suppressed: this.suppressed, windowMs: this.windowMs }, `${this.msg} (${this.suppressed} more not logged)`);
    this.suppressed = 0;
  }
}
