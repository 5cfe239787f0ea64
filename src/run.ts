// `relay --proto ... --listen ... --backend ...` or `relay --config FILE`:
// start each service's data paths, log one start line, and on SIGTERM/SIGINT
// drain and exit 0. SIGHUP reloads the configuration file (a run from flags
// has none and goes on as it was); SIGUSR2 logs the counters; a throw outside
// any connection ends relay with one line and a non-zero status, for a
// supervisor to restart it.
import * as fs from 'node:fs';
import type { AdminOptions, LogLevel, RelayConfig } from './config';
import type { FileConfig } from './config-file';
import type { ServiceConfig } from './config-file';
import { createLogger, flushLogger, droppedLogLines, errorWithStack, Logger } from './log';
import { assertTransparentAllowed, raiseFileLimit } from './sys';
import { runSelfTest } from './sys/self-test';
import { Service, ServiceChange } from './service';
import { describeError } from './errors';
import { fdsNeeded } from './limits';
import { writePidFile, removePidFile } from './pid-file';
import { reportReady, WorkerRole, workerShare } from './workers';
import { joinHealthLink } from './health-link';
import { answerPrimary, drainedAtStart, DrainsEnded } from './admin/worker-side';
import { sameValue } from './service';

/** What a run serves: from flags, one service named `default`; from a file, its services. */
export interface RunPlan {
  readonly services: readonly ServiceConfig[];
  readonly logLevel: LogLevel;
  /** --log-level was given with --config: a reload keeps it rather than the file's. */
  readonly logLevelFixed?: boolean;
  /** The configuration file, when there is one: SIGHUP reads it again. */
  readonly configPath?: string;
  /** Where to write relay's pid (for `relay reload`); undefined writes none. */
  readonly pidFile?: string;
  /** Set in a worker process of --workers: its index and how many there are. */
  readonly worker?: WorkerRole;
  /** Read and check the file again, as at start (throws ConfigError). */
  readonly reread?: () => Promise<FileConfig>;
  /** --admin: /metrics and the admin API; undefined: no admin listener. */
  readonly admin?: AdminOptions;
}

/** Shared by the shutdown and the admin API's /healthz. */
interface RunState {
  stopping: boolean;
}

export async function runRelay(plan: RunPlan): Promise<void> {
  const worker = plan.worker;
  const log = worker ? createLogger(plan.logLevel).child({ worker: worker.index }) : createLogger(plan.logLevel);
  exitOnUncaught(log);
  const selfTest = await runSelfTest(); // relay's handles on this Node.js, over loopback: refuses the start if they differ
  // A worker runs its share: listeners in the SO_REUSEPORT group, limits split.
  const planned = worker ? plan.services.map((s) => ({ ...s, run: workerShare(s.run, worker.count, worker.index) })) : plan.services;
  const configs = planned.map((s) => s.run);
  for (const family of new Set(configs.flatMap((c) => c.backends.map((b) => b.endpoint.family)))) {
    assertTransparentAllowed(family);
  }
  const fileLimit = checkFileLimit(configs, log);
  const fromFile = plan.configPath !== undefined;
  if (worker) joinHealthLink(worker.index === 0); // before any checker: they register with it
  const services = new Map<string, Service>();
  for (const { name, run } of planned) {
    const service = new Service(name, run, fromFile ? log.child({ service: name }) : log);
    // A worker started after an admin drain keeps that backend out before it listens.
    if (worker) for (const backend of drainedAtStart(name)) service.setDrained(backend, true);
    try {
      await service.start();
    } catch (err) {
      for (const started of services.values()) started.stop();
      flushLogger(log);
      throw err;
    }
    services.set(name, service);
  }
  const state: RunState = { stopping: false };
  // With workers the primary serves the admin listener and asks the workers (answerPrimary below).
  const admin = plan.admin && !worker ? await startAdmin(plan.admin, services, state, log) : undefined;
  if (plan.pidFile) writePidFile(plan.pidFile, log);
  const process_ = { node: process.version, selfTestMs: Math.round(selfTest.ms * 10) / 10, openFileLimit: fileLimit,
    ...(admin ? { admin: admin.where } : {}) };
  if (fromFile) {
    for (const [name, service] of services) log.info({ service: name, ...service.startFields() }, 'service started');
    log.info({ config: plan.configPath, services: [...services.keys()], ...process_ }, worker ? 'worker started' : 'relay started');
  } else {
    log.info({ ...[...services.values()][0].startFields(), ...process_ }, worker ? 'worker started' : 'relay started');
  }
  installShutdown(services, log, plan.pidFile, state);
  installOperatorSignals(services, log, plan);
  if (worker) {
    // The primary is gone (killed outright): nobody would restart or stop
    // this worker, so it drains and exits as on SIGTERM.
    process.on('disconnect', () => process.kill(process.pid, 'SIGTERM'));
    answerPrimary(services, relayVersion());
    reportReady();
  }
}

/**
 * The admin listener, loaded only when asked for (prom-client and its
 * default metrics' timers cost nothing otherwise). A failure stops the
 * services and refuses the start: an operator who asked for metrics wants
 * to know at once that there will be none.
 */
