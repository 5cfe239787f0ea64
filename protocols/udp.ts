// The UDP data path, for IPv4 and IPv6 alike. A session per client
// (address, port, listener address): an upstream socket bound to the client's
// address AND port, connected to the backend. Client datagrams go out through
// it; the backend's replies come back on it and are sent to the client from
// the listener socket, i.e. from the address the client sent to. The listener
// sockets (one per address, following the host's addresses for a wildcard
// --listen) are udp-listeners.ts's; the session table is udp-sessions.ts's.
import type { RelayConfig } from '../src/config';
import type { Logger } from '../src/log';
import { RateLimitedLog, errorWithStack } from '../src/log';
import { Endpoint, formatEndpoint, unmapAddress, familyOfAddress } from '../src/addr';
import { encodeSockaddr, openTransparentUdp, ReceiveBatch, UdpHandle, type DatagramHandlers } from '../src/sys';
import { backendName } from '../src/balance';
import type { Balancer, WeightedBackend } from '../src/balance';
import type { HealthChecker } from '../src/health';
import type { SysError } from '../src/errors';
import { describeError } from '../src/errors';
import { injectFault } from '../src/faults';
import { SessionTable, SessionEnd, sessionKey } from './udp-sessions';
import { ListenerOwner, UdpListener, UdpListeners } from './udp-listeners';
import { openUpstream, UpstreamOutcomes, UpstreamSockets } from './upstream';
import { BackendCounterTable, BackendCounters } from '../src/admin/counters';
import { parseProxyHeader, writeProxyHeader, type ProxyAddress } from '../src/proxy-protocol';
import { acquireRawUdpEngine, releaseRawUdpEngine, type RawUdpEngine } from './udp-raw';
import { trustedSenders } from '../src/proxy-protocol/trust';

export interface UdpStats {
  sessionsOpened: number;
  sessionsEnded: Record<SessionEnd, number>;
  droppedFamilyMismatch: number;
  /** Sessions of IPv4 clients relayed to an IPv6 backend from --map-ipv4-prefix + their address. */
  upstreamsMapped: number;
  upstreamFailed: number;
  portFallbacks: number;
  refused: number;
  droppedNoBackend: number;
  /** Datagrams the kernel would not take (a full send buffer, no route): dropped, as UDP does. */
  sendFailed: number;
  /** Sessions ended because relay's own handling of them threw (logged with the stack). */
  internalErrors: number;
  /** PROXY protocol in: datagrams whose header named a client. */
  proxyHeaders: number;
  /** PROXY protocol in: datagrams with a LOCAL (or UNSPEC) header, relayed from relay's own address. */
  proxyLocal: number;
  /** PROXY protocol in: datagrams from outside proxy-from, dropped. */
  proxyUntrusted: number;
  /** PROXY protocol in: datagrams dropped for their header; by reason in proxyRefusedBy. */
  proxyRefused: number;
}

/** Who a datagram is from, once a front's header (if any) is read. */
interface DatagramOrigin {
  client: ProxyAddress;
  /** The front that sent it with a PROXY header: replies go back to it. */
  front?: ProxyAddress;
  /** Where the client sent it, as the header says. */
  destination?: ProxyAddress;
  /** From relay's own address: upstream-source relay, or a LOCAL header. */
  ownSource: boolean;
}

/** A session's upstream: a socket of its own (socket engine), or a flow of the raw engine (udp-raw.ts). */
type SessionUpstream = Pick<UdpHandle, 'connect' | 'receive' | 'send' | 'close'>;

/** Where a session's upstream reports go: its relay, one object for every session. */
interface SessionEvents {
  fromBackend(session: UdpSession, reply: Buffer): void;
  upstreamError(session: UdpSession, err: SysError): void;
  internalError(session: UdpSession, error: unknown): void;
  /** A datagram toward the backend dropped after it was accepted (the raw engine's batched send). */
  dropped(session: UdpSession): void;
}

/**
 * A session is itself its upstream's handlers (message, error): two closures
 * and an object per session cost ~260 bytes each, a quarter of a raw-engine
 * session (docs/benchmarks.md, udp-scale).
 */
