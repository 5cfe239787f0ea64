// The TCP data path, for IPv4 and IPv6 alike: accept a client, open an
// upstream socket bound to the client's address, connect it to the backend,
// and splice the two streams with backpressure, half-close and resets passed on.
import type { RelayConfig } from '../src/config';
import type { Logger } from '../src/log';
import { RateLimitedLog, errorWithStack } from '../src/log';
import { Endpoint, formatEndpoint, unmapAddress, familyOfAddress } from '../src/addr';
import { openTransparentTcp, listenTcpReusePort, TcpHandle, TcpListener, ReadHandlers, FaultOwner } from '../src/sys';
import { backendName } from '../src/balance';
import type { Balancer, WeightedBackend } from '../src/balance';
import type { HealthChecker } from '../src/health';
import { SysError, describeError } from '../src/errors';
import { listenError, listensV6Only } from '../src/listen';
import { injectFault } from '../src/faults';
import { openUpstream, UpstreamSockets, UpstreamOutcomes } from './upstream';
import { BackendCounterTable, BackendCounters } from '../src/admin/counters';
import { ProxyHeaderReader, type HeaderResult } from './proxy-header';
import { trustedSenders } from '../src/proxy-protocol/trust';
import { writeProxyHeader, type ProxyHeader } from '../src/proxy-protocol';

/** Clients the kernel may queue before relay accepts them (net.core.somaxconn caps it). */
const LISTEN_BACKLOG = 4096;

export interface TcpStats {
  accepted: number;
  rejectedMaxConns: number;
  rejectedFamilyMismatch: number;
  /** IPv4 clients relayed to an IPv6 backend from --map-ipv4-prefix + their address. */
  upstreamsMapped: number;
  upstreamFailed: number;
  portFallbacks: number;
  /** Refused at once because no backend was up. */
  rejectedNoBackend: number;
  /** Connects that failed before any data and were tried again on another backend. */
  retried: number;
  closed: number;
  /** Connections closed because relay's own handling of them threw (logged with the stack). */
  internalErrors: number;
  /** Connections that got a backend and ended, by why (the reasons their close lines give). */
  closedBy: Record<EndReason, number>;
  /** PROXY protocol in: headers that named a client. */
  proxyHeaders: number;
  /** PROXY protocol in: LOCAL (or UNKNOWN) headers, served from relay's own address. */
  proxyLocal: number;
  /** PROXY protocol in: connections from outside proxy-from, closed unread. */
  proxyUntrusted: number;
  /** PROXY protocol in: connections closed for their header (bad, too long, too slow); by reason in proxyRefused. */
  proxyRefused: number;
}

/** Where one client's upstream comes from and what it first sends. */
interface ClientIdentity {
  address: string;
  port: number;
  /** The front that sent the PROXY header, when there was one. */
  front?: { address: string; port: number };
  /** Connect from relay's own address: upstream-source relay, or a LOCAL header. */
  ownSource: boolean;
  /** Bytes for the backend before the client's own: a send-proxy header, then what followed the front's header. */
  firstBytes?: Buffer;
}

/**
 * What a connection needs from its relay (the relay itself: one object per
 * connection fewer than closures would cost).
 */
interface ConnectionOwner {
  /**
   * The backend failed before any data: count it against its health, release
   * it, and (when retry is allowed) offer another backend's upstream for the
   * client log names.
   */
  connectFailed(backend: WeightedBackend, reason: string, retry: boolean, log: ConnectionLog):
    { upstream: TcpHandle; backend: WeightedBackend; counters: BackendCounters } | undefined;
  /** The connection no longer uses this backend. */
  release(backend: WeightedBackend): void;
  /** The backend accepted the connection (passive health: a success). */
  connected(backend: WeightedBackend): void;
  /** Both sockets are closed and the line is logged. */
  closed(connection: ProxiedConnection): void;
  /** relay's own handling of the connection threw: count it and log it with the stack. */
  internalError(error: unknown, log: ConnectionLog): void;
}


/** Why a connection ended, as logged. */
export const END_REASONS = [
  'done', 'client reset', 'backend reset', 'idle timeout', 'connect timeout', 'backend refused', 'backend unreachable',
  'upstream error', 'client error', 'shutdown', 'internal error', 'backend removed',
] as const;
type EndReason = (typeof END_REASONS)[number];

export class TcpRelay implements ConnectionOwner, UpstreamOutcomes {
  readonly stats: TcpStats = {
    accepted: 0, rejectedMaxConns: 0, rejectedFamilyMismatch: 0, upstreamsMapped: 0, upstreamFailed: 0, portFallbacks: 0,
    rejectedNoBackend: 0, retried: 0, closed: 0, internalErrors: 0,
    closedBy: Object.fromEntries(END_REASONS.map((r) => [r, 0])) as Record<EndReason, number>,
    proxyHeaders: 0, proxyLocal: 0, proxyUntrusted: 0, proxyRefused: 0,
  };
  /** Per backend, bumped in place by the connections (read by /metrics). */
  readonly backends = new BackendCounterTable();
  /** Front connections closed for their header, by why. */
  readonly proxyRefusedBy: Record<string, number> = {};
  /** Fronts' connections whose header is still being read. */
  private readonly awaitingHeader = new Set<ProxyHeaderReader>();
  /** Runs while headers are awaited: closes those past proxy-header-timeout. */
  private headerSweep: NodeJS.Timeout | undefined;
  private isTrustedFront: (address: string) => boolean;
  private readonly listeners: TcpListener[] = [];
  private readonly open = new Set<ProxiedConnection>();
  /** Flushed at shutdown, so counts held back in a window are not lost. */
  private readonly rateLimitedLogs: RateLimitedLog[] = [];
  /** While draining: when to stop waiting for open connections. */
  private drainDeadline = 0;

