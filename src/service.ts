// One service: its listeners for each protocol, the balancer and health
// checker behind them, and what a reload may change while it serves. A run
// from flags is one service named `default`; a configuration file has many.
import type { RelayConfig, Protocol } from './config';
import type { Logger } from './log';
import { TcpRelay, TcpStats } from '../protocols/tcp';
import { UdpRelay, UdpStats } from '../protocols/udp';
import { createBalancer, Balancer, backendName } from './balance';
import { HealthChecker } from './health';
import { formatEndpoint, type Endpoint } from './addr';
import { healthLink, healthKey } from './health-link';
import { isWellKnownPrefix, WELL_KNOWN_WARNING } from './map-prefix';
import type { BackendCounterTable } from './admin/counters';

interface BackendPool {
  balancer: Balancer;
  health: HealthChecker;
}

/** The keys of a service that a reload cannot change while it serves, and why. */
const RESTART_KEYS: Partial<Record<keyof RelayConfig, string>> = {
  protocols: 'proto',
  listeners: 'listen',
  maxSessions: 'max-sessions',
  sessionTimeoutMs: 'session-timeout',
  udpEngine: 'udp-engine',
};

/** Each RelayConfig field's key in the file and on the command line. */
const KEY_OF: Record<keyof RelayConfig, string> = {
  protocols: 'proto', listeners: 'listen', backends: 'backend', balance: 'balance', health: 'health-*',
  keepClientPort: 'keep-client-port', connectTimeoutMs: 'connect-timeout', idleTimeoutMs: 'idle-timeout',
  drainTimeoutMs: 'drain-timeout', onFamilyMismatch: 'on-family-mismatch',
  mapIpv4Prefix: 'map-ipv4-prefix', maxConns: 'max-conns',
  maxSessions: 'max-sessions', sessionTimeoutMs: 'session-timeout', udpResponses: 'udp-responses', udpEngine: 'udp-engine', mark: 'mark',
  proxyProtocol: 'proxy-*', sendProxy: 'send-proxy', upstreamSource: 'upstream-source', logLevel: 'log-level',
  reusePort: 'workers',
};

/** What a reload did to one service. */
export interface ServiceChange {
  /** Keys whose new value now applies to new connections and sessions. */
  applied: string[];
  /** Keys whose new value waits for a restart (the old one still applies). */
  needsRestart: string[];
  backendsAdded: string[];
  backendsRemoved: string[];
  /** Connections and sessions still on removed backends, given drain-timeout to finish. */
  draining: number;
  /** Backends the admin API had drained: a reload puts them back in rotation. */
  undrained: string[];
}

/** One backend of one protocol, as /status and /metrics show it. */
export interface BackendView {
  readonly name: string;
  readonly weight: number;
  /** What health checks and passive reports say. */
  readonly healthy: boolean;
  /** Taken out of rotation through the admin API (until the next reload). */
  readonly drained: boolean;
  /** Connections or sessions open on it. */
  readonly active: number;
}

/** One protocol of a service: its counters and backends. */
export type ProtocolView =
  | { readonly protocol: 'tcp'; readonly open: number; readonly stats: TcpStats; readonly backends: readonly BackendView[];
      readonly counters: BackendCounterTable }
  | { readonly protocol: 'udp'; readonly open: number; readonly stats: UdpStats; readonly backends: readonly BackendView[];
      readonly counters: BackendCounterTable; readonly boundAddresses: readonly string[] };

export class Service {
  private tcp?: { relay: TcpRelay; pool: BackendPool };
  private udp?: { relay: UdpRelay; pool: BackendPool };
  /** Backends the admin API drained (ADDR:PORT): no new connections or sessions until enabled or a reload. */
  private readonly drained = new Set<string>();

  constructor(readonly name: string, private current: RelayConfig, private readonly log: Logger) {}

  get config(): RelayConfig {
    return this.current;
  }

  /** Listen on every address for every protocol; on a failure, close what opened and throw. */
  async start(): Promise<void> {
    const config = this.current;
    this.warnAboutPrefix(config);
    // Each protocol has its own balancer and health: DNS over TCP and over UDP
    // can fail independently on one backend address.
    if (config.protocols.includes('tcp')) {
      const pool = this.pool(config, 'tcp');
      this.tcp = { relay: new TcpRelay(config, this.log, pool.balancer, pool.health), pool };
    }
    if (config.protocols.includes('udp')) {
      const pool = this.pool(config, 'udp');
      this.udp = { relay: new UdpRelay(config, this.log, pool.balancer, pool.health), pool };
    }
    try {
      await this.tcp?.relay.listen();
      await this.udp?.relay.listen();
    } catch (err) {
      this.stop();
      throw err;
    }
    this.tcp?.pool.health.start();
    this.udp?.pool.health.start();
  }