class UdpSession implements DatagramHandlers {
  readonly startedAt = Date.now();
  /** When a reply last refreshed the session in the table. */
  refreshedByReplyAt = this.startedAt;
  /** Where replies go (the client, or the front that named it), encoded once for the session's life. */
  readonly clientSockaddr: Buffer;
  /** send-proxy: the v2 header before each datagram to the backend. */
  sendPrefix?: Buffer;
  /** proxy-reply-header: the v2 header before each reply to the front. */
  replyPrefix?: Buffer;
  errorCode: string | undefined;
  closed = false;
  datagramsFromClient = 0;
  bytesFromClient = 0;
  datagramsToClient = 0;
  bytesToClient = 0;
  /** The upstream's source address when it is not the client's (--map-ipv4-prefix). */
  upstreamSource: string | undefined;
  constructor(
    readonly key: string,
    readonly upstream: SessionUpstream,
    readonly listener: UdpListener,
    readonly clientAddress: string,
    readonly clientPort: number,
    readonly backend: WeightedBackend,
    /** The backend's counters, bumped in place per datagram (no lookup). */
    readonly counters: BackendCounters,
    private readonly events: SessionEvents,
    readonly front?: ProxyAddress,
  ) {
    this.clientSockaddr = encodeSockaddr(front?.address ?? clientAddress, front?.port ?? clientPort);
  }

  /** A reply from the backend. */
  message(reply: Buffer): void {
    try {
      this.events.fromBackend(this, reply);
    } catch (err) {
      this.events.internalError(this, err);
    }
  }

  error(err: SysError): void {
    try {
      this.events.upstreamError(this, err);
    } catch (thrown) {
      this.events.internalError(this, thrown);
    }
  }

  dropped(): void {
    this.events.dropped(this);
  }
}

export class UdpRelay implements ListenerOwner {
  readonly stats: UdpStats = {
    sessionsOpened: 0,
    sessionsEnded: { idle: 0, evicted: 0, responses: 0, refused: 0, error: 0, shutdown: 0, 'address-removed': 0,
      'backend-removed': 0 },
    droppedFamilyMismatch: 0, upstreamsMapped: 0, upstreamFailed: 0, portFallbacks: 0, refused: 0, droppedNoBackend: 0,
    sendFailed: 0, internalErrors: 0, proxyHeaders: 0, proxyLocal: 0, proxyUntrusted: 0, proxyRefused: 0,
  };
  /** Per backend, bumped in place by the sessions (read by /metrics). */
  readonly backends = new BackendCounterTable();
  /** Front datagrams dropped for their header, by why. */
  readonly proxyRefusedBy: Record<string, number> = {};
  private isTrustedFront: (address: string) => boolean;
  private readonly untrustedLog: RateLimitedLog;
  private readonly badHeaderLog: RateLimitedLog;
  private readonly listeners: UdpListeners;
  private readonly sessions: SessionTable<UdpSession>;
  private readonly evictionLog: RateLimitedLog;
  private readonly mismatchLog: RateLimitedLog;
  private readonly failureLog: RateLimitedLog;
  private readonly noBackendLog: RateLimitedLog;
  private readonly portFallbackLog: RateLimitedLog;
  /**
   * How often a reply refreshes its session. Every client datagram looks its
   * session up, which refreshes it; replies only have to keep alive a session
   * that hears from the backend alone, and a touch per tenth of the timeout
   * (at most a second) does that for a fraction of a lookup per datagram.
   */
  private readonly replyRefreshMs: number;
  /** Set while a removed service drains: datagrams of new clients are dropped. */
  private draining = false;
  /** Client datagrams read but not yet sent on, and their sessions (same index). */
  private readonly toBackends: UdpSession[] = [];
  private readonly datagramsToBackends: Buffer[] = [];
  /** Shared by every listener: it copies each datagram out before the next read. */
  private receiveBatch: ReceiveBatch | undefined;
  private upstreamSockets: UpstreamSockets<SessionUpstream>;
  /** The raw engine, when chosen at start (process-wide: a reload cannot change it). */
  private readonly rawEngine: RawUdpEngine | undefined;
  private readonly sessionEvents: SessionEvents = {
    fromBackend: (session, reply) => this.fromBackend(session, reply),
    upstreamError: (session, err) => this.onUpstreamError(session, err),
    internalError: (session, error) => this.internalError(session, error),
    dropped: () => {
      this.stats.sendFailed++;
    },
  };

