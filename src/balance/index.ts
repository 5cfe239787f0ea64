// Backend choice: which backend a new client (TCP connection or UDP session)
// goes to. Pure: no I/O and no timers, so every algorithm is unit-tested
// without root. Health and connection counts come in from outside, through
// setUp() and onOpen()/onClose().
//
// Every algorithm prefers up backends of the client's own address family:
// only those can see the client's address. A client is sent across families
// (and so meets --on-family-mismatch) only when no backend of its family is
// up; when none at all is up, pick() returns undefined.
import type { Endpoint } from '../addr';
import type { Family } from '../sys/sockaddr';
import { ConfigError } from '../errors';
import { WeightedBackend, backendName } from './backend';
import { leastConnections } from './leastconn';
import { MAGLEV_TABLE_SIZE, maglev } from './maglev';
import { Client, Member, Strategy, toMembers } from './member';
import { smoothRoundRobin } from './roundrobin';
import { sourceHash } from './source';

export { DEFAULT_WEIGHT, MAX_WEIGHT, backendName, parseBackend, weightedBackend } from './backend';
export type { WeightedBackend } from './backend';
export { MAGLEV_MAX_TABLE_SIZE, MAGLEV_TABLE_SIZE, maglevTableNames } from './maglev';
export type { Client } from './member';

export const ALGORITHMS = ['roundrobin', 'leastconn', 'source', 'maglev'] as const;
export type Algorithm = (typeof ALGORITHMS)[number];

export interface BalancerOptions {
  /**
   * source and maglev: hash the client's port with its address, so one
   * client's UDP sessions spread over backends. Default false: one client,
   * one backend.
   */
  readonly hashPort?: boolean;
  /** maglev: lookup table size, a prime. Default MAGLEV_TABLE_SIZE. */
  readonly maglevTableSize?: number;
}

export interface BackendStatus {
  readonly backend: WeightedBackend;
  readonly up: boolean;
  readonly active: number;
}

/**
 * A backend as pick() returned it, or just its endpoint (what a health
 * checker knows). Either way it is found by ADDR:PORT.
 */
export type BackendRef = WeightedBackend | Endpoint;

export interface Balancer {
  readonly algorithm: Algorithm;
  /** As given to createBalancer, in that order. */
  readonly backends: readonly WeightedBackend[];
  /** The backend for a new client; undefined when no backend is up. */
  pick(client: Client): WeightedBackend | undefined;
  /**
   * For a retry after `failed` refused or timed out: an up backend other than
   * it (the client's family first), the least loaded, whatever the algorithm,
   * since source and maglev would answer `failed` again. With ownFamilyOnly
   * (--on-family-mismatch reject, which would refuse the other family), only
   * the client's family: undefined when none of it is up.
   */
  pickOther(client: Client, failed: BackendRef, ownFamilyOnly?: boolean): WeightedBackend | undefined;
  /** Health checker: mark a backend up or down. Every backend starts up. */
  setUp(backend: BackendRef, up: boolean): void;
  /** Data path: a connection (or UDP session) to backend opened. Call right after pick(). */
  onOpen(backend: BackendRef): void;
  /**
   * Data path: it ended, however it ended (including a failed connect). Once
   * per onOpen. A backend a reload removed is ignored: its connections end
   * after the balancer that replaced theirs took over.
   */
  onClose(backend: BackendRef): void;
  status(): BackendStatus[];
  /**
   * A reload: take over what the balancer being replaced knew of the backends
   * both have (up or down, open connections), so a down backend stays down
   * and leastconn still counts the connections opened before.
   */
  inherit(previous: Balancer): void;
}

/** The --balance flag's value. */
export function parseAlgorithm(text: string): Algorithm {
  const found = ALGORITHMS.find((name) => name === text);
  if (found === undefined) {
    throw new ConfigError(`balance algorithm must be one of ${ALGORITHMS.join(', ')}: got '${text}'`);
  }
  return found;
}

/**
 * Throws ConfigError for an empty list, a backend listed twice or a bad
 * maglev table size.
 */
export function createBalancer(
  algorithm: Algorithm,
  backends: readonly WeightedBackend[],
  options: BalancerOptions = {},
): Balancer {
  const members = toMembers(backends);
  const strategies = new Map<Family, Strategy>();
  for (const family of [4, 6] as const) {
    const own = members.filter((m) => m.backend.endpoint.family === family);
    if (own.length > 0) strategies.set(family, createStrategy(algorithm, own, options));
  }
  const find = memberFinder(members);
  return {
    algorithm,
    backends: Object.freeze([...backends]),
    pick(client) {
      const other: Family = client.family === 4 ? 6 : 4;
      const member = strategies.get(client.family)?.pick(client) ?? strategies.get(other)?.pick(client);
      return member?.backend;
    },
    pickOther(client, failed, ownFamilyOnly = false) {
      const excluded = find(failed);
      const candidates = (family: Family) => members.filter((m) => m.up && m !== excluded && m.backend.endpoint.family === family);
      const own = candidates(client.family);
      const pool = own.length > 0 || ownFamilyOnly ? own : candidates(client.family === 4 ? 6 : 4);
      let best: Member | undefined;
      for (const m of pool) if (!best || m.active / m.weight < best.active / best.weight) best = m;
      return best?.backend;
    },
    setUp(backend, up) {
      const member = find(backend);
      if (member.up === up) return;
      member.up = up;
      strategies.get(member.backend.endpoint.family)?.healthChanged(member);
    },
    onOpen(backend) {
      find(backend).active++;
    },
    onClose(backend) {
      const member = find(backend, false);
      if (member === undefined) return;
      // Never below zero: one stray close must not make a backend look
      // permanently idle to leastconn.
      if (member.active > 0) member.active--;
    },
    status() {
      return members.map(({ backend, up, active }) => ({ backend, up, active }));
    },
    inherit(previous) {
      for (const old of previous.status()) {
        const member = find(old.backend, false);
        if (member === undefined) continue;
        member.active = old.active;
        if (member.up !== old.up) this.setUp(member.backend, old.up);
      }
    },
  };
}

function createStrategy(algorithm: Algorithm, members: Member[], options: BalancerOptions): Strategy {
  switch (algorithm) {
    case 'roundrobin':
      return smoothRoundRobin(members);
    case 'leastconn':
      return leastConnections(members);
    case 'source':
      return sourceHash(members, options.hashPort ?? false);
    case 'maglev':
      return maglev(members, options.hashPort ?? false, options.maglevTableSize ?? MAGLEV_TABLE_SIZE);
  }
}

/** By identity first (the data path hands back what pick() returned), else by ADDR:PORT. */
function memberFinder(members: readonly Member[]): {
  (ref: BackendRef): Member;
  (ref: BackendRef, strict: false): Member | undefined;
} {
  const byObject = new Map<BackendRef, Member>(members.map((m) => [m.backend, m]));
  const byName = new Map(members.map((m) => [m.name, m]));
  return ((ref: BackendRef, strict = true) => {
    const known = byObject.get(ref);
    if (known !== undefined) return known;
    const name = backendName('endpoint' in ref ? ref.endpoint : ref);
    const member = byName.get(name);
    if (member === undefined && strict) throw new Error(`not a backend of this balancer: ${name}`);
    return member;
  }) as ReturnType<typeof memberFinder>;
}