  /** The start line's fields for this service. */
  startFields(): object {
    const config = this.current;
    return {
      proto: config.protocols.join(','),
      listen: config.listeners.map((l) => formatEndpoint(l.address, l.port)),
      ...(this.udp ? { udpBound: this.udp.relay.boundAddresses } : {}),
      backends: config.backends.map((b) => `${formatEndpoint(b.endpoint.address, b.endpoint.port)}${b.weight !== 1 ? `,weight=${b.weight}` : ''}`),
      balance: config.balance,
      healthIntervalMs: config.health.intervalMs,
      ...(this.tcp ? { maxConns: config.maxConns, keepClientPort: config.keepClientPort } : {}),
      ...(this.udp ? { maxSessions: config.maxSessions, sessionTimeoutMs: config.sessionTimeoutMs,
        udpResponses: config.udpResponses } : {}),
      onFamilyMismatch: config.onFamilyMismatch,
      ...(config.mapIpv4Prefix ? { mapIpv4Prefix: config.mapIpv4Prefix.text } : {}),
      ...(config.proxyProtocol ? { proxyProtocol: config.proxyProtocol.version, proxyFrom: config.proxyProtocol.from } : {}),
      ...(config.sendProxy ? { sendProxy: config.sendProxy } : {}),
      ...(config.upstreamSource !== 'client' ? { upstreamSource: config.upstreamSource } : {}),
    };
  }

  /** Accepted, but named at start and at each reload that sets it: it is usually a real NAT64's prefix. */
  private warnAboutPrefix(config: RelayConfig): void {
    if (config.mapIpv4Prefix && isWellKnownPrefix(config.mapIpv4Prefix)) {
      this.log.warn({ mapIpv4Prefix: config.mapIpv4Prefix.text }, `--map-ipv4-prefix: ${WELL_KNOWN_WARNING}`);
    }
  }

  /**
   * Apply a new configuration of this service while it serves: new
   * connections and sessions follow it at once; open ones keep their backend;
   * those on a removed backend get drain-timeout to finish. Keys that cannot
   * change live keep their old value and are reported.
   */
  reload(next: RelayConfig): ServiceChange {
    const previous = this.current;
    const changed = (Object.keys(KEY_OF) as (keyof RelayConfig)[])
      .filter((k) => k !== 'logLevel' && !sameValue(previous[k], next[k]));
    const needsRestart = changed.filter((k) => RESTART_KEYS[k] !== undefined);
    const applied = changed.filter((k) => RESTART_KEYS[k] === undefined);
    const names = (c: RelayConfig) => new Set(c.backends.map((b) => backendName(b.endpoint)));
    const before = names(previous);
    const after = names(next);
    const change: ServiceChange = {
      applied: applied.map((k) => KEY_OF[k]),
      needsRestart: needsRestart.map((k) => KEY_OF[k]),
      backendsAdded: [...after].filter((n) => !before.has(n)),
      backendsRemoved: [...before].filter((n) => !after.has(n)),
      draining: 0,
      undrained: this.undrainAll(),
    };
    if (applied.length === 0) return change;
    // What cannot change live keeps its old value; the rest is the new config's.
    const effective: RelayConfig = Object.freeze({
      ...next,
      ...Object.fromEntries(needsRestart.map((k) => [k, previous[k]])),
    });
    this.current = effective;
    if (applied.includes('mapIpv4Prefix')) this.warnAboutPrefix(effective);
    const removed = new Set(change.backendsRemoved);
    if (this.tcp) {
      this.tcp.pool = this.replacePool(this.tcp.pool, effective, 'tcp');
      this.tcp.relay.reconfigure(effective, this.tcp.pool.balancer, this.tcp.pool.health);
      change.draining += this.tcp.relay.retireBackends(removed, effective.drainTimeoutMs);
    }
    if (this.udp) {
      this.udp.pool = this.replacePool(this.udp.pool, effective, 'udp');
      this.udp.relay.reconfigure(effective, this.udp.pool.balancer, this.udp.pool.health);
      change.draining += this.udp.relay.retireBackends(removed, effective.drainTimeoutMs);
    }
    return change;
  }

  /**
   * Admin API: take a backend out of rotation (drained) or put it back. A
   * drained backend gets no new connections or sessions; open ones finish.
   * Health goes on being checked, so enable gives it back the state its
   * checks say. Returns false when the service has no such backend.
   */
  setDrained(name: string, drained: boolean): boolean {
    const backend = this.current.backends.find((b) => backendName(b.endpoint) === name);
    if (backend === undefined) return false;
    if (drained) this.drained.add(name);
    else this.drained.delete(name);
    for (const pool of this.pools()) pool.balancer.setUp(backend.endpoint, !drained && pool.health.isUp(backend.endpoint));
    return true;
  }

  /** A reload ends every admin drain (the docs say so): each backend gets its health's state back. */
  private undrainAll(): string[] {
    const names = [...this.drained];
    for (const name of names) this.setDrained(name, false);
    return names;
  }

  private pools(): BackendPool[] {
    return [this.tcp?.pool, this.udp?.pool].filter((p): p is BackendPool => p !== undefined);
  }