  constructor(
    private config: RelayConfig,
    private readonly log: Logger,
    private balancer: Balancer,
    private health?: HealthChecker,
  ) {
    this.noBackendLog = new RateLimitedLog(log, 'warn', 'no backend is up: dropping datagram');
    this.evictionLog = new RateLimitedLog(log, 'info', 'session ended (table full: least recently used evicted)');
    this.mismatchLog = new RateLimitedLog(log, 'warn',
      "client and backend address families differ, so the client's address cannot be kept: dropping (--on-family-mismatch reject)");
    this.failureLog = new RateLimitedLog(log, 'error', 'cannot open upstream socket: dropping datagram');
    this.portFallbackLog = new RateLimitedLog(log, 'warn', "client's port is in use on this host: relaying from an ephemeral port");
    this.replyRefreshMs = Math.min(1000, config.sessionTimeoutMs / 10);
    this.sessions = new SessionTable<UdpSession>({
      maxSessions: config.maxSessions,
      idleTimeoutMs: config.sessionTimeoutMs,
      onEnd: (session, reason) => this.onSessionEnd(session, reason),
    });
    this.rawEngine = config.udpEngine === 'raw' ? acquireRawUdpEngine() : undefined;
    this.upstreamSockets = upstreamSocketsFor(config, this.rawEngine);
    this.untrustedLog = new RateLimitedLog(log, 'warn', 'datagram from outside proxy-from: dropped (a PROXY header is trusted from those fronts only)');
    this.badHeaderLog = new RateLimitedLog(log, 'warn', 'datagram without a valid PROXY protocol v2 header: dropped');
    this.isTrustedFront = trustedSenders(config.proxyProtocol?.from ?? []);
    this.listeners = new UdpListeners({ endpoints: config.listeners, reusePort: config.reusePort, log, owner: this });
  }

  get openSessions(): number {
    return this.sessions.size;
  }

  /**
   * A reload: new sessions use this config, balancer and health checker;
   * open ones keep their backend and port until they end. The listeners, the
   * table's size and its idle timeout stay as they were (a restart changes those).
   */
  reconfigure(config: RelayConfig, balancer: Balancer, health?: HealthChecker): void {
    this.config = config;
    this.balancer = balancer;
    this.health = health;
    this.upstreamSockets = upstreamSocketsFor(config, this.rawEngine);
    this.backends.forgetObjects();
    this.isTrustedFront = trustedSenders(config.proxyProtocol?.from ?? []);
  }

  /**
   * Backends a reload removed: their sessions may go on for up to graceMs,
   * then end. Returns how many were open.
   */
  retireBackends(names: ReadonlySet<string>, graceMs: number): number {
    const onRemoved = (session: UdpSession) => names.has(backendName(session.backend.endpoint));
    const count = this.sessions.count(onRemoved);
    if (count > 0) setTimeout(() => this.sessions.endWhere(onRemoved, 'backend-removed'), graceMs).unref();
    return count;
  }

  async listen(): Promise<void> {
    this.listeners.start();
  }

  /** The addresses bound now, e.g. for the start line. */
  get boundAddresses(): string[] {
    return this.listeners.boundAddresses;
  }

  /** A listener was bound (at start, or for an address the host gained): read it. */
  serve(listener: UdpListener): void {
    const socket = listener.socket;
    const fromClient = (datagram: Buffer, clientAddress: string, clientPort: number): void =>
      this.fromClient(listener, datagram, clientAddress, clientPort);
    // Node reads one datagram per callback; what queued behind it is read
    // with one recvmmsg (see ReceiveBatch).
    socket.receive({
      message: (datagram, clientAddress, clientPort) => {
        fromClient(datagram, clientAddress, clientPort);
        (this.receiveBatch ??= new ReceiveBatch()).drain(socket.fd, fromClient);
        this.sendToBackends();
      },
      error: (err) => listener.log.error({ err: describeError(err) }, 'listener error'),
    });
  }

  /** The listener's address left the host: its sessions end now, and their fds with them. */
  retire(listener: UdpListener): void {
    this.sessions.endWhere((session) => session.listener === listener, 'address-removed');
  }

  replyDropped(): void {
    this.stats.sendFailed++;
  }

