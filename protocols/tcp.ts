// The TCP data path, for IPv4 and IPv6 alike: accept a client, open an
// upstream socket bound to the client's address, connect it to the backend,
// and splice the two streams with backpressure, half-close and resets passed on.
import * as net from 'node:net';
import type { RelayConfig } from '../src/config';
import type { Logger } from '../src/log';
import { RateLimitedLog } from '../src/log';
import { Endpoint, formatEndpoint, unmapAddress, familyOfAddress } from '../src/addr';
import { connectTransparent } from '../src/sys';
import type { Balancer, WeightedBackend } from '../src/balance';
import type { HealthChecker } from '../src/health';
import { SysError, describeError } from '../src/errors';
import { listenError } from '../src/listen';

export interface TcpStats {
  accepted: number;
  rejectedMaxConns: number;
  rejectedFamilyMismatch: number;
  upstreamFailed: number;
  portFallbacks: number;
  /** Refused at once because no backend was up. */
  rejectedNoBackend: number;
  /** Connects that failed before any data and were tried again on another backend. */
  retried: number;
  closed: number;
}

/** What a connection needs from the relay when its upstream connect fails. */
interface UpstreamSource {
  /**
   * The backend failed before any data: count it against its health, release
   * it, and (when retry is allowed) offer another backend's upstream.
   */
  connectFailed(backend: WeightedBackend, reason: string, retry: boolean, log: ConnectionLog):
    { upstream: net.Socket; backend: WeightedBackend } | undefined;
  /** The connection no longer uses this backend. */
  release(backend: WeightedBackend): void;
  /** The backend accepted the connection (passive health: a success). */
  connected(backend: WeightedBackend): void;
}


/** Why a connection ended, as logged. */
type EndReason =
  | 'done' | 'client reset' | 'backend reset' | 'idle timeout' | 'connect timeout'
  | 'backend refused' | 'backend unreachable' | 'upstream error' | 'client error' | 'shutdown';

export class TcpRelay {
  readonly stats: TcpStats = {
    accepted: 0, rejectedMaxConns: 0, rejectedFamilyMismatch: 0, upstreamFailed: 0, portFallbacks: 0,
    rejectedNoBackend: 0, retried: 0, closed: 0,
  };
  private readonly servers: net.Server[] = [];
  private readonly open = new Set<ProxiedConnection>();
  /** Flushed at shutdown, so counts held back in a window are not lost. */
  private readonly rateLimitedLogs: RateLimitedLog[] = [];
  /** While draining: when to stop waiting for open connections. */
  private drainDeadline = 0;

  constructor(
    private readonly config: RelayConfig,
    private readonly log: Logger,
    private readonly balancer: Balancer,
    private readonly health?: HealthChecker,
  ) {
    this.noBackendLog = new RateLimitedLog(log, 'warn', 'no backend is up: refusing client');
    this.rateLimitedLogs.push(this.noBackendLog);
  }

  private readonly noBackendLog: RateLimitedLog;

  get openConnections(): number {
    return this.open.size;
  }

  async listen(): Promise<void> {
    for (const endpoint of this.config.listeners) {
      this.servers.push(await this.listenOn(endpoint));
    }
  }