  // Failures that come once per client come in floods: a few lines, with counts.
  private readonly noBackendLog: RateLimitedLog;
  private readonly mismatchLog: RateLimitedLog;
  private readonly upstreamFailedLog: RateLimitedLog;
  private readonly portFallbackLog: RateLimitedLog;
  private readonly untrustedLog: RateLimitedLog;
  private readonly badHeaderLog: RateLimitedLog;
  private upstreamSockets: UpstreamSockets<TcpHandle>;
  /**
   * The connection whose upstream openUpstream is opening: the relay is the
   * outcomes object of every call (an object and five closures per
   * connection fewer), and each outcome is about this one.
   */
  private opening: ConnectionLog | undefined;

  constructor(
    private config: RelayConfig,
    private readonly log: Logger,
    private balancer: Balancer,
    private health?: HealthChecker,
  ) {
    this.noBackendLog = new RateLimitedLog(log, 'warn', 'no backend is up: refusing client');
    this.mismatchLog = new RateLimitedLog(log, 'warn', "client and backend address families differ, so the client's " +
      'address cannot be kept: closing (--on-family-mismatch reject)');
    this.upstreamFailedLog = new RateLimitedLog(log, 'error', 'cannot open upstream socket: closing client');
    this.portFallbackLog = new RateLimitedLog(log, 'warn', "client's port is in use on this host: connecting from an ephemeral port");
    this.untrustedLog = new RateLimitedLog(log, 'warn', 'connection from outside proxy-from: closing (a PROXY header is trusted from those fronts only)');
    this.badHeaderLog = new RateLimitedLog(log, 'warn', 'no valid PROXY protocol header from the front: closing');
    this.rateLimitedLogs.push(this.noBackendLog, this.mismatchLog, this.upstreamFailedLog, this.portFallbackLog,
      this.untrustedLog, this.badHeaderLog);
    this.upstreamSockets = upstreamSocketsFor(config);
    this.isTrustedFront = trustedSenders(config.proxyProtocol?.from ?? []);
  }

  get openConnections(): number {
    return this.open.size;
  }

  /**
   * A reload: new connections use this config, balancer and health checker;
   * open ones keep their backend (and their own copy of the old config's
   * timeouts) until they end. The listeners stay as they are.
   */
  reconfigure(config: RelayConfig, balancer: Balancer, health?: HealthChecker): void {
    this.config = config;
    this.balancer = balancer;
    this.health = health;
    this.upstreamSockets = upstreamSocketsFor(config);
    this.backends.forgetObjects();
    this.isTrustedFront = trustedSenders(config.proxyProtocol?.from ?? []);
  }

  /**
   * Backends a reload removed: their connections may finish for up to
   * graceMs, then are closed. Returns how many were open.
   */
  retireBackends(names: ReadonlySet<string>, graceMs: number): number {
    const onRemoved = () => [...this.open].filter((conn) => names.has(conn.backendName));
    const count = onRemoved().length;
    if (count > 0) {
      setTimeout(() => {
        for (const conn of onRemoved()) conn.close('backend removed');
      }, graceMs).unref();
    }
    return count;
  }

  async listen(): Promise<void> {
    for (const endpoint of this.config.listeners) {
      this.listeners.push(this.listenOn(endpoint));
    }
  }

  private listenOn(endpoint: Endpoint): TcpListener {
    const log = this.log.child({ proto: 'tcp', listen: formatEndpoint(endpoint.address, endpoint.port) });
    const maxConnsLog = new RateLimitedLog(log, 'warn', 'max-conns reached: closing new client');
    // EMFILE and the like: libuv sheds the client itself, and a flood must not become a log flood.
    const acceptLog = new RateLimitedLog(log, 'error', 'accept failed');
    this.rateLimitedLogs.push(maxConnsLog, acceptLog);
    try {
      // A lone [::] takes IPv4 clients too (as ::ffff:a.b.c.d); beside an IPv4 listen on its port it is IPv6-only.
      const v6Only = listensV6Only(endpoint, 'tcp', this.config.listeners);
      const onClient = (client: TcpHandle) => this.accept(client, log, maxConnsLog);
      const onError = (err: SysError) => acceptLog.write({ code: err.code });
      return this.config.reusePort
        ? listenTcpReusePort(endpoint.address, endpoint.port, v6Only, LISTEN_BACKLOG, onClient, onError)
        : TcpListener.listen(endpoint.address, endpoint.port, endpoint.family, v6Only, LISTEN_BACKLOG, onClient, onError);
    } catch (err) {
      throw err instanceof SysError ? listenError(err, endpoint) : err;
    }
  }