  private fromClient(listener: UdpListener, datagram: Buffer, fromAddress: string, fromPort: number): void {
    const sender = { address: unmapAddress(fromAddress), port: fromPort };
    if (this.config.proxyProtocol) {
      this.fromFront(listener, datagram, sender);
      return;
    }
    const key = sessionKey(listener.address, listener.port, sender.address, sender.port);
    const session = this.sessions.get(key) ??
      this.openSession(key, listener, { client: sender, ownSource: this.config.upstreamSource === 'relay' });
    if (session) this.queueToBackend(session, datagram);
  }

  /**
   * A datagram from a front (go-mmproxy's format): a trusted sender, a v2
   * header, then the client's payload. Two clients behind one front are two
   * sessions; one client behind two fronts too.
   */
  private fromFront(listener: UdpListener, datagram: Buffer, front: ProxyAddress): void {
    if (!this.isTrustedFront(front.address)) {
      this.stats.proxyUntrusted++;
      this.untrustedLog.write(() => ({ ...listener.log.bindings(), front: formatEndpoint(front.address, front.port),
        untrusted: this.stats.proxyUntrusted }));
      return;
    }
    const parsed = parseProxyHeader(datagram, 'v2');
    const why = parsed.status === 'incomplete' ? 'truncated' : parsed.status === 'invalid' ? parsed.problem
      : parsed.header.command === 'proxy' && parsed.header.transport !== 'dgram' ? 'wrong-transport' : undefined;
    if (why !== undefined || parsed.status !== 'ok') {
      this.refuseHeader(listener, front, why ?? 'truncated');
      return;
    }
    const header = parsed.header;
    const origin: DatagramOrigin = header.command === 'local'
      ? { client: front, front, ownSource: true }
      : { client: header.source, front, destination: header.destination, ownSource: this.config.upstreamSource === 'relay' };
    if (header.command === 'local') this.stats.proxyLocal++;
    else this.stats.proxyHeaders++;
    const key = `${sessionKey(listener.address, listener.port, origin.client.address, origin.client.port)}|${front.address}|${front.port}`;
    const session = this.sessions.get(key) ?? this.openSession(key, listener, origin);
    if (session) this.queueToBackend(session, datagram.subarray(parsed.length));
  }

  private refuseHeader(listener: UdpListener, front: ProxyAddress, why: string): void {
    this.stats.proxyRefused++;
    this.proxyRefusedBy[why] = (this.proxyRefusedBy[why] ?? 0) + 1;
    this.badHeaderLog.write(() => ({ ...listener.log.bindings(), front: formatEndpoint(front.address, front.port), why,
      refused: this.stats.proxyRefused }));
  }

  private queueToBackend(session: UdpSession, payload: Buffer): void {
    session.datagramsFromClient++;
    session.bytesFromClient += payload.length;
    session.counters.datagramsFromClient++;
    session.counters.bytesFromClient += payload.length;
    this.toBackends.push(session);
    this.datagramsToBackends.push(session.sendPrefix ? Buffer.concat([session.sendPrefix, payload]) : payload);
  }

  /**
   * Send what a listener's batch of client datagrams brought, back to back.
   * Sent one by one between opening sessions, each datagram tends to wake the
   * backend anew; sent together, one wake-up serves them all.
   */
  private sendToBackends(): void {
    const sessions = this.toBackends;
    const datagrams = this.datagramsToBackends;
    for (let i = 0; i < sessions.length; i++) {
      if (!sessions[i].closed && !sessions[i].upstream.send(datagrams[i])) this.stats.sendFailed++;
    }
    sessions.length = 0;
    datagrams.length = 0;
  }

