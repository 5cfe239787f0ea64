// --workers N: a primary process that never touches the data path starts N
// worker processes, each with its own listening sockets in a SO_REUSEPORT
// group (the kernel spreads clients over them by a hash of the four-tuple),
// restarts a worker that dies (with backoff), forwards signals, and on
// SIGTERM waits for every worker to drain. Each worker is an ordinary relay
// run of the same command line, told by its environment which worker it is.
import * as os from 'node:os';
import { fork, ChildProcess } from 'node:child_process';
import { ConfigError, echo } from './errors';
import type { RelayConfig } from './config';
import { createLogger, flushLogger, Logger } from './log';
import type { AdminOptions, LogLevel } from './config';
import { writePidFile, removePidFile } from './pid-file';
import { HealthRouter, HealthMessage } from './health-link';

/** The environment a worker runs with: its index, and how many there are. */
const WORKER_ENV = 'RELAY_WORKER';
const WORKERS_ENV = 'RELAY_WORKERS';
/** The configuration file's text as the relay runs it, for a worker (re)started. */
const CONFIG_TEXT_ENV = 'RELAY_CONFIG_TEXT';
/** Linux takes at most 128 KiB in one environment string; a larger file is read by the worker itself. */
const CONFIG_TEXT_ENV_MAX = 100_000;

/** A worker that dies is started again after this, doubling up to MAX_RESTART_DELAY_MS. */
export const FIRST_RESTART_DELAY_MS = 500;
export const MAX_RESTART_DELAY_MS = 30_000;
/** A worker that served this long before dying starts its backoff afresh. */
export const STABLE_AFTER_MS = 30_000;
/** How long the primary waits for every worker's first start. */
const START_TIMEOUT_MS = 30_000;

export interface WorkerRole {
  index: number;
  count: number;
}

/** This process's place among the workers, or undefined for a primary or a single-process relay. */
export function workerRole(env: NodeJS.ProcessEnv = process.env): WorkerRole | undefined {
  const index = Number(env[WORKER_ENV]);
  const count = Number(env[WORKERS_ENV]);
  if (!Number.isInteger(index) || !Number.isInteger(count) || count < 2 || index < 0 || index >= count) return undefined;
  return { index, count };
}

/** The --workers flag or `workers` key: a count, or auto (one per CPU this process may use). */
export function parseWorkers(raw: unknown, what = '--workers'): number {
  if (raw === undefined) return 1;
  const text = String(raw);
  if (text === 'auto') return Math.max(1, os.availableParallelism());
  const n = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n) || n < 1 || n > 256) {
    throw new ConfigError(`${what} must be auto or an integer from 1 to 256: got '${echo(text)}'`);
  }
  return n;
}

/**
 * A service's configuration as worker index of count runs it: its listeners
 * join the SO_REUSEPORT group, and the relay-wide limits are split so the
 * workers together use exactly them (the first limit % count workers take one
 * more than the others). A limit below count would leave a worker none, and
 * every client the kernel hands it refused: a ConfigError.
 */
export function workerShare(config: RelayConfig, count: number, index: number): RelayConfig {
  return Object.freeze({
    ...config,
    reusePort: true,
    maxConns: splitLimit(config.maxConns, count, index, 'max-conns', config.protocols.includes('tcp')),
    maxSessions: splitLimit(config.maxSessions, count, index, 'max-sessions', config.protocols.includes('udp')),
  });
}

function splitLimit(limit: number, count: number, index: number, key: string, used: boolean): number {
  if (limit < count && used) {
    throw new ConfigError(`${key} ${limit} is below the ${count} workers: each worker needs at least 1 ` +
      `(raise ${key} or run fewer workers)`);
  }
  return Math.max(1, Math.floor(limit / count) + (index < limit % count ? 1 : 0));
}

/** Refuse the start, before any worker, when a service's limits cannot be split over count workers. */
export function assertLimitsSplit(configs: readonly RelayConfig[], count: number): void {
  for (const config of configs) workerShare(config, count, 0);
}