  private accept(client: TcpHandle, log: Logger, maxConnsLog: RateLimitedLog): void {
    if (this.open.size + this.awaitingHeader.size >= this.config.maxConns) {
      this.stats.rejectedMaxConns++;
      client.close();
      maxConnsLog.write({ maxConns: this.config.maxConns, rejected: this.stats.rejectedMaxConns });
      return;
    }
    const peer = client.peer();
    if (!peer) {
      client.close(); // the client was gone before we saw it
      return;
    }
    injectFault('tcp-listener', peer.port);
    const address = unmapAddress(peer.address);
    if (this.config.proxyProtocol) {
      this.readProxyHeader(client, { address, port: peer.port }, log);
      return;
    }
    this.stats.accepted++;
    const ownSource = this.config.upstreamSource === 'relay';
    // Every identity has the same fields in the same order: one shape for the code that reads them.
    const identity: ClientIdentity = { address, port: peer.port, front: undefined, ownSource, firstBytes: undefined };
    if (this.config.sendProxy) identity.firstBytes = this.sendProxyHeader(identity, client.local());
    this.connectClient(client, identity, log);
  }

  /**
   * A front's connection: only a trusted front is read from; its header
   * names the client (or, LOCAL, the front itself) before a backend is chosen.
   */
  private readProxyHeader(client: TcpHandle, front: { address: string; port: number }, log: Logger): void {
    const ingress = this.config.proxyProtocol!;
    if (!this.isTrustedFront(front.address)) {
      this.stats.proxyUntrusted++;
      this.untrustedLog.write(() => ({ ...log.bindings(), front: formatEndpoint(front.address, front.port),
        untrusted: this.stats.proxyUntrusted }));
      client.close();
      return;
    }
    const reader = new ProxyHeaderReader(client, ingress.version, ingress.headerTimeoutMs, (result) => {
      this.awaitingHeader.delete(reader);
      try {
        this.headerRead(client, front, result, log);
      } catch (err) {
        this.stats.internalErrors++;
        log.error({ err: errorWithStack(err), front: formatEndpoint(front.address, front.port) }, 'internal error: connection closed');
        client.close();
      }
    });
    this.awaitingHeader.add(reader);
    this.headerSweep ??= setInterval(() => this.expireHeaders(), headerSweepMs(ingress.headerTimeoutMs)).unref();
  }

  /** Close the fronts' connections whose header is late; stop sweeping when none is awaited. */
  private expireHeaders(): void {
    const now = Date.now();
    for (const reader of [...this.awaitingHeader]) if (reader.deadline <= now) reader.expire();
    if (this.awaitingHeader.size === 0) this.stopHeaderSweep();
  }

  private stopHeaderSweep(): void {
    clearInterval(this.headerSweep);
    this.headerSweep = undefined;
  }

  private headerRead(client: TcpHandle, front: { address: string; port: number }, result: HeaderResult, log: Logger): void {
    if (!result.ok) {
      this.stats.proxyRefused++;
      this.proxyRefusedBy[result.why] = (this.proxyRefusedBy[result.why] ?? 0) + 1;
      this.badHeaderLog.write(() => ({ ...log.bindings(), front: formatEndpoint(front.address, front.port), why: result.why,
        ...(result.code ? { code: result.code } : {}), refused: this.stats.proxyRefused }));
      client.close();
      return;
    }
    this.stats.accepted++;
    const identity = this.identityFromHeader(result.header, front);
    // A send-proxy header, then what followed the front's header.
    const ours = this.config.sendProxy ? this.sendProxyHeader(identity, headerDestination(result.header) ?? client.local()) : undefined;
    identity.firstBytes = ours && result.rest ? Buffer.concat([ours, result.rest]) : ours ?? result.rest;
    this.connectClient(client, identity, log, result.rest?.length ?? 0, true);
  }

  /** The header's client, or for LOCAL (the front's own check) the front, served from relay's address. */
  private identityFromHeader(header: ProxyHeader, front: { address: string; port: number }): ClientIdentity {
    if (header.command === 'local') {
      this.stats.proxyLocal++;
      return { address: front.address, port: front.port, front, ownSource: true, firstBytes: undefined };
    }
    this.stats.proxyHeaders++;
    return { address: header.source.address, port: header.source.port, front,
      ownSource: this.config.upstreamSource === 'relay', firstBytes: undefined };
  }

  /** send-proxy: the header naming the client to the backend; destination is where the client connected to. */
  private sendProxyHeader(identity: ClientIdentity, destination: { address: string; port: number } | undefined): Buffer {
    const to = destination ? { address: unmapAddress(destination.address), port: destination.port }
      : { address: familyOfAddress(identity.address) === 4 ? '0.0.0.0' : '::', port: 0 };
    return writeProxyHeader(this.config.sendProxy!, 'stream', identity, to);
  }