  private listenOn(endpoint: Endpoint): Promise<net.Server> {
    const log = this.log.child({ proto: 'tcp', listen: formatEndpoint(endpoint.address, endpoint.port) });
    // pauseOnConnect: read nothing from a client until its upstream is connected.
    const maxConnsLog = new RateLimitedLog(log, 'warn', 'max-conns reached: closing new client');
    this.rateLimitedLogs.push(maxConnsLog);
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) =>
      this.accept(client, log, maxConnsLog));
    return new Promise((resolve, reject) => {
      server.once('error', (err) => reject(listenError(err as NodeJS.ErrnoException, endpoint)));
      // ipv6Only: false lets a [::] listener take IPv4 clients too (as ::ffff:a.b.c.d).
      server.listen({ host: endpoint.address, port: endpoint.port, ipv6Only: false, backlog: 4096 }, () => {
        server.removeAllListeners('error');
        server.on('error', (err) => log.error({ err: describeError(err) }, 'listener error'));
        resolve(server);
      });
    });
  }

  private accept(client: net.Socket, log: Logger, maxConnsLog: RateLimitedLog): void {
    if (this.open.size >= this.config.maxConns) {
      this.stats.rejectedMaxConns++;
      client.destroy();
      maxConnsLog.write({ maxConns: this.config.maxConns, rejected: this.stats.rejectedMaxConns });
      return;
    }
    if (client.remoteAddress === undefined || client.remotePort === undefined) {
      client.destroy(); // the client was gone before we saw it
      return;
    }
    this.stats.accepted++;
    const clientAddress = unmapAddress(client.remoteAddress);
    const clientPort = client.remotePort;
    const backend = this.balancer.pick({ address: clientAddress, family: familyOfAddress(clientAddress) });
    if (!backend) {
      this.stats.rejectedNoBackend++;
      this.noBackendLog.write({ client: formatEndpoint(clientAddress, clientPort), rejected: this.stats.rejectedNoBackend });
      resetSocket(client);
      return;
    }
    this.balancer.onOpen(backend);
    const connLog = new ConnectionLog(log, clientAddress, clientPort, backend.endpoint);
    const upstream = this.openUpstream(clientAddress, clientPort, backend.endpoint, connLog);
    if (!upstream) {
      this.balancer.onClose(backend);
      client.destroy();
      return;
    }
    const source: UpstreamSource = {
      connectFailed: (failed, reason, retry, connLog) =>
        this.connectFailed(failed, reason, retry, clientAddress, clientPort, connLog),
      release: (released) => this.balancer.onClose(released),
      connected: (used) => this.health?.reportSuccess(used.endpoint),
    };
    const conn = new ProxiedConnection(client, upstream, backend, source, this.config, connLog, () => {
      this.open.delete(conn);
      this.stats.closed++;
    });
    this.open.add(conn);
  }

  /**
   * A connect failed before any byte moved (the client is paused until its
   * upstream connects), so the client can be sent elsewhere once, unnoticed.
   */
  private connectFailed(
    failed: WeightedBackend, reason: string, retry: boolean, clientAddress: string, clientPort: number, log: ConnectionLog,
  ): { upstream: net.Socket; backend: WeightedBackend } | undefined {
    this.health?.reportFailure(failed.endpoint, reason);
    this.balancer.onClose(failed);
    if (!retry) return undefined;
    const next = this.balancer.pickOther({ address: clientAddress, family: familyOfAddress(clientAddress) }, failed);
    if (!next) return undefined;
    this.balancer.onOpen(next);
    const upstream = this.openUpstream(clientAddress, clientPort, next.endpoint, log);
    if (!upstream) {
      this.balancer.onClose(next);
      return undefined;
    }
    this.stats.retried++;
    return { upstream, backend: next };
  }

  /** The upstream socket, or undefined when the client must be turned away (already logged). */
  private openUpstream(clientAddress: string, clientPort: number, backend: Endpoint, log: ConnectionLog): net.Socket | undefined {
    if (familyOfAddress(clientAddress) !== backend.family) {
      if (this.config.onFamilyMismatch === 'reject') {
        this.stats.rejectedFamilyMismatch++;
        log.warn({}, "client and backend address families differ, so the client's address cannot be kept: " +
          'closing (--on-family-mismatch reject)');
        return undefined;
      }
      log.debug({}, "family mismatch: connecting from relay's own address (--on-family-mismatch masquerade)");
      return net.connect({ host: backend.address, port: backend.port, allowHalfOpen: true });
    }
    const port = this.config.keepClientPort ? clientPort : 0;
    try {
      return this.connectFrom(clientAddress, port, backend);
    } catch (err) {
      if (port !== 0 && err instanceof SysError && err.code === 'EADDRINUSE') {
        this.stats.portFallbacks++;
        log.warn({ port }, "client's port is in use on this host: connecting from an ephemeral port");
        return this.tryConnectFrom(clientAddress, 0, backend, log);
      }
      this.upstreamFailed(err, log);
      return undefined;
    }
  }

  private tryConnectFrom(address: string, port: number, backend: Endpoint, log: ConnectionLog): net.Socket | undefined {
    try {
      return this.connectFrom(address, port, backend);
    } catch (err) {
      this.upstreamFailed(err, log);
      return undefined;
    }
  }

  private connectFrom(address: string, port: number, backend: Endpoint): net.Socket {
    return connectTransparent({ transport: 'tcp', address, port, mark: this.config.mark }, backend);
  }

  private upstreamFailed(err: unknown, log: ConnectionLog): void {
    this.stats.upstreamFailed++;
    log.error({ err: describeError(err) }, 'cannot open upstream socket: closing client');
  }

  /** Stop accepting, wait up to drainTimeoutMs for open connections, then close the rest. */
  async drain(): Promise<void> {
    // close() stops accepting at once; its callback would wait for every
    // connection to end, which is what the bounded loop below is for.
    this.closeListeners();
    this.drainDeadline = Date.now() + this.config.drainTimeoutMs;
    await this.waitForClose();
    for (const conn of this.open) conn.close('shutdown');
    // 'close' events (and their log lines) follow destroy() asynchronously.
    this.drainDeadline = Date.now() + 1000;
    await this.waitForClose();
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
    for (const server of this.servers) server.close();
  }
}

/**
 * One client and its upstream. Owns both sockets: whatever ends one ends the
 * other, and exactly one log line says why.
 */
class ProxiedConnection {
  private readonly startedAt = Date.now();
  private reason: EndReason | undefined;
  private errorCode: string | undefined;
  private connected = false;
  private connectTimer: NodeJS.Timeout | undefined;
  private socketsOpen = 2;
  /** Whether this.backend has been handed back to the balancer. */
  private released = false;
  private retried = false;

  constructor(
    private readonly client: net.Socket,
    private upstream: net.Socket,
    private backend: WeightedBackend,
    private readonly source: UpstreamSource,
    private readonly config: RelayConfig,
    private readonly log: ConnectionLog,
    private readonly onClosed: () => void,
  ) {
    client.on('error', (err) => this.onClientError(err as NodeJS.ErrnoException));
    client.once('close', () => this.onSocketClosed());
    this.watchUpstream();
  }

