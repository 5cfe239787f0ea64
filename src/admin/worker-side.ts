// A worker's side of the admin API with --workers: the primary serves the
// admin listener and asks each worker over the fork's IPC channel for its
// figures, or to drain or enable a backend. Nothing here runs per connection:
// a question is answered from the counters the data paths keep anyway, and
// prom-client loads at the first question (a relay without --admin never asks).
import type { Service } from '../service';
import type { DrainOutcome } from './server';
import type { LocalTarget } from './local';

/** The primary's questions; id 0 asks for no answer to be awaited (the drains a starting worker catches up on). */
export type AdminRequest = { type: 'admin-request'; id: number } & (
  | { what: 'metrics' }
  | { what: 'status' }
  | { what: 'drain'; service: string; backend: string; drained: boolean });

/** A worker's answer: its registry as JSON (for AggregatorRegistry.aggregate), its /status, or a drain's outcome. */
export interface AdminReply {
  type: 'admin-reply';
  id: number;
  metrics?: unknown[];
  status?: object;
  outcome?: DrainOutcome;
}

/** A worker's reload put these drained backends back in rotation (a reload ends every drain); '*': every backend of a removed service. */
export interface DrainsEnded {
  type: 'drains-ended';
  entries: [service: string, backend: string][];
}

/**
 * The drains a worker starts with, as [service, backend] pairs in JSON: a
 * worker restarted after a drain applies it before it listens, so no client
 * of its reaches a drained backend.
 */
export const DRAINED_ENV = 'RELAY_DRAINED';

/** The backends of service drained when this worker was started. */
export function drainedAtStart(service: string, env: NodeJS.ProcessEnv = process.env): string[] {
  try {
    const entries: unknown = JSON.parse(env[DRAINED_ENV] ?? '[]');
    if (!Array.isArray(entries)) return [];
    return entries.filter((e): e is [string, string] => Array.isArray(e) && e[0] === service && typeof e[1] === 'string')
      .map((e) => e[1]);
  } catch {
    return [];
  }
}

/** Answer the primary's admin questions about services (the live map: a reload changes it). */
export function answerPrimary(services: ReadonlyMap<string, Service>, version: string): void {
  let local: Promise<LocalTarget> | undefined;
  const target = () => (local ??= import('./local').then(({ localTarget }) => localTarget(services, () => true, version)));
  process.on('message', (message: AdminRequest) => {
    if (message?.type !== 'admin-request') return;
    void answer(message, services, target).then((reply) => {
      if (message.id !== 0) process.send?.(reply);
    }, () => undefined); // a question that failed goes unanswered: the primary leaves this worker out and says so
  });
}

async function answer(request: AdminRequest, services: ReadonlyMap<string, Service>,
  target: () => Promise<LocalTarget>): Promise<AdminReply> {
  const base = { type: 'admin-reply' as const, id: request.id };
  if (request.what === 'drain') {
    const { drainIn } = await import('./local');
    return { ...base, outcome: drainIn(services, request.service, request.backend, request.drained) };
  }
  if (request.what === 'status') return { ...base, status: await (await target()).status() };
  return { ...base, metrics: await (await target()).metricsJson() };
}