  /** Choose a backend for the client and open its upstream; the client is closed if that fails. */
  private connectClient(client: TcpHandle, identity: ClientIdentity, log: Logger, payloadAhead = 0,
    clientReading = false): void {
    const { address: clientAddress, port: clientPort } = identity;
    const backend = this.balancer.pick({ address: clientAddress, family: familyOfAddress(clientAddress) });
    if (!backend) {
      this.stats.rejectedNoBackend++;
      this.noBackendLog.write(() => ({ ...log.bindings(), client: formatEndpoint(clientAddress, clientPort),
        rejected: this.stats.rejectedNoBackend }));
      client.reset();
      return;
    }
    const connLog = new ConnectionLog(log, clientAddress, clientPort, backend.endpoint, identity.ownSource, identity.front);
    const upstream = this.openUpstream(clientAddress, clientPort, backend.endpoint, connLog);
    if (!upstream) {
      client.close();
      return;
    }
    const counters = this.take(backend);
    this.open.add(new ProxiedConnection(client, upstream, backend, counters, this, this.config, connLog,
      identity.firstBytes, payloadAhead, clientReading));
  }

  /** A connection now uses backend: the balancer and the backend's counters count it. */
  private take(backend: WeightedBackend): BackendCounters {
    this.balancer.onOpen(backend);
    const counters = this.backends.of(backend);
    counters.opened++;
    return counters;
  }

  release(backend: WeightedBackend): void {
    this.balancer.onClose(backend);
    this.backends.of(backend).closed++;
  }

  connected(backend: WeightedBackend): void {
    this.health?.reportSuccess(backend.endpoint);
  }

  closed(connection: ProxiedConnection): void {
    if (!this.open.delete(connection)) return;
    this.stats.closed++;
    this.stats.closedBy[connection.endReason]++;
  }

  internalError(error: unknown, log: ConnectionLog): void {
    this.stats.internalErrors++;
    log.error({ err: errorWithStack(error), internalErrors: this.stats.internalErrors }, 'internal error: connection closed');
  }

  /**
   * A connect failed before any byte moved (the client is paused until its
   * upstream connects), so the client can be sent elsewhere once, unnoticed.
   */
  connectFailed(
    failed: WeightedBackend, reason: string, retry: boolean, log: ConnectionLog,
  ): { upstream: TcpHandle; backend: WeightedBackend; counters: BackendCounters } | undefined {
    this.health?.reportFailure(failed.endpoint, reason);
    this.backends.of(failed).connectFailures++;
    this.release(failed);
    if (!retry) return undefined;
    // Under reject, a backend of the other family would only be refused (unless the client's address is
    // mapped into IPv6): no retry beats a wasted one.
    const family = familyOfAddress(log.clientAddress);
    const next = this.balancer.pickOther({ address: log.clientAddress, family }, failed,
      this.config.onFamilyMismatch === 'reject' && !(family === 4 && this.config.mapIpv4Prefix));
    if (!next) return undefined;
    log.setBackend(next.endpoint); // what openUpstream logs is about the backend tried now
    const upstream = this.openUpstream(log.clientAddress, log.clientPort, next.endpoint, log);
    if (!upstream) {
      log.setBackend(failed.endpoint); // the connection's last line is about the connect that failed
      return undefined;
    }
    this.stats.retried++;
    return { upstream, backend: next, counters: this.take(next) };
  }

  /**
   * The upstream socket, bound but not yet connected, or undefined when the
   * client must be turned away (already logged).
   */
  private openUpstream(clientAddress: string, clientPort: number, backend: Endpoint, log: ConnectionLog): TcpHandle | undefined {
    if (log.ownSource) return this.upstreamSockets.unbound(backend.family);
    const port = this.config.keepClientPort ? clientPort : 0;
    log.setUpstreamSource(undefined); // a retry's backend may be of the client's own family
    // openUpstream reports while it runs: the relay itself takes the outcomes, for this connection.
    this.opening = log;
    try {
      return openUpstream(this.upstreamSockets, this, { address: clientAddress, port }, backend);
    } finally {
      this.opening = undefined;
    }
  }

  rejectedMismatch(): void {
    const log = this.opening!;
    this.stats.rejectedFamilyMismatch++;
    this.mismatchLog.write(() => log.fields({ rejected: this.stats.rejectedFamilyMismatch }));
  }

  mapped(source: string): void {
    this.stats.upstreamsMapped++;
    this.opening!.setUpstreamSource(source);
  }

  masqueraded(): void {
    this.opening!.debug({}, "family mismatch: connecting from relay's own address (--on-family-mismatch masquerade)");
  }

  portInUse(port: number): void {
    const log = this.opening!;
    this.stats.portFallbacks++;
    this.portFallbackLog.write(() => log.fields({ port, portFallbacks: this.stats.portFallbacks }));
  }

  failed(err: unknown): void {
    const log = this.opening!;
    this.stats.upstreamFailed++;
    this.upstreamFailedLog.write(() => log.fields({ err: describeError(err), failures: this.stats.upstreamFailed }));
  }