  /** Counters, backends and their states, for /status and /metrics. */
  protocolViews(): ProtocolView[] {
    const views: ProtocolView[] = [];
    if (this.tcp) {
      const { relay, pool } = this.tcp;
      views.push({ protocol: 'tcp', open: relay.openConnections, stats: relay.stats, backends: this.backendViews(pool),
        counters: relay.backends });
    }
    if (this.udp) {
      const { relay, pool } = this.udp;
      views.push({ protocol: 'udp', open: relay.openSessions, stats: relay.stats, backends: this.backendViews(pool),
        counters: relay.backends, boundAddresses: relay.boundAddresses });
    }
    return views;
  }

  private backendViews(pool: BackendPool): BackendView[] {
    return pool.balancer.status().map(({ backend, active }) => {
      const name = backendName(backend.endpoint);
      return { name, weight: backend.weight, healthy: pool.health.isUp(backend.endpoint), drained: this.drained.has(name), active };
    });
  }

  /** A new balancer and checker that take over the old ones' knowledge of the backends they share. */
  private replacePool(old: BackendPool, config: RelayConfig, protocol: Protocol): BackendPool {
    const pool = this.pool(config, protocol);
    pool.balancer.inherit(old.balancer);
    pool.health.inherit(old.health);
    old.health.stop();
    pool.health.start();
    return pool;
  }

  /** A balancer whose backends a health checker marks down and up, with a log line for each change. */
  private pool(config: RelayConfig, protocol: Protocol): BackendPool {
    const balancer = createBalancer(config.balance, config.backends);
    // Drained before this pool existed (a worker started after an admin drain): out from the first pick.
    for (const b of config.backends) if (this.drained.has(backendName(b.endpoint))) balancer.setUp(b.endpoint, false);
    const link = healthLink();
    const shared = link ? { link, keyOf: (backend: Endpoint) => healthKey(this.name, protocol, backend) } : undefined;
    const health = new HealthChecker(config.backends.map((b) => b.endpoint), protocol, config.health, (backend, up, reason, decided) => {
      // Counted where it is decided, so the workers' summed metrics count each transition once.
      const counters = (protocol === 'tcp' ? this.tcp : this.udp)?.relay.backends.of(backend);
      if (counters && decided) counters[up ? 'wentUp' : 'wentDown']++;
      // A drained backend stays out of rotation whatever its health; enable gives it this state.
      balancer.setUp(backend, up && !this.drained.has(backendName(backend)));
      const fields = { proto: protocol, backend: formatEndpoint(backend.address, backend.port), reason };
      // With workers, the leader's line says it once for the relay; the others apply it quietly.
      if (!decided) this.log.debug(fields, up ? 'backend up (from the leader)' : 'backend down (from the leader)');
      else if (up) this.log.info(fields, 'backend up');
      else this.log.warn(fields, 'backend down');
    }, shared);
    return { balancer, health };
  }

  get openConnections(): number {
    return this.tcp?.relay.openConnections ?? 0;
  }

  get openSessions(): number {
    return this.udp?.relay.openSessions ?? 0;
  }

  /** Counters for the stats and stop lines. */
  stats(): { tcp?: object; udp?: object } {
    return {
      ...(this.tcp ? { tcp: { ...this.tcp.relay.stats, open: this.tcp.relay.openConnections,
        ...(this.current.proxyProtocol ? { proxyRefusedBy: this.tcp.relay.proxyRefusedBy } : {}) } } : {}),
      ...(this.udp ? { udp: { ...this.udp.relay.stats, sessions: this.udp.relay.openSessions,
        ...(this.current.proxyProtocol ? { proxyRefusedBy: this.udp.relay.proxyRefusedBy } : {}) } } : {}),
    };
  }

  /**
   * Stop accepting; TCP connections get drain-timeout to finish. UDP sessions
   * end now when relay stops (shutdown: nothing to drain), or get
   * drain-timeout too when a reload removed the service (udpToo).
   */
  async drain(udpToo = false): Promise<void> {
    this.tcp?.pool.health.stop();
    this.udp?.pool.health.stop();
    const udp = udpToo ? this.udp?.relay.drain(this.current.drainTimeoutMs) : this.udp?.relay.close();
    await Promise.all([this.tcp?.relay.drain(), udp]);
  }

  /** Cut a drain short: a second SIGTERM/SIGINT means "now". */
  endDrainNow(): void {
    this.tcp?.relay.endDrainNow();
  }

  /** Close listeners and sessions without waiting (a start that failed half way). */
  stop(): void {
    this.tcp?.pool.health.stop();
    this.udp?.pool.health.stop();
    this.tcp?.relay.closeListeners();
    this.udp?.relay.close();
  }
}

/** Deep equality for config values: plain data, arrays, Buffers (a UDP probe), frozen objects. */
export function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Buffer.isBuffer(a) || Buffer.isBuffer(b)) return Buffer.isBuffer(a) && Buffer.isBuffer(b) && a.equals(b);
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const keysA = Object.keys(a).filter((k) => (a as Record<string, unknown>)[k] !== undefined);
  const keysB = Object.keys(b).filter((k) => (b as Record<string, unknown>)[k] !== undefined);
  return keysA.length === keysB.length &&
    keysA.every((k) => sameValue((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}