  private openSession(key: string, listener: UdpListener, origin: DatagramOrigin): UdpSession | undefined {
    const { address: clientAddress, port: clientPort } = origin.client;
    if (this.draining) return undefined; // a removed service: its sessions finish, no new ones start
    // A session stays on its backend for life; source and maglev bring the
    // client back to the same backend after its session ended.
    const backend = this.balancer.pick({ address: clientAddress, family: familyOfAddress(clientAddress) });
    if (!backend) {
      this.stats.droppedNoBackend++;
      this.noBackendLog.write({ client: formatEndpoint(clientAddress, clientPort), dropped: this.stats.droppedNoBackend });
      return undefined;
    }
    let mappedFrom: string | undefined;
    const upstream = origin.ownSource ? this.upstreamSockets.unbound(backend.endpoint.family)
      : this.openUpstream(clientAddress, clientPort, backend.endpoint, (source) => { mappedFrom = source; });
    if (!upstream) return undefined;
    this.balancer.onOpen(backend);
    const counters = this.backends.of(backend);
    counters.opened++;
    const session = new UdpSession(key, upstream, listener, clientAddress, clientPort, backend, counters,
      this.sessionEvents, origin.front);
    session.upstreamSource = mappedFrom;
    const destination = origin.destination ?? { address: listener.address, port: listener.port };
    if (this.config.sendProxy) session.sendPrefix = writeProxyHeader('v2', 'dgram', origin.client, destination);
    // A reply goes from the address the client sent to, to the client.
    if (origin.front && this.config.proxyProtocol?.replyHeader) {
      session.replyPrefix = writeProxyHeader('v2', 'dgram', destination, origin.client);
    }
    this.stats.sessionsOpened++;
    this.sessions.add(key, session);
    try {
      upstream.connect(backend.endpoint.address, backend.endpoint.port);
    } catch (err) {
      // ENETUNREACH and the like: no route to the backend. The session ends, logged with the code.
      this.onUpstreamError(session, err as SysError);
      return undefined;
    }
    upstream.receive(session);
    return session;
  }

  /** A socket from the client's address and port, or undefined (logged) when there can be none. */
  private openUpstream(clientAddress: string, clientPort: number, backend: Endpoint,
    onMapped: (source: string) => void): SessionUpstream | undefined {
    let upstreamSource: string | undefined;
    // Built only for a line that is written: most sessions open without one.
    const ends = () => ({
      client: formatEndpoint(clientAddress, clientPort), backend: formatEndpoint(backend.address, backend.port),
      ...(upstreamSource ? { upstreamSource } : {}),
    });
    const outcomes: UpstreamOutcomes = {
      mapped: (source) => {
        this.stats.upstreamsMapped++;
        upstreamSource = source;
        onMapped(source);
      },
      rejectedMismatch: () => {
        this.stats.droppedFamilyMismatch++;
        this.mismatchLog.write(() => ({ ...ends(), dropped: this.stats.droppedFamilyMismatch }));
      },
      portInUse: () => {
        this.stats.portFallbacks++;
        this.portFallbackLog.write(() => ({ ...ends(), portFallbacks: this.stats.portFallbacks }));
      },
      failed: (err) => {
        this.stats.upstreamFailed++;
        this.failureLog.write(() => ({ ...ends(), err: describeError(err), failures: this.stats.upstreamFailed }));
      },
    };
    return openUpstream(this.upstreamSockets, outcomes, { address: clientAddress, port: clientPort }, backend);
  }


  private fromBackend(session: UdpSession, reply: Buffer): void {
    if (session.closed) return;
    const now = Date.now();
    if (now - session.refreshedByReplyAt >= this.replyRefreshMs) {
      // get() refreshes the session's idle timer and recency: replies count as traffic too.
      if (this.sessions.get(session.key) !== session) return;
      session.refreshedByReplyAt = now;
    }
    if (session.datagramsToClient === 0) {
      injectFault('udp-session', session.clientPort);
      this.health?.reportSuccess(session.backend.endpoint);
    }
    session.datagramsToClient++;
    session.bytesToClient += reply.length;
    session.counters.datagramsToClient++;
    session.counters.bytesToClient += reply.length;
    session.listener.replies.add(session.replyPrefix ? Buffer.concat([session.replyPrefix, reply]) : reply, session.clientSockaddr);
    // Like nginx's proxy_responses: N replies expected per client datagram, so
    // two queries in flight on one port (a resolver's A and AAAA) both get answers.
    if (this.config.udpResponses > 0 &&
        session.datagramsToClient >= session.datagramsFromClient * this.config.udpResponses) {
      this.sessions.end(session.key, 'responses');
    }
  }

  private onUpstreamError(session: UdpSession, err: SysError): void {
    // ICMP port unreachable from the backend arrives as ECONNREFUSED on the
    // connected socket: the backend is not listening. End the session.
    if (err.code === 'ECONNREFUSED') this.stats.refused++;
    // Passive health: the backend is not listening, or not reachable.
    this.health?.reportFailure(session.backend.endpoint, `udp ${err.code}`);
    session.errorCode ??= err.code;
    if (this.sessions.get(session.key) === session) {
      this.sessions.end(session.key, err.code === 'ECONNREFUSED' ? 'refused' : 'error');
    }
  }