  /** Stop accepting, wait up to drainTimeoutMs for open connections, then close the rest. */
  async drain(): Promise<void> {
    this.closeListeners();
    this.drainDeadline = Date.now() + this.config.drainTimeoutMs;
    // A front's connection still in its header has no client yet to drain.
    for (const reader of [...this.awaitingHeader]) {
      reader.cancel();
      reader.client.close();
    }
    this.awaitingHeader.clear();
    this.stopHeaderSweep();
    await this.waitForClose();
    // Each close logs its line and leaves this.open at once.
    for (const conn of [...this.open]) conn.close('shutdown');
    for (const limited of this.rateLimitedLogs) limited.flush();
  }

  /** Cut a drain short: a second SIGTERM/SIGINT means "now". */
  endDrainNow(): void {
    this.drainDeadline = Date.now();
  }

  private async waitForClose(): Promise<void> {
    while (this.open.size > 0 && Date.now() < this.drainDeadline) {
      const deadline = this.drainDeadline;
      await new Promise((resolve) => setTimeout(resolve, Math.min(50, Math.max(1, deadline - Date.now()))));
    }
  }

  /** Stop listening without waiting (used when start-up fails half way). */
  closeListeners(): void {
    for (const listener of this.listeners.splice(0)) listener.close();
  }
}

/**
 * One client and its upstream. Owns both sockets: whatever ends one ends the
 * other, and exactly one log line says why.
 */
class ProxiedConnection implements FaultOwner {
  /** performance.now() at accept, for the closing line's durationMs. */
  private readonly startedAt = performance.now();
  /**
   * performance.now() when a byte last moved either way, for the idle
   * timeout; until connected, when the current connect began (for the
   * connect-time histogram): one field and one boxed number for both.
   */
  private lastActivity = this.startedAt;
  private reason: EndReason | undefined;
  private errorCode: string | undefined;
  private connected = false;
  /** The connect timeout until connected, then the idle timeout. */
  private timer: NodeJS.Timeout | undefined;
  /** Set once both sockets are being closed: nothing else may start. */
  private ending = false;
  /** Directions whose FIN has been passed on and sent: at 2 the connection is done. */
  private finsPassed = 0;
  /** FIN_FROM_CLIENT | FIN_FROM_BACKEND: whose FIN has been seen, so each is passed on once. */
  private finsSeen = 0;
  private bytesFromClient = 0;
  private bytesToClient = 0;
  /** Whether this.backend has been handed back to the balancer. */
  private released = false;
  private retried = false;
  /** Only for PROXY protocol (in or out) until connected: bytes for the backend before the client's own. */
  private early: EarlyBytes | undefined;

  constructor(
    private readonly client: TcpHandle,
    private upstream: TcpHandle,
    private backend: WeightedBackend,
    /** The backend's counters, bumped in place (no lookup per chunk). */
    private counters: BackendCounters,
    private readonly owner: ConnectionOwner,
    private readonly config: RelayConfig,
    private readonly log: ConnectionLog,
    /** Written to the backend first, once connected (send-proxy's header; bytes read with a front's header). */
    firstBytes?: Buffer,
    /** How many of firstBytes the client sent (counted as its bytes). */
    payloadAhead = 0,
    clientReading = false,
  ) {
    this.bytesFromClient = payloadAhead;
    client.owner = this;
    if (firstBytes || clientReading) {
      this.early = { first: firstBytes, clientReading: false, held: undefined, clientEnd: undefined };
      if (clientReading) this.holdClientReads(this.early);
    }
    this.connectUpstream();
  }

  /** Why it ended, once it has. */
  get endReason(): EndReason {
    return this.reason ?? 'done';
  }

  /** ADDR:PORT of the backend it uses now (a reload may retire it). */
  get backendName(): string {
    return backendName(this.backend.endpoint);
  }

  private connectUpstream(): void {
    const upstream = this.upstream;
    upstream.owner = this;
    const target = this.backend.endpoint;
    this.timer = setTimeout(() => this.guarded(() => this.fail('connect timeout')), this.config.connectTimeoutMs);
    this.lastActivity = performance.now(); // the connect's start, until connected
    upstream.connect(target.address, target.port, target.family, (err) => {
      if (upstream !== this.upstream || this.ending) return; // an attempt already given up on
      if (err) this.fail(connectFailureReason(err.code), err);
      else this.onConnected();
    });
    // Reading is armed with the connect, so the socket enters epoll once for
    // both: armed after it, libuv re-adds a registered fd (EEXIST, then a
    // modify), an epoll_ctl more per connection. Nothing is read before the
    // connect completes (libuv finishes the connect first).
    upstream.readStart(this.forward(upstream, this.client, 'backend'));
  }

  /**
   * Until the upstream connects, a reading client's bytes (rare: a front sends
   * the header and the first request together) are held, and reading paused:
   * at most one chunk waits. Left reading otherwise, so that connecting costs
   * no read stop and start.
   */
  private holdClientReads(early: EarlyBytes): void {
    early.clientReading = true;
    this.client.setReader({
      data: (chunk) => {
        early.held = early.held ? Buffer.concat([early.held, chunk]) : chunk;
        this.client.pauseReading();
        early.clientReading = false;
      },
      end: (err) => {
        early.clientEnd = err ?? 'fin';
        early.clientReading = false;
      },
    });
  }