async function startAdmin(options: AdminOptions, services: Map<string, Service>, state: RunState, log: Logger) {
  try {
    const { AdminServer } = await import('./admin/server');
    const { localTarget } = await import('./admin/local');
    return await AdminServer.start(options, localTarget(services, () => !state.stopping, relayVersion()), log);
  } catch (err) {
    for (const service of services.values()) service.stop();
    flushLogger(log);
    throw err;
  }
}

/** package.json's version: dist/src/run.js sits two directories below it. */
function relayVersion(): string {
  try {
    return String(JSON.parse(fs.readFileSync(`${__dirname}/../../package.json`, 'utf8')).version);
  } catch {
    return 'unknown';
  }
}

/**
 * Read the file again and apply it, or change nothing: a file that does not
 * validate (the same checks as at start) leaves every service as it was.
 * Unchanged services are not touched; changed ones keep their listeners and
 * open connections and sessions; removed ones stop accepting and drain; new
 * ones start. One line says what changed.
 */
async function reloadServices(services: Map<string, Service>, log: Logger, plan: RunPlan): Promise<void> {
  let next: FileConfig;
  let wanted: Map<string, RelayConfig>;
  const worker = plan.worker;
  const share = (run: RelayConfig) => (worker ? workerShare(run, worker.count, worker.index) : run);
  try {
    next = await plan.reread!();
    wanted = new Map(next.services.map((s) => [s.name, share(s.run)])); // limits that cannot be split refuse the file
  } catch (err) {
    log.error({ config: plan.configPath, err: describeError(err) }, 'reload failed: configuration unchanged, still serving');
    return;
  }
  if (!plan.logLevelFixed && next.global.logLevel !== log.level) log.level = next.global.logLevel;
  const removed = [...services.keys()].filter((name) => !wanted.has(name));
  const added: string[] = [];
  const changed: Record<string, ServiceChange> = {};
  const failed: Record<string, string> = {};
  for (const name of removed) {
    const service = services.get(name)!;
    services.delete(name);
    void service.drain(true).catch((err) => log.error({ service: name, err: describeError(err) }, 'error while draining a removed service'));
  }
  for (const [name, run] of wanted) {
    const service = services.get(name);
    if (service) {
      const change = service.reload(run);
      if (change.applied.length > 0 || change.needsRestart.length > 0 || change.undrained.length > 0) changed[name] = change;
      continue;
    }
    const fresh = new Service(name, run, log.child({ service: name }));
    try {
      await fresh.start();
      services.set(name, fresh);
      added.push(name);
      log.info({ service: name, ...fresh.startFields() }, 'service started');
    } catch (err) {
      failed[name] = describeError(err);
    }
  }
  const restart = Object.entries(changed).filter(([, c]) => c.needsRestart.length > 0);
  const pidFileMoved = plan.pidFile !== undefined && next.global.pidFile !== plan.pidFile;
  const adminMoved = !sameValue(plan.admin, next.global.admin);
  const workersChanged = next.global.workers !== (plan.worker?.count ?? 1);
  // The relay's own keys: said once, by a single relay or worker 0, not by every worker.
  const globalKeys = (plan.worker?.index ?? 0) !== 0 ? []
    : [...(pidFileMoved ? ['pid-file'] : []), ...(adminMoved ? ['admin'] : []), ...(workersChanged ? ['workers'] : [])];
  if (restart.length > 0 || globalKeys.length > 0) {
    log.warn({
      config: plan.configPath,
      ...Object.fromEntries(restart.map(([name, c]) => [name, c.needsRestart])),
      ...(globalKeys.length > 0 ? { global: globalKeys } : {}),
    }, 'reload: these keys need a restart; the rest is applied');
  }
  if (plan.worker) tellPrimaryDrainsEnded(changed, removed);
  for (const [name, why] of Object.entries(failed)) {
    log.error({ service: name, err: why }, 'reload: new service could not start; the others are applied');
  }
  log.info({
    config: plan.configPath,
    servicesAdded: added,
    servicesRemoved: removed,
    servicesChanged: Object.keys(changed).filter((n) => changed[n].applied.length > 0),
    unchanged: [...services.keys()].filter((n) => !added.includes(n) && !(n in changed)),
    ...Object.keys(changed).length > 0 ? { changes: summarize(changed) } : {},
  }, 'configuration reloaded');
}

/** A reload ended these drains (and every drain of a removed service, backend '*'): the primary stops handing them to new workers. */
function tellPrimaryDrainsEnded(changed: Record<string, ServiceChange>, removed: readonly string[]): void {
  const entries: DrainsEnded['entries'] = Object.entries(changed).flatMap(([name, c]) => c.undrained.map((b): [string, string] => [name, b]));
  for (const name of removed) entries.push([name, '*']);
  if (entries.length > 0) process.send?.({ type: 'drains-ended', entries } satisfies DrainsEnded);
}

