// The root logger. Listeners and connections log through children that carry
// their context (protocol, listen address; client, backend).
import * as fs from 'node:fs';
import pino from 'pino';
import type { LogLevel } from './config';

export type Logger = pino.Logger;

/** Under load, lines are written in batches of this size (one write(2) each)... */
const LOG_BATCH_BYTES = 8 * 1024;
/** ...and no line waits longer than this when traffic is light. */
const LOG_FLUSH_INTERVAL_MS = 200;
/** What may wait for a stalled stdout; lines beyond it are dropped and counted. */
const LOG_BUFFER_MAX_BYTES = 4 * 1024 * 1024;

/**
 * Where log lines go: stdout, in batches, never blocking and never growing
 * without bound. pino's own asynchronous destination buffers without limit
 * while stdout stalls and retries a failing write forever (a full disk kept a
 * serving relay from stopping); this one keeps at most maxBytes waiting,
 * drops and counts what does not fit or cannot be written, and says how many
 * lines it dropped in the first line that gets through afterwards.
 *
 * Writes are synchronous write(2)s from the event loop. They cannot block:
 * Node makes a pipe or socket on stdout non-blocking when process.stdout is
 * first used (createLogger does), so a stalled reader is EAGAIN, and a
 * regular file does not stall. (A terminal stays blocking: one held with
 * Ctrl-S holds relay too, as it would any program.)
 */
export class LogDestination {
  private pending: string[] = [];
  private pendingBytes = 0;
  /** What a short write left over, sent before anything else. */
  private unsent: Buffer | undefined;
  /** Lines dropped and not yet reported on stdout. */
  private droppedUnreported = 0;
  /** Every line dropped since start, for the stats and the stopped line. */
  dropped = 0;
  /** The code of the failure being reported on stderr, so each kind is reported once. */
  private failing: string | undefined;

  constructor(
    private readonly fd = 1,
    private readonly maxBytes = LOG_BUFFER_MAX_BYTES,
    private readonly batchBytes = LOG_BATCH_BYTES,
    private readonly writeSync: (fd: number, data: Buffer) => number = fs.writeSync,
    private readonly report: (line: string) => void = (line) => process.stderr.write(line),
  ) {}

  /** pino's call, one line at a time. */
  write(line: string): boolean {
    if (this.pendingBytes + (this.unsent?.length ?? 0) + line.length > this.maxBytes) {
      this.drop(1);
    } else {
      this.pending.push(line);
      this.pendingBytes += line.length;
      // While stdout is stalled (unsent is waiting) only the timer tries again: a try per line would be a write(2) per line.
      if (this.pendingBytes >= this.batchBytes && this.unsent === undefined) this.flush();
    }
    return true;
  }

  /** Write what waits, as far as stdout takes it now. */
  flush(): void {
    if (this.unsent && !this.send(this.unsent)) return;
    if (this.pending.length === 0 && this.droppedUnreported === 0) return;
    const lines = this.pending;
    const text = (this.droppedUnreported > 0 ? droppedLine(this.droppedUnreported) : '') + lines.join('');
    this.pending = [];
    this.pendingBytes = 0;
    const reported = this.droppedUnreported;
    this.droppedUnreported = 0;
    if (!this.send(Buffer.from(text)) && this.unsent === undefined) {
      // Nothing of it went (a hard error): the lines are lost, not retried.
      this.droppedUnreported = reported;
      this.drop(lines.length);
    }
  }

  /** Writes data; what a short write or EAGAIN leaves is kept in unsent. False unless all of it went. */
  private send(data: Buffer): boolean {
    this.unsent = undefined;
    let offset = 0;
    try {
      while (offset < data.length) offset += this.writeSync(this.fd, offset === 0 ? data : data.subarray(offset));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
      if (code === 'EAGAIN') {
        this.unsent = data.subarray(offset); // stdout is slow: keep it, try again on the next flush
      } else {
        this.failed(code); // EPIPE, ENOSPC, EIO: this batch is lost
      }
      return false;
    }
    if (this.failing) {
      this.report(`relay: logging to stdout works again (${this.dropped} log lines dropped so far)\n`);
      this.failing = undefined;
    }
    return true;
  }

  private failed(code: string): void {
    if (this.failing === code) return;
    this.failing = code;
    this.report(`relay: cannot write log lines to stdout (${code}): dropping and counting them; still serving\n`);
  }

  private drop(lines: number): void {
    this.dropped += lines;
    this.droppedUnreported += lines;
  }

  /**
   * At exit: write what waits, waiting for a slow stdout up to deadlineMs.
   * Exiting with part of a line sent would leave a cut line at the end of
   * the log (the stopped line, often), which a reader cannot parse.
   */
  drainBeforeExit(deadlineMs: number, sleep: (ms: number) => void = sleepSync): void {
    const deadline = Date.now() + deadlineMs;
    for (;;) {
      this.flush();
      if (this.unsent === undefined && this.pending.length === 0) return;
      if (Date.now() >= deadline) return;
      sleep(EXIT_RETRY_MS);
    }
  }
}

/** How long an exit waits for a slow stdout, and how often it tries again meanwhile. */
const EXIT_DRAIN_MS = 2_000;
const EXIT_RETRY_MS = 5;

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function droppedLine(count: number): string {
  return JSON.stringify({ level: 40, time: new Date().toISOString(), pid: process.pid, dropped: count,
    msg: 'log lines dropped: stdout did not take them' }) + '\n';
}

let destination: LogDestination | undefined;

export function createLogger(level: LogLevel): Logger {
  // Node makes stdout non-blocking when it is a pipe or socket (see LogDestination).
  void process.stdout;
  destination = new LogDestination();
  const flusher = destination;
  setInterval(() => flusher.flush(), LOG_FLUSH_INTERVAL_MS).unref();
  return pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, destination);
}

/** Log lines dropped since start because stdout did not take them. */
export function droppedLogLines(): number {
  return destination?.dropped ?? 0;
}

/** Write what waits before an exit, waiting a little for a slow stdout (never a cut line if it drains in time). */
export function flushLogger(_log?: Logger): void {
  destination?.drainBeforeExit(EXIT_DRAIN_MS);
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

/** An error for a log line: its stack (one JSON string, so still one line), or what was thrown. */
export function errorWithStack(error: unknown): string {
  return error instanceof Error ? error.stack ?? String(error) : String(error);
}