  /** What the backend gets before the client's next read: send-proxy's header, bytes read with the front's, held bytes. */
  private writeFirstBytes(early: EarlyBytes): void {
    const held = early.held;
    if (held) this.bytesFromClient += held.length;
    const first = early.first && held ? Buffer.concat([early.first, held]) : early.first ?? held;
    if (!first) return;
    // Queued ahead of the client's next bytes (libuv keeps the order of writes).
    this.upstream.write(first, (err) => {
      if (err) this.failed('backend', err);
    });
  }

  /** Start passing the client's bytes on: from where its reads stand. */
  private forwardClient(early: EarlyBytes | undefined): void {
    const handlers = this.forward(this.client, this.upstream, 'client');
    const ended = early?.clientEnd;
    if (ended === 'fin') {
      this.client.setReader(handlers);
      this.finFrom('client', this.upstream);
    } else if (ended) {
      this.failed('client', ended);
    } else if (early?.clientReading) {
      this.client.setReader(handlers);
    } else {
      this.client.readStart(handlers);
    }
  }

  private onConnected(): void {
    clearTimeout(this.timer);
    this.connected = true;
    const now = performance.now();
    this.counters.observeConnect((now - this.lastActivity) / 1000);
    this.lastActivity = now;
    this.owner.connected(this.backend);
    this.upstream.setNoDelay(); // the client has it from the listener
    const early = this.early;
    this.early = undefined;
    if (early) this.writeFirstBytes(early);
    // A plain client has not been read from until now (the kernel held its
    // bytes), so nothing was buffered while the upstream connected.
    this.forwardClient(early);
    if (this.config.idleTimeoutMs > 0) this.armIdleTimer(this.config.idleTimeoutMs);
  }

  /**
   * Pass what from reads on to to. Backpressure: while to has a write queued
   * in user space, from is not read, so relay holds at most one chunk per
   * direction and a slow reader slows the sender through TCP itself.
   */
  private forward(from: TcpHandle, to: TcpHandle, side: 'client' | 'backend'): ReadHandlers {
    return new Direction(this, from, to, side);
  }

  /** A chunk read in direction dir (Direction.data): count it and write it on. */
  chunkRead(dir: Direction, chunk: Buffer): void {
    const { from, to, side } = dir;
    this.lastActivity = performance.now();
    if (side === 'client' && this.bytesFromClient === 0) injectFault('tcp-connection', this.log.clientPort);
    if (side === 'client') {
      this.bytesFromClient += chunk.length;
      this.counters.bytesFromClient += chunk.length;
    } else {
      this.bytesToClient += chunk.length;
      this.counters.bytesToClient += chunk.length;
    }
    // A backend that closes after its reply (HTTP with Connection: close,
    // SMTP's QUIT, ...) must close first through relay too: a client that
    // gets the reply before the FIN closes first and keeps the TIME_WAIT,
    // which fills clients' port ranges. One peek tells whether the FIN is
    // already here; then reply and FIN leave in one segment, and libuv's
    // own read of the FIN never happens.
    if (side === 'backend' && from.peerFinished(chunk.length) && this.lastChunkThenFin(chunk, to, dir.written)) return;
    if (!to.write(chunk, dir.written)) from.pauseReading();
  }

  /** dir's reading side sent its FIN or failed (Direction.end). */
  readEnded(dir: Direction, err?: SysError): void {
    if (err) this.failed(dir.side, err);
    else this.finFrom(dir.side, dir.to);
  }

  /** A write in direction dir went out (or failed): read on from where it came. */
  chunkWritten(dir: Direction, err?: SysError): void {
    if (err) this.failed(dir.side === 'client' ? 'backend' : 'client', err);
    else dir.from.resumeReading();
  }

  /**
   * The backend's FIN follows chunk: hand both to the kernel at once, so they
   * go out in one segment. False when to has writes queued (the chunk then
   * takes the ordinary way and the FIN is read as usual).
   */
  private lastChunkThenFin(chunk: Buffer, to: TcpHandle, written: (err?: SysError) => void): boolean {
    if (to.writesQueued !== 0) return false;
    const sent = to.sendBeforeFin(chunk);
    if (typeof sent !== 'number') {
      this.failed('client', sent);
      return true;
    }
    // The client's window was full: the rest is queued, and the FIN after it.
    if (sent < chunk.length) to.write(chunk.subarray(sent), written);
    this.finFrom('backend', to);
    return true;
  }

  /** side sent its FIN (seen by a peek or by a read): pass it on, once. */
  private finFrom(side: 'client' | 'backend', to: TcpHandle): void {
    const bit = side === 'client' ? FIN_FROM_CLIENT : FIN_FROM_BACKEND;
    if (this.finsSeen & bit) return;
    this.finsSeen |= bit;
    this.passFin(to);
  }

