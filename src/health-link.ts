// One health state per relay, however many workers. Worker 0 is the leader:
// it runs the active checks and decides up and down. Every other worker
// sends the passive reports its traffic makes (a refused connect, a reply
// that passed) to the leader, through the primary, and applies the states
// the leader announces. So workers never disagree on which backends are up,
// and a backend that fails is marked down once. A worker restarted gets the
// current states from the primary as soon as it serves.
import type { Endpoint } from './addr';
import { formatEndpoint } from './addr';

/** Messages between a worker and the primary (over the fork's IPC channel). */
export type HealthMessage =
  | { type: 'health-report'; key: string; ok: boolean; reason: string }
  | { type: 'health-state'; key: string; up: boolean; reason: string };

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
  const link: HealthLink = {
    leader,
    report: (key, ok, reason) => process.send?.({ type: 'health-report', key, ok, reason } satisfies HealthMessage),
    announce: (key, up, reason) => process.send?.({ type: 'health-state', key, up, reason } satisfies HealthMessage),
    register: (key, onReport, onState) => handlers.set(key, { onReport, onState }),
  };
  process.on('message', (message: HealthMessage) => {
    const handler = handlers.get(message?.key);
    if (!handler) return;
    // States reach the leader too, once, when it (re)starts: the relay's state before it.
    if (message.type === 'health-report' && leader) handler.onReport(message.ok, message.reason);
    else if (message.type === 'health-state') handler.onState(message.up, message.reason);
  });
  current = link;
  return link;
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