function summarize(changed: Record<string, ServiceChange>): object {
  return Object.fromEntries(Object.entries(changed).map(([name, c]) => [name, {
    keys: c.applied,
    ...(c.backendsAdded.length > 0 ? { backendsAdded: c.backendsAdded } : {}),
    ...(c.backendsRemoved.length > 0 ? { backendsRemoved: c.backendsRemoved, draining: c.draining } : {}),
    ...(c.undrained.length > 0 ? { undrained: c.undrained } : {}),
  }]));
}

/**
 * A throw that no connection or session owns (a listener's, a timer's of
 * relay's own, the event loop's): relay's state can no longer be trusted, so
 * it logs one line with the stack and exits non-zero for its supervisor
 * (systemd Restart=on-failure) to start it afresh. Throws inside one
 * connection's or session's handling never get here: they close only that one.
 */
function exitOnUncaught(log: Logger): void {
  const fatal = (err: unknown) => {
    log.fatal({ err: errorWithStack(err) }, 'internal error outside any connection: exiting');
    flushLogger(log);
    process.exit(1);
  };
  process.on('uncaughtException', fatal);
  process.on('unhandledRejection', fatal);
}

/**
 * SIGHUP: reload the configuration file (nginx and HAProxy reload on it, and
 * systemd's ExecReload sends it); a run from flags has nothing to reload and
 * says so. SIGUSR2: one line with the counters and what relay holds (fds,
 * memory), without stopping anything.
 */
function installOperatorSignals(services: Map<string, Service>, log: Logger, plan: RunPlan): void {
  let reloading: Promise<void> = Promise.resolve();
  process.on('SIGHUP', () => {
    if (!plan.reread) {
      log.warn({ signal: 'SIGHUP' }, 'SIGHUP: no configuration file: nothing to reload (relay was started with flags)');
      return;
    }
    // One reload at a time, in the order the signals came.
    reloading = reloading.then(() => reloadServices(services, log, plan));
  });
  process.on('SIGUSR2', () => {
    log.info(statsFields(services), 'relay stats');
  });
}

function statsFields(services: Map<string, Service>): object {
  const memory = process.memoryUsage();
  const counters = services.size === 1 && services.has('default')
    ? services.get('default')!.stats()
    : { services: Object.fromEntries([...services].map(([name, s]) => [name, s.stats()])) };
  return {
    fds: openFds(),
    rss: memory.rss,
    heapUsed: memory.heapUsed,
    logLinesDropped: droppedLogLines(),
    ...counters,
  };
}

/** The fds this process holds (the directory read itself holds one more while it runs). */
function openFds(): number | undefined {
  try {
    return fs.readdirSync('/proc/self/fd').length - 1;
  } catch {
    return undefined;
  }
}

/**
 * Raise the open-file limit to what the configured limits can use, and warn
 * when it cannot be (the kernel would then refuse sockets with EMFILE under load).
 */
function checkFileLimit(configs: readonly RelayConfig[], log: Logger): number {
  const needed = configs.reduce((sum, config) => sum + fdsNeeded(config), 0);
  const limit = raiseFileLimit(needed);
  if (limit.soft < needed) {
    const sum = (key: 'maxConns' | 'maxSessions', protocol: string) =>
      configs.filter((c) => c.protocols.includes(protocol as 'tcp')).reduce((n, c) => n + c[key], 0);
    log.warn({
      openFileLimit: limit.soft, needed,
      ...(configs.some((c) => c.protocols.includes('tcp')) ? { maxConns: sum('maxConns', 'tcp') } : {}),
      ...(configs.some((c) => c.protocols.includes('udp')) ? { maxSessions: sum('maxSessions', 'udp') } : {}),
    },
      'open-file limit is below what --max-conns/--max-sessions can use: raise it (LimitNOFILE= in systemd, ulimit -Hn) or lower them');
  }
  return limit.soft;
}

function installShutdown(services: Map<string, Service>, log: Logger, pidFile: string | undefined, state: RunState): void {
  const open = () => [...services.values()].reduce((n, s) => n + s.openConnections, 0);
  const stop = (signal: NodeJS.Signals) => {
    if (state.stopping) {
      log.warn({ signal, open: open() }, 'second signal: closing open connections now');
      for (const service of services.values()) service.endDrainNow();
      return;
    }
    state.stopping = true;
    const sessions = [...services.values()].reduce((n, s) => n + s.openSessions, 0);
    const drainTimeoutMs = Math.max(...[...services.values()].map((s) => s.config.drainTimeoutMs));
    log.info({ signal, open: open(), sessions, drainTimeoutMs }, 'stopping: draining connections');
    Promise.all([...services.values()].map((s) => s.drain()))
      .then(() => {
        removePidFile(pidFile);
        log.info({ ...statsFields(services), fds: undefined, rss: undefined, heapUsed: undefined }, 'relay stopped');
        flushLogger(log);
        process.exit(0);
      })
      .catch((err) => {
        removePidFile(pidFile);
        log.error({ err: describeError(err) }, 'error while draining');
        flushLogger(log);
        process.exit(1);
      });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

