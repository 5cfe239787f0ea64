// The admin API of a relay with --workers, served by the primary: it asks
// every worker over the fork's IPC channel and answers for the whole relay.
// /metrics sums the workers' registries (prom-client's
// AggregatorRegistry.aggregate, each family by its aggregator) and adds a
// per-worker family or two; /status sums the services and lists each
// worker's own; a drain reaches every worker and is answered once all have
// acknowledged it. A worker that does not answer within ASK_TIMEOUT_MS is
// left out and the answer says so: a scrape never waits on a stuck worker.
import type { ChildProcess } from 'node:child_process';
import { AggregatorRegistry, Registry } from 'prom-client';
import type { AdminTarget, DrainOutcome } from './server';
import type { AdminReply, AdminRequest, DrainsEnded } from './worker-side';
import { DRAINED_ENV } from './worker-side';
import { registerFamily } from './metrics';
import { mergeStatus, ProcessStatus } from './status';

/** How long the primary waits for a worker's answer before leaving it out. */
export const ASK_TIMEOUT_MS = 1000;

/** What the primary knows of one worker (src/workers.ts keeps it). */
export interface WorkerHandle {
  readonly index: number;
  readonly child?: ChildProcess;
  readonly ready: boolean;
  readonly restarts: number;
}

/** A registry's families as getMetricsAsJSON gives them (what aggregate() takes). */
type MetricsJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;

type Question = { what: 'metrics' } | { what: 'status' } | { what: 'drain'; service: string; backend: string; drained: boolean };

export class PrimaryAdmin implements AdminTarget {
  private nextId = 1;
  private readonly pending = new Map<number, (reply: AdminReply) => void>();
  /** Each live worker's last metrics answer: its counters stand in for it while it does not answer. */
  private readonly lastMetrics = new Map<number, MetricsJson>();
  /** The counters of workers that exited, summed: a worker's restart does not take the relay's *_total back. */
  private retired: MetricsJson = [];
  /** Backends drained through the API, by service|backend: every worker started later gets them. */
  private readonly drains = new Map<string, [service: string, backend: string]>();

  constructor(private readonly workers: () => readonly WorkerHandle[], private readonly stopping: () => boolean) {}

  /** Handle a worker's admin message; false when it is not one. */
  onMessage(message: AdminReply | DrainsEnded | { type?: string }): boolean {
    if (message?.type === 'admin-reply') {
      const reply = message as AdminReply;
      this.pending.get(reply.id)?.(reply);
      return true;
    }
    if (message?.type === 'drains-ended') {
      for (const [service, backend] of (message as DrainsEnded).entries) {
        for (const [key, [s, b]] of this.drains) if (s === service && (backend === '*' || b === backend)) this.drains.delete(key);
      }
      return true;
    }
    return false;
  }

  /** The environment a worker starts with: the drains in force, applied before it listens. */
  workerEnv(): Record<string, string> {
    return this.drains.size > 0 ? { [DRAINED_ENV]: JSON.stringify([...this.drains.values()]) } : {};
  }

  /** A worker serves: send it the drains again, in case one came between its fork and now. */
  workerReady(child: ChildProcess): void {
    for (const [service, backend] of this.drains.values()) {
      send(child, { type: 'admin-request', id: 0, what: 'drain', service, backend, drained: true });
    }
  }

  /** A worker exited: its last counters join the retired sum (it counted up to the last scrape that reached it). */
  workerExited(index: number): void {
    const last = this.lastMetrics.get(index);
    this.lastMetrics.delete(index);
    if (last) this.retired = aggregateNow([this.retired, countersOnly(last)]);
  }

  async metrics(): Promise<{ text: string; contentType: string }> {
    const asked = this.serving();
    const answers = await Promise.all(asked.map((w) => this.ask(w, { what: 'metrics' })));
    const parts: MetricsJson[] = [this.retired];
    const reporting = new Map<number, boolean>();
    asked.forEach((worker, i) => {
      const metrics = answers[i]?.metrics as MetricsJson | undefined;
      reporting.set(worker.index, metrics !== undefined);
      if (metrics) this.lastMetrics.set(worker.index, metrics);
      const counted = metrics ?? countersOnly(this.lastMetrics.get(worker.index) ?? []);
      parts.push(counted);
    });
    const summed = AggregatorRegistry.aggregate(parts);
    const own = this.ownRegistry(reporting);
    return { text: (await summed.metrics()) + (await own.metrics()), contentType: summed.contentType };
  }

  async status(): Promise<object> {
    const all = this.workers();
    const asked = this.serving();
    const answers = await Promise.all(asked.map((w) => this.ask(w, { what: 'status' })));
    const statuses = answers.map((a) => a?.status as ProcessStatus | undefined);
    const answered = statuses.filter((s): s is ProcessStatus => s !== undefined);
    return {
      pid: process.pid,
      uptimeSeconds: Math.round(process.uptime()),
      workers: all.length,
      workersAnswered: answered.length,
      services: mergeStatus(answered),
      perWorker: all.map((w) => {
        const i = asked.indexOf(w);
        const status = i >= 0 ? statuses[i] : undefined;
        return {
          worker: w.index, pid: w.child?.pid ?? null, restarts: w.restarts,
          ...(status ? { answered: true, uptimeSeconds: status.uptimeSeconds, services: status.services }
            : { answered: false, why: w.ready ? `no answer within ${ASK_TIMEOUT_MS} ms` : 'not serving (starting or restarting)' }),
        };
      }),
    };
  }

