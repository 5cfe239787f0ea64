// One health state per relay, however many workers. Worker 0 is the leader:
// it runs the active checks and decides up and down. Every other worker
// sends the passive reports its traffic makes (a refused connect, a reply
// that passed) to the leader, through the primary, and applies the states
// the leader announces. So workers never disagree on which backends are up,
// and a backend that fails is marked down once. A worker restarted gets the
// current states from the primary as soon as it serves.
//
// Reports travel in batches: a message per connection (every connect and
// every session's first reply is a report) cost the follower, the primary
// and the leader a serialisation and two pipe hops each, about a third of a
// worker's time per new connection. A follower gathers its reports per
// backend as runs of equal results, in order, and sends them once per
// REPORT_BATCH_MS (a failure at the end of the event loop's turn): the
// leader replays the runs, so "in a row" means what it meant.
import type { Endpoint } from './addr';
import { formatEndpoint } from './addr';

/** Consecutive equal results of one backend, with the last one's reason. */
export interface ReportRun { ok: boolean; count: number; reason: string }

/** Messages between a worker and the primary (over the fork's IPC channel). */
export type HealthMessage =
  | { type: 'health-report'; key: string; runs: ReportRun[] }
  | { type: 'health-state'; key: string; up: boolean; reason: string };

/** How long a follower gathers successes before sending them. */
export const REPORT_BATCH_MS = 100;
/** A run longer than this changes nothing more: rise and fall are at most 100. */
const REPLAY_LIMIT = 100;
/** Runs kept per backend before a batch is sent early (a backend flapping on every connection). */
const MAX_RUNS = 64;

/** What a health checker needs from the link; undefined in a single-process relay. */
export interface HealthLink {
  /** Whether this process decides (runs active checks, records reports). */
  readonly leader: boolean;
  /** A follower's passive report, for the leader. */
  report(key: string, ok: boolean, reason: string): void;
  /** The leader's decision, for every follower. */
  announce(key: string, up: boolean, reason: string): void;
  /** Route messages for key to a checker (the latest registration wins: a reload replaces checkers). */
  register(key: string, onReport: (ok: boolean, reason: string) => void, onState: (up: boolean, reason: string) => void): void;
}

/** A backend's key across workers: service, protocol and ADDR:PORT. */
export function healthKey(service: string, protocol: string, backend: Endpoint): string {
  return `${service}|${protocol}|${formatEndpoint(backend.address, backend.port)}`;
}

let current: HealthLink | undefined;

/** The link of this worker process (undefined outside workers). */
export function healthLink(): HealthLink | undefined {
  return current;
}

/** A worker joins: messages go to and come from the primary over process.send. */
export function joinHealthLink(leader: boolean): HealthLink {
  const handlers = new Map<string, { onReport: (ok: boolean, reason: string) => void; onState: (up: boolean, reason: string) => void }>();
  const batch = new ReportBatch((message) => process.send?.(message));
  const link: HealthLink = {
    leader,
    report: (key, ok, reason) => batch.add(key, ok, reason),
    announce: (key, up, reason) => process.send?.({ type: 'health-state', key, up, reason } satisfies HealthMessage),
    register: (key, onReport, onState) => handlers.set(key, { onReport, onState }),
  };
  process.on('message', (message: HealthMessage) => {
    const handler = handlers.get(message?.key);
    if (!handler) return;
    // States reach the leader too, once, when it (re)starts: the relay's state before it.
    if (message.type === 'health-report' && leader) replayRuns(message.runs, handler.onReport);
    else if (message.type === 'health-state') handler.onState(message.up, message.reason);
  });
  current = link;
  return link;
}

/** The leader records a batch's results in the order they happened. */
export function replayRuns(runs: readonly ReportRun[], onReport: (ok: boolean, reason: string) => void): void {
  for (const run of runs) {
    for (let i = 0; i < Math.min(run.count, REPLAY_LIMIT); i++) onReport(run.ok, run.reason);
  }
}

/** A follower's reports, gathered per backend until sent. */
export class ReportBatch {
  private readonly pending = new Map<string, ReportRun[]>();
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;

  constructor(private readonly send: (message: HealthMessage) => void, private readonly delayMs = REPORT_BATCH_MS) {}

  add(key: string, ok: boolean, reason: string): void {
    let runs = this.pending.get(key);
    if (!runs) this.pending.set(key, (runs = []));
    const last = runs[runs.length - 1];
    if (last?.ok === ok) {
      last.count++;
      last.reason = reason;
    } else {
      runs.push({ ok, count: 1, reason });
    }
    // A failure may take a backend down: it goes at the end of this turn, not a period later.
    if (!ok || runs.length >= MAX_RUNS) this.immediate ??= setImmediate(() => this.flush());
    else this.timer ??= setTimeout(() => this.flush(), this.delayMs).unref();
  }

  flush(): void {
    clearTimeout(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
    this.timer = undefined;
    this.immediate = undefined;
    for (const [key, runs] of this.pending) this.send({ type: 'health-report', key, runs });
    this.pending.clear();
  }
}

/**
 * The primary's side: reports go to the leader; the leader's states are kept
 * (for a worker that starts later) and go to every other worker.
 */
export class HealthRouter {
  private readonly states = new Map<string, { up: boolean; reason: string }>();

  /** What to send where for a message from worker index. */
  route(from: number, message: HealthMessage, count: number): { to: number; message: HealthMessage }[] {
    if (message.type === 'health-report') return from === 0 ? [] : [{ to: 0, message }];
    if (from !== 0) return [];
    this.states.set(message.key, { up: message.up, reason: message.reason });
    return Array.from({ length: count - 1 }, (_, i) => ({ to: i + 1, message }));
  }

  /** The states a (re)started worker applies before it serves its first client: the leader's last word on each backend. */
  snapshot(): HealthMessage[] {
    return [...this.states].map(([key, s]) => ({ type: 'health-state', key, up: s.up, reason: s.reason }));
  }
}
