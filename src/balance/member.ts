// A backend's live state inside one balancer, shared by every algorithm. Pure.
import type { Family } from '../sys/sockaddr';
import { ConfigError } from '../errors';
import { WeightedBackend, backendName } from './backend';

export interface Member {
  readonly backend: WeightedBackend;
  /** backendName(): the identity hash-based algorithms sort and hash by. */
  readonly name: string;
  readonly weight: number;
  /** Set from outside by a health checker; every member starts up. */
  up: boolean;
  /** Connections (or UDP sessions) open now: onOpen minus onClose. */
  active: number;
}

/** The client as the algorithms see it. */
export interface Client {
  readonly address: string;
  readonly family: Family;
  /** Hashed too only with the hashPort option (UDP sessions). */
  readonly port?: number;
}

/**
 * One algorithm's choice among the members of one address family.
 * pick() returns an up member, or undefined when none of its members is up.
 */
export interface Strategy {
  pick(client: Client): Member | undefined;
  /** Called after a member's up flag changed, to update what depends on it. */
  healthChanged(member: Member): void;
}

export function toMembers(backends: readonly WeightedBackend[]): Member[] {
  if (backends.length === 0) throw new ConfigError('at least one backend is needed');
  const seen = new Set<string>();
  return backends.map((backend) => {
    const name = backendName(backend.endpoint);
    // Two entries for one backend would be one server counted twice, and
    // would give maglev two identical permutations: almost surely a typo.
    if (seen.has(name)) {
      throw new ConfigError(`backend ${name} is listed twice`, 'give it a weight instead');
    }
    seen.add(name);
    return { backend, name, weight: backend.weight, up: true, active: 0 };
  });
}

/**
 * Members in name order (plain code-unit comparison, never locale-aware).
 * Hash-based algorithms build from this order, so that every relay host with
 * the same backends builds the same thing whatever order they were listed in.
 */
export function byName(members: readonly Member[]): Member[] {
  return [...members].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