/**
 * When to start again a worker that lived livedMs and was due to wait
 * delayMs: that delay, doubled for the next death up to MAX_RESTART_DELAY_MS,
 * unless it served STABLE_AFTER_MS, which starts the backoff afresh.
 */
export function restartBackoff(delayMs: number, livedMs: number): { delayMs: number; nextDelayMs: number } {
  const now = livedMs >= STABLE_AFTER_MS ? FIRST_RESTART_DELAY_MS : delayMs;
  return { delayMs: now, nextDelayMs: Math.min(MAX_RESTART_DELAY_MS, now * 2) };
}

interface Worker {
  index: number;
  child?: ChildProcess;
  startedAt: number;
  restartDelayMs: number;
  ready: boolean;
  /** Times the primary restarted it after it died. */
  restarts: number;
}

export interface PrimaryOptions {
  count: number;
  logLevel: LogLevel;
  /** The command line the workers run (the primary's own, as given). */
  argv: readonly string[];
  /** The entry point the workers run (the CLI). */
  entry: string;
  pidFile?: string;
  configPath?: string;
  /** --admin: the primary serves it for the whole relay (src/admin/primary.ts). */
  admin?: AdminOptions;
  /**
   * --config: the file's text as the relay runs it, which a worker started
   * later (a restart) runs too, whatever the file says by then; check
   * validates a reloaded text as the workers will.
   */
  config?: { path: string; text: string; check(text: string): Promise<void> };
}

/** The configuration text the primary handed this worker, if any. */
export function configTextFromPrimary(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return env[CONFIG_TEXT_ENV];
}

/**
 * The primary: start every worker, log one `relay started` line once all are
 * serving, and keep them running until SIGTERM/SIGINT. Resolves never; the
 * process exits when the workers have drained (0 if each exited 0).
 */