  private watchUpstream(): void {
    this.connectTimer = setTimeout(() => this.fail('connect timeout'), this.config.connectTimeoutMs);
    this.upstream.once('connect', () => this.onConnected(this.config.idleTimeoutMs));
    this.upstream.on('error', (err) => this.onUpstreamError(err as NodeJS.ErrnoException));
    this.upstream.once('close', () => this.onSocketClosed());
  }

  private onConnected(idleTimeoutMs: number): void {
    clearTimeout(this.connectTimer);
    this.connected = true;
    this.source.connected(this.backend);
    // pipe() gives backpressure both ways (pause the reader while the writer
    // is full) and passes a FIN on as end(); allowHalfOpen keeps the other
    // direction flowing.
    this.client.pipe(this.upstream);
    this.upstream.pipe(this.client);
    if (idleTimeoutMs > 0) {
      // The client socket sees traffic in both directions (it reads one and
      // writes the other), so one timer covers the connection.
      this.client.setTimeout(idleTimeoutMs, () => this.close('idle timeout'));
    }
  }

  private onUpstreamError(err: NodeJS.ErrnoException): void {
    if (!this.connected) {
      this.fail(err.code === 'ECONNREFUSED' ? 'backend refused'
        : err.code === 'EHOSTUNREACH' || err.code === 'ENETUNREACH' || err.code === 'ETIMEDOUT'
          ? 'backend unreachable' : 'upstream error', err);
      return;
    }
    this.reason ??= err.code === 'ECONNRESET' ? 'backend reset' : 'upstream error';
    this.errorCode ??= err.code;
    resetSocket(this.client);
  }

  private onClientError(err: NodeJS.ErrnoException): void {
    this.reason ??= err.code === 'ECONNRESET' ? 'client reset' : 'client error';
    this.errorCode ??= err.code;
    resetSocket(this.upstream);
  }

  /**
   * The upstream never connected: try another backend once; failing that,
   * reset the client so it sees the failure at once.
   */
  private fail(reason: EndReason, err?: NodeJS.ErrnoException): void {
    clearTimeout(this.connectTimer);
    const failed = this.backend;
    this.released = true; // connectFailed releases it
    const next = this.source.connectFailed(failed, err?.code ? `${reason} (${err.code})` : reason, !this.retried, this.log);
    if (next) {
      this.retried = true;
      this.switchUpstream(next.upstream, next.backend);
      this.log.warn({ failedBackend: formatEndpoint(failed.endpoint.address, failed.endpoint.port), failure: reason,
        ...(err?.code ? { code: err.code } : {}) }, 'backend connect failed: trying another backend');
      return;
    }
    this.reason ??= reason;
    this.errorCode ??= err?.code;
    this.upstream.destroy();
    resetSocket(this.client);
  }

  /** Drop the failed upstream (its events no longer concern us) and watch the new one. */
  private switchUpstream(upstream: net.Socket, backend: WeightedBackend): void {
    const old = this.upstream;
    old.removeAllListeners();
    old.on('error', () => {}); // late errors of a socket we are discarding
    old.destroy();
    this.upstream = upstream;
    this.backend = backend;
    this.released = false;
    this.log.setBackend(backend.endpoint);
    this.watchUpstream();
  }

  close(reason: EndReason): void {
    this.reason ??= reason;
    clearTimeout(this.connectTimer);
    this.client.destroy();
    this.upstream.destroy();
  }

  private onSocketClosed(): void {
    if (--this.socketsOpen > 0) return;
    clearTimeout(this.connectTimer);
    if (!this.released) this.source.release(this.backend);
    this.released = true;
    const fields = {
      bytesFromClient: this.client.bytesRead,
      bytesToClient: this.client.bytesWritten,
      durationMs: Date.now() - this.startedAt,
      reason: this.reason ?? 'done',
      ...(this.errorCode ? { code: this.errorCode } : {}),
    };
    if (this.connected || this.reason === 'shutdown') this.log.info(fields, 'connection closed');
    else this.log.warn(fields, 'backend connect failed: client closed');
    this.onClosed();
  }
}

/**
 * Log lines about one connection, carrying its client and backend. Cheaper
 * than a pino child per connection: the context is formatted only when a line
 * is actually written, which at info level is once, when the connection ends.
 */
class ConnectionLog {
  constructor(
    private readonly log: Logger,
    private readonly clientAddress: string,
    private readonly clientPort: number,
    private backend: Endpoint,
  ) {}

  /** After a retry, lines name the backend actually used. */
  setBackend(backend: Endpoint): void {
    this.backend = backend;
  }

  private context(fields: object): object {
    return {
      client: formatEndpoint(this.clientAddress, this.clientPort),
      backend: formatEndpoint(this.backend.address, this.backend.port),
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

/** Close with RST, so the peer learns the other side was reset rather than finished. */
function resetSocket(socket: net.Socket): void {
  if (socket.destroyed) return;
  try {
    socket.resetAndDestroy();
  } catch {
    socket.destroy();
  }
}