  /** A FIN from one side becomes a FIN to the other; the other direction keeps flowing. */
  private passFin(to: TcpHandle): void {
    // Not while writes to `to` are queued (the last chunk of a reply the
    // peer's window could not take at once): closing would cancel them, and
    // the shutdown below waits for them.
    if (this.finsPassed === 1 && to.writesQueued === 0) {
      // The other direction has finished: both sides are read to the end, so
      // close() sends this FIN itself, a shutdown() fewer per connection.
      // (Closing while the first shutdown is still queued measured slower.)
      this.closeHandles('close', 'close');
      return;
    }
    to.shutdown((err) => {
      if (this.ending) return;
      if (err) this.failed(to === this.client ? 'client' : 'backend', err);
      else if (++this.finsPassed === 2) this.closeHandles('close', 'close');
    });
  }

  /** A read or write on one side failed: that side is gone, so reset the other. */
  private failed(side: 'client' | 'backend', err: SysError): void {
    const reset = err.code === 'ECONNRESET' || err.code === 'EPIPE';
    this.reason ??= side === 'client' ? (reset ? 'client reset' : 'client error') : (reset ? 'backend reset' : 'upstream error');
    this.errorCode ??= err.code;
    this.closeHandles('reset', 'reset');
  }

  private armIdleTimer(ms: number): void {
    this.timer = setTimeout(() => this.guarded(() => {
      // Re-armed lazily rather than pushed back on every chunk: one timer
      // per connection, touched once per idle period.
      const left = this.config.idleTimeoutMs - (performance.now() - this.lastActivity);
      if (left > 0) this.armIdleTimer(left);
      else this.close('idle timeout');
    }), ms);
  }

  /** For timers, which no handle calls: a throw goes to internalError as the handles' do. */
  private guarded(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.internalError(err);
    }
  }

  /**
   * relay's own handling of this connection threw. Only this connection
   * pays: it is logged with the stack, both sides are reset, and everyone
   * else goes on being served.
   */
  internalError(error: unknown): void {
    this.owner.internalError(error, this.log);
    this.reason ??= 'internal error';
    try {
      this.closeHandles('reset', 'reset');
    } catch {
      // Closing itself threw: the fds are closed below all the same.
    }
    this.client.close();
    this.upstream.close();
    this.owner.closed(this);
  }

  /**
   * The upstream never connected: try another backend once; failing that,
   * reset the client so it sees the failure at once.
   */
  private fail(reason: EndReason, err?: SysError): void {
    if (this.ending) return;
    clearTimeout(this.timer);
    const failed = this.backend;
    this.released = true; // connectFailed releases it
    const next = this.owner.connectFailed(failed, err?.code ? `${reason} (${err.code})` : reason, !this.retried, this.log);
    if (next) {
      this.retried = true;
      this.upstream.close(); // the failed attempt: not one of the two sockets this connection counts
      this.upstream = next.upstream;
      this.backend = next.backend;
      this.counters = next.counters;
      this.released = false;
      this.log.warn({ failedBackend: formatEndpoint(failed.endpoint.address, failed.endpoint.port), failure: reason,
        ...(err?.code ? { code: err.code } : {}) }, 'backend connect failed: trying another backend');
      this.connectUpstream();
      return;
    }
    this.reason ??= reason;
    this.errorCode ??= err?.code;
    this.closeHandles('reset', 'close');
  }

  /** End the connection now (idle timeout, shutdown): both sides see a FIN. */
  close(reason: EndReason): void {
    this.reason ??= reason;
    this.closeHandles('close', 'close');
  }

  private closeHandles(client: 'close' | 'reset', upstream: 'close' | 'reset'): void {
    if (this.ending) return;
    this.ending = true;
    clearTimeout(this.timer);
    // libuv closes the fds here and now; only its callbacks would come
    // later, and the connection needs none of them.
    this.client[client]();
    this.upstream[upstream]();
    this.finished();
  }

  private finished(): void {
    if (!this.released) this.owner.release(this.backend);
    this.released = true;
    // The fields are built only for a line that is written (at warn, a
    // connection that ended well writes none).
    const closedWell = this.connected || this.reason === 'shutdown';
    if (this.log.enabled(closedWell ? 'info' : 'warn')) {
      const fields = {
        bytesFromClient: this.bytesFromClient,
        bytesToClient: this.bytesToClient,
        durationMs: Math.round(performance.now() - this.startedAt),
        reason: this.reason ?? 'done',
        ...(this.errorCode ? { code: this.errorCode } : {}),
      };
      if (closedWell) this.log.info(fields, 'connection closed');
      else this.log.warn(fields, 'backend connect failed: client closed');
    }
    this.owner.closed(this);
  }
}

/**
 * One direction of a connection: reads from one socket, writes to the other;
 * the connection does the work. An object with methods, where closures per
 * direction (a context, three closures and a handlers object) cost every
 * idle connection some 450 bytes.
 */
class Direction implements ReadHandlers {
  /** The callback of writes to to: made at the first write (an idle connection makes none). */
  private onWritten: ((err?: SysError) => void) | undefined;

