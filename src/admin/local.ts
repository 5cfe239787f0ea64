// The admin API's view of one process: its own services, read in place. A
// single relay serves it on its admin listener; with --workers each worker
// answers the primary's questions from it (src/admin/worker-side.ts).
import type { Service } from '../service';
import type { AdminTarget, DrainOutcome } from './server';
import { createMetricsRegistry } from './metrics';
import { statusOf } from './status';

/** The admin view of this process; metricsJson is what a worker hands its primary to sum. */
export interface LocalTarget extends AdminTarget {
  metricsJson(): Promise<unknown[]>;
}

/** relay's services (live: a reload changes the map) and whether it still serves. */
export function localTarget(services: ReadonlyMap<string, Service>, serving: () => boolean, version: string): LocalTarget {
  const registry = createMetricsRegistry(() => services.values(), version);
  return {
    metricsJson: () => registry.getMetricsAsJSON(),
    metrics: async () => ({ text: await registry.metrics(), contentType: registry.contentType }),
    status: async () => statusOf(services),
    health: () => (serving() ? { serving: true, text: 'ok\n' } : { serving: false, text: 'stopping\n' }),
    setDrained: async (service, backend, drained) => drainIn(services, service, backend, drained),
  };
}

/** Drain or enable backend of service in this process; a 404 outcome names what is missing. */
export function drainIn(services: ReadonlyMap<string, Service>, serviceName: string, backend: string, drained: boolean): DrainOutcome {
  const service = services.get(serviceName);
  if (!service) return { done: false, status: 404, error: `no service named ${serviceName}` };
  if (!service.setDrained(backend, drained)) {
    return { done: false, status: 404, error: `service ${serviceName} has no backend ${backend} (write ADDR:PORT, IPv6 as [ADDR]:PORT)` };
  }
  return { done: true };
}