  health(): { serving: boolean; text: string } {
    if (this.stopping()) return { serving: false, text: 'stopping\n' };
    const serving = this.serving().length;
    const count = this.workers().length;
    return serving > 0 ? { serving: true, text: `ok: ${serving} of ${count} workers serving\n` }
      : { serving: false, text: `no worker serving (0 of ${count})\n` };
  }

  /**
   * Every worker applies it; answered once every serving worker has. A worker
   * that is starting gets it when it serves, and one started later with its
   * environment, before it listens.
   */
  async setDrained(service: string, backend: string, drained: boolean): Promise<DrainOutcome> {
    const all = this.workers().filter((w) => w.child);
    const serving = all.filter((w) => w.ready);
    if (serving.length === 0) return { done: false, status: 503, error: 'no worker is serving: try again when one is' };
    for (const w of all.filter((w) => !w.ready)) {
      send(w.child!, { type: 'admin-request', id: 0, what: 'drain', service, backend, drained });
    }
    const answers = await Promise.all(serving.map((w) => this.ask(w, { what: 'drain', service, backend, drained })));
    const outcomes = answers.map((a) => a?.outcome);
    const refused = outcomes.find((o) => o !== undefined && !o.done);
    if (refused && outcomes.every((o) => o === undefined || !o.done)) return refused;
    const key = `${service}|${backend}`;
    if (drained) this.drains.set(key, [service, backend]);
    else this.drains.delete(key);
    const silent = serving.filter((_, i) => outcomes[i] === undefined).map((w) => w.index);
    if (silent.length > 0) {
      return { done: false, status: 504, error: `worker ${silent.join(', ')} did not acknowledge within ${ASK_TIMEOUT_MS} ms: ` +
        'the others applied it; it reaches the silent one when it reads its channel, or when it restarts' };
    }
    return { done: true, fields: { workers: serving.length } };
  }

  /** The workers asked: those serving now. */
  private serving(): WorkerHandle[] {
    return this.workers().filter((w) => w.child !== undefined && w.ready);
  }

  /** One question to one worker: its reply, or undefined after ASK_TIMEOUT_MS (or when its channel is gone). */
  private ask(worker: WorkerHandle, question: Question): Promise<AdminReply | undefined> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      const done = (reply: AdminReply | undefined) => {
        clearTimeout(timer);
        this.pending.delete(id);
        resolve(reply);
      };
      const timer = setTimeout(() => done(undefined), ASK_TIMEOUT_MS);
      this.pending.set(id, done);
      if (!send(worker.child!, { type: 'admin-request', id, ...question } as AdminRequest)) done(undefined);
    });
  }

  /** Per-worker families: which workers answered this scrape, how often each was restarted. */
  private ownRegistry(reporting: ReadonlyMap<number, boolean>): Registry {
    const registry = new Registry();
    const all = this.workers();
    registerFamily(registry, 'relay_workers', 'Worker processes configured (--workers)', 'gauge',
      () => [{ labels: {}, value: all.length }]);
    registerFamily(registry, 'relay_worker_reporting',
      `Whether the worker answered this scrape within ${ASK_TIMEOUT_MS} ms (1); 0: its counters are its last answer's, its gauges left out`,
      'gauge', () => all.map((w) => ({ labels: { worker: String(w.index) }, value: reporting.get(w.index) ? 1 : 0 })));
    registerFamily(registry, 'relay_worker_restarts_total', 'Times the primary restarted this worker after it died', 'counter',
      () => all.map((w) => ({ labels: { worker: String(w.index) }, value: w.restarts })));
    return registry;
  }
}

/** Send over a worker's channel; false when the channel is closed (the worker is exiting). */
function send(child: ChildProcess, message: AdminRequest): boolean {
  if (!child.connected) return false;
  try {
    child.send(message, () => undefined); // the callback takes a send error (a channel closing) off the 'error' event
    return true;
  } catch {
    return false;
  }
}

/**
 * The families that only ever grow and that the workers' sum is right for
 * (counters and histograms): what a worker that is gone or silent still
 * contributes. Its gauges (open connections, fds) would be stale, so they go.
 */
function countersOnly(metrics: MetricsJson): MetricsJson {
  // prom-client's typings give type as a numeric enum; at run time it is the text 'counter', 'gauge', ...
  const typeOf = (m: MetricsJson[number]) => String(m.type as unknown);
  return metrics.filter((m) => (typeOf(m) === 'counter' || typeOf(m) === 'histogram') &&
    ((m as { aggregator?: string }).aggregator ?? 'sum') === 'sum');
}

/** aggregate() at once: its families' get() hands back the summed object synchronously. */
function aggregateNow(parts: MetricsJson[]): MetricsJson {
  return AggregatorRegistry.aggregate(parts).getMetricsAsArray()
    .map((m) => (m as unknown as { get(): MetricsJson[number] }).get());
}
