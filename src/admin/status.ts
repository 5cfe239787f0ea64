// GET /status: what each service listens on, its backends with their state,
// weight and open connections or sessions. Pure: built from the services, or
// with --workers summed from the workers' own (mergeStatus).
import type { Service } from '../service';
import { formatEndpoint } from '../addr';

export interface BackendStatus {
  backend: string;
  state: 'up' | 'down' | 'drained';
  healthy: boolean;
  weight: number;
  open: number;
}

export interface ProtocolStatus {
  connectionsOpen?: number;
  sessionsOpen?: number;
  bound?: string[];
  backends: BackendStatus[];
}

export interface ServiceStatus {
  name: string;
  listen: string[];
  balance: string;
  tcp?: ProtocolStatus;
  udp?: ProtocolStatus;
}

export interface ProcessStatus {
  pid: number;
  uptimeSeconds: number;
  services: ServiceStatus[];
}

export function statusOf(services: ReadonlyMap<string, Service>): ProcessStatus {
  return {
    pid: process.pid,
    uptimeSeconds: Math.round(process.uptime()),
    services: [...services.values()].map((service) => ({
      name: service.name,
      listen: service.config.listeners.map((l) => formatEndpoint(l.address, l.port)),
      balance: service.config.balance,
      ...Object.fromEntries(service.protocolViews().map((view) => [view.protocol, {
        ...(view.protocol === 'tcp' ? { connectionsOpen: view.open } : { sessionsOpen: view.open, bound: view.boundAddresses }),
        backends: view.backends.map((b): BackendStatus => ({
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

/**
 * The relay's services from its workers' statuses: open connections and
 * sessions add up; a backend's state is the workers' shared one (they apply
 * one health state and every drain), shown as the worst any worker reports
 * so a worker that lags is not hidden. A service one worker lacks (mid-reload) is still listed.
 */
export function mergeStatus(workers: readonly ProcessStatus[]): ServiceStatus[] {
  const byName = new Map<string, ServiceStatus>();
  for (const status of workers) {
    for (const service of status.services) {
      const seen = byName.get(service.name);
      if (!seen) {
        byName.set(service.name, structuredClone(service));
        continue;
      }
      for (const protocol of ['tcp', 'udp'] as const) {
        const add = service[protocol];
        if (!add) continue;
        const into = seen[protocol];
        if (!into) seen[protocol] = structuredClone(add);
        else mergeProtocol(into, add);
      }
    }
  }
  return [...byName.values()];
}

const STATE_RANK: Record<BackendStatus['state'], number> = { up: 0, down: 1, drained: 2 };

function mergeProtocol(into: ProtocolStatus, add: ProtocolStatus): void {
  if (into.connectionsOpen !== undefined) into.connectionsOpen += add.connectionsOpen ?? 0;
  if (into.sessionsOpen !== undefined) into.sessionsOpen += add.sessionsOpen ?? 0;
  for (const backend of add.backends) {
    const known = into.backends.find((b) => b.backend === backend.backend);
    if (!known) {
      into.backends.push({ ...backend });
      continue;
    }
    known.open += backend.open;
    known.healthy &&= backend.healthy;
    if (STATE_RANK[backend.state] > STATE_RANK[known.state]) known.state = backend.state;
  }
}
