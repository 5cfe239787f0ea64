// Telling relay when the host's addresses change, so UDP listeners on a
// wildcard --listen can follow them (protocols/udp-listeners.ts). A child
// `ip -o monitor address` prints a line for every address added, removed or
// changed (an IPv6 address leaving its tentative state too): each burst of
// lines becomes one call to onChange. A periodic call besides is the safety
// net for whatever the child missed (while it restarted, or if `ip` is
// missing). The watcher never throws into relay: a child that dies is started
// again after a growing pause, and every failure is one log line.
import { spawn, ChildProcess } from 'node:child_process';
import type { Logger } from './log';
import { errorWithStack } from './log';

export interface AddressWatchOptions {
  /** Called after address changes, and every resyncMs whatever happens. A throw is logged. */
  onChange(): void;
  log: Logger;
  /** The command that prints a line per address change. */
  command?: readonly string[];
  resyncMs?: number;
}

/** `ip` from iproute2: one line per change, flushed as it happens (-o). */
const MONITOR_COMMAND = ['ip', '-o', 'monitor', 'address'] as const;
/** The safety net's period: an address the monitor missed is served within this. */
export const ADDRESS_RESYNC_MS = 10_000;
/**
 * Lines come in bursts (an interface brought up with several addresses, a
 * keepalived failover): one look at the host's addresses serves a burst.
 */
const CHANGE_SETTLE_MS = 20;
/** A child that died is restarted after 1 s, doubling to at most a minute. */
const RESTART_FIRST_MS = 1_000;
const RESTART_MAX_MS = 60_000;
/** A child that lived this long was healthy: the next restart starts from the first pause again. */
const HEALTHY_AFTER_MS = 60_000;

export class AddressWatcher {
  private child: ChildProcess | undefined;
  private startedAt = 0;
  private restartDelayMs = RESTART_FIRST_MS;
  private restartTimer: NodeJS.Timeout | undefined;
  private settleTimer: NodeJS.Timeout | undefined;
  private readonly resyncTimer: NodeJS.Timeout;
  private stopped = false;
  private readonly command: readonly string[];

  constructor(private readonly options: AddressWatchOptions) {
    this.command = options.command ?? MONITOR_COMMAND;
    this.resyncTimer = setInterval(() => this.changed(), options.resyncMs ?? ADDRESS_RESYNC_MS);
    this.resyncTimer.unref();
    this.startChild();
  }

  /** The child's pid, while one runs (for tests and the stats line). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.resyncTimer);
    clearTimeout(this.restartTimer);
    clearTimeout(this.settleTimer);
    this.child?.kill('SIGTERM');
    this.child = undefined;
  }

  private startChild(): void {
    const [file, ...args] = this.command;
    let child: ChildProcess;
    try {
      child = spawn(file, args, { stdio: ['ignore', 'pipe', 'ignore'] });
    } catch (err) {
      this.childEnded(undefined, (err as Error).message);
      return;
    }
    this.child = child;
    this.startedAt = Date.now();
    // The child is relay's helper, not a reason to keep relay running.
    child.unref();
    (child.stdout as (NodeJS.ReadableStream & { unref?: () => void }) | null)?.unref?.();
    child.stdout?.on('data', () => this.changed());
    child.stdout?.on('error', () => { /* the child's end is reported by 'exit' or 'error' below */ });
    let ended = false;
    const end = (why: string) => {
      if (ended) return;
      ended = true;
      this.childEnded(child, why);
    };
    child.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') this.cannotRun(child, err.message);
      else end(err.message);
    });
    child.on('exit', (code, signal) => end(signal ? `killed by ${signal}` : `exited with status ${code}`));
    // What changed while no child watched is found now.
    this.changed();
  }

  /** No such command (no iproute2 here): said once; the periodic look at the addresses goes on alone. */
  private cannotRun(child: ChildProcess, why: string): void {
    if (this.child !== child) return;
    this.child = undefined;
    this.options.log.warn({ command: this.command.join(' '), why, resyncMs: this.options.resyncMs ?? ADDRESS_RESYNC_MS },
      'address watcher cannot run: addresses are checked periodically only');
  }

  private childEnded(child: ChildProcess | undefined, why: string): void {
    if (child && this.child !== child) return;
    this.child = undefined;
    if (this.stopped) return;
    if (Date.now() - this.startedAt >= HEALTHY_AFTER_MS) this.restartDelayMs = RESTART_FIRST_MS;
    const delayMs = this.restartDelayMs;
    this.restartDelayMs = Math.min(RESTART_MAX_MS, delayMs * 2);
    this.options.log.warn({ command: this.command.join(' '), why, restartInMs: delayMs,
      resyncMs: this.options.resyncMs ?? ADDRESS_RESYNC_MS },
    'address watcher stopped: restarting it; meanwhile addresses are checked periodically');
    this.restartTimer = setTimeout(() => this.startChild(), delayMs);
    this.restartTimer.unref();
  }

  private changed(): void {
    if (this.stopped || this.settleTimer) return;
    this.settleTimer = setTimeout(() => {
      this.settleTimer = undefined;
      if (!this.stopped) this.notify();
    }, CHANGE_SETTLE_MS);
  }

  /** A throw here would reach no one but the process: it is logged, and the next change tries again. */
  private notify(): void {
    try {
      this.options.onChange();
    } catch (err) {
      this.options.log.error({ err: errorWithStack(err) }, 'internal error while following address changes: trying again at the next one');
    }
  }
}