  /**
   * relay's own handling of this session threw. Only this session pays: it
   * is logged with the stack and ended; everyone else goes on being served.
   */
  private internalError(session: UdpSession, error: unknown): void {
    this.stats.internalErrors++;
    session.listener.log.error({
      client: formatEndpoint(session.clientAddress, session.clientPort),
      backend: formatEndpoint(session.backend.endpoint.address, session.backend.endpoint.port),
      ...(session.upstreamSource ? { upstreamSource: session.upstreamSource } : {}),
      err: errorWithStack(error), internalErrors: this.stats.internalErrors,
    }, 'internal error: session closed');
    session.errorCode ??= 'internal error';
    try {
      if (this.sessions.get(session.key) === session) this.sessions.end(session.key, 'error');
    } catch {
      // Ending it threw too: its socket is closed below all the same.
    }
    session.closed = true;
    session.upstream.close();
  }

  private onSessionEnd(session: UdpSession, reason: SessionEnd): void {
    // A session can end with datagrams still queued for its backend (a new
    // client in the same batch evicted it from a small table): send them first.
    if (this.toBackends.length > 0) this.sendToBackends();
    session.closed = true;
    session.upstream.close();
    this.balancer.onClose(session.backend);
    session.counters.closed++;
    this.stats.sessionsEnded[reason]++;
    // The fields are built only for a line that is written: with one reply
    // per session (DNS) this runs for every request, and at warn it is silent.
    if (reason === 'evicted') {
      // Evictions come in floods (a full table under load): a few lines, with counts.
      this.evictionLog.write(() => ({ ...sessionFields(session, reason), evicted: this.stats.sessionsEnded.evicted }));
    } else if (session.listener.log.isLevelEnabled('info')) {
      session.listener.log.info(sessionFields(session, reason), 'session ended');
    }
  }


  /**
   * A service a reload removed: no new sessions; open ones keep their
   * listener (their replies leave through it) until they end or graceMs has
   * passed; then everything closes.
   */
  async drain(graceMs: number): Promise<void> {
    this.draining = true;
    const deadline = Date.now() + graceMs;
    while (this.sessions.size > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, Math.min(100, Math.max(1, deadline - Date.now()))));
    }
    this.close();
  }

  /** Close every session and listener. At shutdown UDP has nothing to drain. */
  close(): void {
    this.listeners.close();
    this.sessions.clear('shutdown');
    if (this.rawEngine) releaseRawUdpEngine();
    for (const limited of [this.evictionLog, this.mismatchLog, this.failureLog, this.noBackendLog, this.portFallbackLog,
      this.untrustedLog, this.badHeaderLog]) {
      limited.flush();
    }
  }
}

/** What a session's end line says about it. */
function sessionFields(session: UdpSession, reason: SessionEnd): object {
  return {
    client: formatEndpoint(session.clientAddress, session.clientPort),
    backend: formatEndpoint(session.backend.endpoint.address, session.backend.endpoint.port),
    ...(session.upstreamSource ? { upstreamSource: session.upstreamSource } : {}),
    ...(session.front ? { front: formatEndpoint(session.front.address, session.front.port) } : {}),
    datagramsFromClient: session.datagramsFromClient,
    bytesFromClient: session.bytesFromClient,
    datagramsToClient: session.datagramsToClient,
    bytesToClient: session.bytesToClient,
    durationMs: Date.now() - session.startedAt,
    reason,
    ...(session.errorCode ? { code: session.errorCode } : {}),
  };
}

/** How this relay's upstreams are opened, from the config (again at each reload). */
function upstreamSocketsFor(config: RelayConfig, rawEngine: RawUdpEngine | undefined): UpstreamSockets<SessionUpstream> {
  return {
    onFamilyMismatch: config.onFamilyMismatch,
    mapIpv4Prefix: config.mapIpv4Prefix,
    bindFrom: rawEngine ? (address, port) => rawEngine.flowFrom(address, port)
      : (address, port) => openTransparentUdp({ address, port, mark: config.mark }),
    unbound: (family) => UdpHandle.unbound(family),
  };
}
