// GET /status: what each service listens on, its backends with their state,
// weight and open connections or sessions. Pure: built from the services.
import type { Service } from '../service';
import { formatEndpoint } from '../addr';

export function statusOf(services: ReadonlyMap<string, Service>): object {
  return {
    pid: process.pid,
    uptimeSeconds: Math.round(process.uptime()),
    services: [...services.values()].map((service) => ({
      name: service.name,
      listen: service.config.listeners.map((l) => formatEndpoint(l.address, l.port)),
      balance: service.config.balance,
      ...Object.fromEntries(service.protocolViews().map((view) => [view.protocol, {
        ...(view.protocol === 'tcp' ? { connectionsOpen: view.open } : { sessionsOpen: view.open, bound: view.boundAddresses }),
        backends: view.backends.map((b) => ({
          backend: b.name,
          state: b.drained ? 'drained' : b.healthy ? 'up' : 'down',
          healthy: b.healthy,
          weight: b.weight,
          open: b.active,
        })),
      }])),
    })),
  };
}