export async function runPrimary(options: PrimaryOptions): Promise<void> {
  const log = createLogger(options.logLevel).child({ role: 'primary' });
  const workers: Worker[] = Array.from({ length: options.count }, (_, index) =>
    ({ index, startedAt: 0, restartDelayMs: FIRST_RESTART_DELAY_MS, ready: false, restarts: 0 }));
  const health = new HealthRouter();
  let stopping = false;
  // Before any worker: an admin address in use refuses the start with nothing to stop.
  const admin = options.admin ? await startAdmin(options.admin, () => workers, () => stopping, log) : undefined;
  let started = false;
  const exitCodes: (number | null)[] = [];
  let configText = options.config?.text;
  const configEnv = (): NodeJS.ProcessEnv =>
    (configText !== undefined && configText.length <= CONFIG_TEXT_ENV_MAX ? { [CONFIG_TEXT_ENV]: configText } : {});

  const start = (worker: Worker): void => {
    worker.ready = false;
    worker.startedAt = Date.now();
    const child = fork(options.entry, [...options.argv], {
      env: { ...process.env, [WORKER_ENV]: String(worker.index), [WORKERS_ENV]: String(options.count), ...configEnv(),
        ...admin?.target.workerEnv() },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      // Its own process group: a Ctrl-C at the terminal reaches the primary
      // alone, which passes one SIGTERM on (twice would cut the drain short).
      detached: true,
    });
    worker.child = child;
    child.on('message', (message: { type?: string } | HealthMessage) => {
      if (admin?.target.onMessage(message)) return;
      if (message?.type === 'ready') {
        worker.ready = true;
        // A worker (re)started: the relay's health state before it, as the leader decided it.
        for (const state of health.snapshot()) child.send(state);
        admin?.target.workerReady(child);
      } else if (message?.type === 'health-report' || message?.type === 'health-state') {
        for (const { to, message: out } of health.route(worker.index, message as HealthMessage, options.count)) {
          workers[to].child?.send(out);
        }
      }
    });
    child.once('exit', (code, signal) => exited(worker, child, code, signal));
  };

  const exited = (worker: Worker, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void => {
    if (worker.child !== child) return;
    worker.child = undefined;
    worker.ready = false;
    admin?.target.workerExited(worker.index);
    if (stopping) {
      exitCodes.push(code);
      if (workers.every((w) => w.child === undefined)) finish();
      return;
    }
    if (!started) {
      // A worker that cannot start (a port in use, no privilege) has said why on stderr.
      log.fatal({ worker: worker.index, pid: child.pid, code, signal }, 'a worker failed to start: stopping');
      stopAll('SIGTERM');
      stopping = true;
      exitCodes.push(code ?? 1);
      return;
    }
    const lived = Date.now() - worker.startedAt;
    const { delayMs, nextDelayMs } = restartBackoff(worker.restartDelayMs, lived);
    worker.restartDelayMs = nextDelayMs;
    log.error({ worker: worker.index, pid: child.pid, code, signal, livedMs: lived, restartInMs: delayMs },
      'worker exited: restarting it');
    setTimeout(() => {
      if (stopping) return;
      worker.restarts++;
      start(worker);
      log.info({ worker: worker.index, pid: worker.child?.pid }, 'worker restarted');
    }, delayMs);
  };

  const stopAll = (signal: NodeJS.Signals): void => {
    for (const w of workers) w.child?.kill(signal);
  };

  const finish = (): void => {
    removePidFile(options.pidFile);
    const failed = exitCodes.some((c) => c !== 0);
    log.info({ workers: options.count, exitCodes }, 'relay stopped');
    flushLogger(log);
    process.exit(failed ? 1 : 0);
  };

  for (const worker of workers) start(worker);
  // A reload: the text a restarted worker gets is the file's only if it is valid (each worker says why not).
  const beforeReload = async (): Promise<void> => {
    if (!options.config) return;
    try {
      const { readConfigText } = await import('./config-file');
      const text = readConfigText(options.config.path);
      await options.config.check(text);
      configText = text;
    } catch {
      // The workers refuse it too, and log why; a worker restarted later runs what the others run.
    }
  };
  installPrimarySignals(log, workers, beforeReload, () => {
    if (stopping) {
      stopAll('SIGTERM'); // a second signal: the workers cut their drain short
      return;
    }
    stopping = true;
    log.info({ workers: options.count }, 'stopping: draining every worker');
    if (workers.every((w) => w.child === undefined)) finish();
    else stopAll('SIGTERM');
  });
  await waitUntil(() => workers.every((w) => w.ready) || stopping, START_TIMEOUT_MS);
  if (stopping) return;
  started = true;
  if (options.pidFile) writePidFile(options.pidFile, log);
  log.info({ workers: options.count, pids: workers.map((w) => w.child?.pid), ...(options.configPath ? { config: options.configPath } : {}),
    ...(admin ? { admin: admin.server.where } : {}) }, 'relay started');
}

/** The admin listener in the primary, loaded only when asked for; a failure throws (relay does not start). */
async function startAdmin(options: AdminOptions, workers: () => readonly Worker[], stopping: () => boolean, log: Logger) {
  const { PrimaryAdmin } = await import('./admin/primary');
  const { AdminServer } = await import('./admin/server');
  const target = new PrimaryAdmin(workers, stopping);
  return { target, server: await AdminServer.start(options, target, log) };
}

/** SIGHUP (reload, after beforeReload) and SIGUSR2 (stats) go to every worker; SIGTERM/SIGINT stop them. */
function installPrimarySignals(log: Logger, workers: readonly Worker[], beforeReload: () => Promise<void>, stop: () => void): void {
  const passOn = (signal: NodeJS.Signals) => {
    log.info({ signal, workers: workers.filter((w) => w.child).length }, 'passing the signal to every worker');
    for (const w of workers) w.child?.kill(signal);
  };
  process.on('SIGHUP', () => void beforeReload().then(() => passOn('SIGHUP')));
  process.on('SIGUSR2', () => passOn('SIGUSR2'));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

/** A worker tells the primary it is serving (no-op without a primary). */
export function reportReady(): void {
  process.send?.({ type: 'ready' });
}

async function waitUntil(done: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
}