  constructor(
    private readonly connection: ProxiedConnection,
    readonly from: TcpHandle,
    readonly to: TcpHandle,
    /** Who sends in this direction. */
    readonly side: 'client' | 'backend',
  ) {}

  data(chunk: Buffer): void {
    this.connection.chunkRead(this, chunk);
  }

  end(err?: SysError): void {
    this.connection.readEnded(this, err);
  }

  get written(): (err?: SysError) => void {
    this.onWritten ??= (err) => this.connection.chunkWritten(this, err);
    return this.onWritten;
  }
}

/**
 * A connection's bytes for the backend before the client's own, kept apart
 * because only PROXY protocol connections have any: each field on every
 * connection would cost every idle connection its slot.
 */
interface EarlyBytes {
  /** send-proxy's header, bytes read with a front's header. */
  first: Buffer | undefined;
  /** A front's client is already reading (its header was read): what comes before the upstream connects is held. */
  clientReading: boolean;
  held: Buffer | undefined;
  clientEnd: SysError | 'fin' | undefined;
}

const FIN_FROM_CLIENT = 1;
const FIN_FROM_BACKEND = 2;

function connectFailureReason(code: string): EndReason {
  if (code === 'ECONNREFUSED') return 'backend refused';
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH' || code === 'ETIMEDOUT') return 'backend unreachable';
  return 'upstream error';
}

/**
 * Log lines about one connection, carrying its client and backend. Cheaper
 * than a pino child per connection: the context is formatted only when a line
 * is actually written, which at info level is once, when the connection ends.
 */
class ConnectionLog {
  /** Rare context (a front, relay's own source, a mapped source), apart: most connections have none. */
  private origin: ConnectionOrigin | undefined;

  constructor(
    private readonly log: Logger,
    readonly clientAddress: string,
    readonly clientPort: number,
    private backend: Endpoint,
    ownSource = false,
    front?: { address: string; port: number },
  ) {
    if (ownSource || front) this.origin = { ownSource, front, upstreamSource: undefined };
  }

  /** The upstream comes from relay's own address (upstream-source relay, a LOCAL header): retries too. */
  get ownSource(): boolean {
    return this.origin?.ownSource ?? false;
  }

  enabled(level: 'info' | 'warn'): boolean {
    return this.log.isLevelEnabled(level);
  }

  setUpstreamSource(address: string | undefined): void {
    if (address === undefined && !this.origin) return;
    this.origin ??= { ownSource: false, front: undefined, upstreamSource: undefined };
    this.origin.upstreamSource = address;
  }

  /** After a retry, lines name the backend actually used. */
  setBackend(backend: Endpoint): void {
    this.backend = backend;
  }

  /**
   * fields with the connection's listener (proto, listen), client and backend,
   * for a line written elsewhere: a rate-limited one, shared by every listener.
   */
  fields(fields: object): object {
    return { ...this.log.bindings(), ...this.context(fields) };
  }

  private context(fields: object): object {
    return {
      client: formatEndpoint(this.clientAddress, this.clientPort),
      backend: formatEndpoint(this.backend.address, this.backend.port),
      ...(this.origin?.upstreamSource ? { upstreamSource: this.origin.upstreamSource } : {}),
      ...(this.origin?.front ? { front: formatEndpoint(this.origin.front.address, this.origin.front.port) } : {}),
      ...fields,
    };
  }

  info(fields: object, msg: string): void {
    if (this.log.isLevelEnabled('info')) this.log.info(this.context(fields), msg);
  }

  warn(fields: object, msg: string): void {
    if (this.log.isLevelEnabled('warn')) this.log.warn(this.context(fields), msg);
  }

  error(fields: object, msg: string): void {
    if (this.log.isLevelEnabled('error')) this.log.error(this.context(fields), msg);
  }

  debug(fields: object, msg: string): void {
    if (this.log.isLevelEnabled('debug')) this.log.debug(this.context(fields), msg);
  }
}

interface ConnectionOrigin {
  ownSource: boolean;
  /** The front that named this client in a PROXY header. */
  front: { address: string; port: number } | undefined;
  /** The upstream's source when it is not the client's address (--map-ipv4-prefix): logs show both. */
  upstreamSource: string | undefined;
}

/** How often late headers are looked for: a quarter of the timeout, between 10 ms and 1 s. */
function headerSweepMs(timeoutMs: number): number {
  return Math.min(1000, Math.max(10, timeoutMs / 4));
}

/** Where the front's client connected to, as its header says (undefined for LOCAL). */
function headerDestination(header: ProxyHeader): { address: string; port: number } | undefined {
  return header.command === 'proxy' ? header.destination : undefined;
}

/** How this relay's upstream sockets are opened, from the config (again at each reload). */
function upstreamSocketsFor(config: RelayConfig): UpstreamSockets<TcpHandle> {
  return {
    onFamilyMismatch: config.onFamilyMismatch,
    mapIpv4Prefix: config.mapIpv4Prefix,
    bindFrom: (address, port) => openTransparentTcp({ address, port, mark: config.mark }),
    unbound: () => TcpHandle.unbound(),
  };
}
