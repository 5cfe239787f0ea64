// The raw UDP engine (--udp-engine raw): a session is a table entry, not a
// socket. One raw socket per family sends every session's datagrams from the
// client's address and port (src/sys/raw-udp.ts); the backends' replies are
// steered by relay's nftables table (conntrack mark RAW_ENGINE_MARK, set on
// what the raw socket sends) onto one receive socket per family, and handed to
// the session that owns the client address and port they were sent to.
//
// A RawFlow looks to the UDP data path like a session's upstream socket
// (bound, connected, send, receive, close), so everything else (the session
// table, balancing, health, PROXY protocol, IPv4 mapping) is the socket
// engine's own code.
import type { Family } from '../src/sys';
import { RawUdpSender, TproxyReceiver, endpointKey, rawDestination, type EndpointKey, type RawDestination, type RawSource,
  type SendFailure, type UdpAddress } from '../src/sys/raw-udp';
import { ipv6Bytes } from '../src/sys/sockaddr';
import { familyOfAddress } from '../src/addr';
import { SysError } from '../src/errors';
import type { DatagramHandlers } from '../src/sys';
import { RAW_ENGINE_SLOTS, rawEngineSlot } from '../src/udp-engine';

const EADDRINUSE = -98;
/** EAGAIN, ENOBUFS: the send buffer or a queue is full. The datagram is dropped; the session goes on. */
const TRANSIENT_SEND_ERRORS = new Set([-11, -105]);
/** Ports a flow without the client's (its port taken) picks from: the default ephemeral range. */
const FALLBACK_PORTS = { first: 32_768, count: 28_232 };
/** Backends kept encoded for flows to share; past this many (reloads removed some), the cache starts again. */
const MAX_SHARED_BACKENDS = 4_096;

/** A backend as every flow to it shares it: its address, encoded once, its key and its family's sender. */
interface SharedBackend extends RawDestination {
  readonly address: string;
  readonly key: EndpointKey;
  readonly sender: RawUdpSender;
}

/**
 * A session's upstream through the raw engine. It is itself what the sender
 * writes as the source of each datagram (RawSource) and what it tells of a
 * refused one (SendFailure): objects and closures of its own would cost a
 * session ~200 bytes (docs/benchmarks.md, udp-scale).
 */
export class RawFlow implements RawSource, SendFailure {
  /** The client's IPv4 address as a number (0 for IPv6). */
  readonly source4: number;
  /** The client's IPv6 address, 16 bytes (undefined for IPv4). */
  readonly source6: Buffer | undefined;
  private backend: SharedBackend | undefined;
  private handlers: DatagramHandlers | undefined;
  private closed = false;

  constructor(private readonly engine: RawUdpEngine, readonly address: string, readonly port: number, readonly family: Family,
    /** endpointKey of the client's address and port: the engine's key for this flow. */
    readonly key: EndpointKey) {
    // An IPv4 key is address * 65,536 + port (endpointKey): the address is parsed once, there.
    this.source4 = typeof key === 'number' ? Math.floor(key / 65_536) : 0;
    this.source6 = typeof key === 'number' ? undefined : ipv6Bytes(address);
  }

  connect(address: string, port: number): void {
    this.backend = this.engine.sharedBackend(address, port, this.family);
  }

  receive(handlers: DatagramHandlers): void {
    this.handlers = handlers;
  }

  /**
   * Queue the datagram: it leaves with the others queued in this turn of the
   * event loop (one sendmmsg per family). false: the flow cannot send. A
   * datagram the kernel refuses is dropped, as UDP may, and reported to
   * handlers.dropped; anything but a full buffer (no route to the backend) is
   * also the error a socket's connect would have thrown: the session hears of
   * it once the batch is sent.
   */
  send(datagram: Buffer): boolean {
    if (this.closed || !this.backend) return false;
    this.backend.sender.queue(this, this.backend, datagram, this);
    return true;
  }

  sendRefused(errno: number): void {
    this.handlers?.dropped?.();
    if (TRANSIENT_SEND_ERRORS.has(errno) || !this.backend) return;
    const err = new SysError({ errno, syscall: 'sendmmsg', address: this.backend.address, port: this.backend.port });
    // Not from inside the batch's flush: the session's end may send what its queue holds.
    queueMicrotask(() => {
      if (!this.closed) this.handlers?.error(err);
    });
  }

  /** An ICMP error about a datagram of this flow (port unreachable: ECONNREFUSED), as a connected socket reports it. */
  failed(backend: UdpAddress, errno: number): void {
    if (this.closed || !this.backend || backend.address !== this.backend.address || backend.port !== this.backend.port) return;
    this.handlers?.error(new SysError({ errno, syscall: 'recv', address: backend.address, port: backend.port }));
  }

  /** A reply for this flow's client address and port: from its backend only (from: its endpointKey). */
  deliver(datagram: Buffer, from: EndpointKey): void {
    if (this.closed || !this.backend || from !== this.backend.key) return;
    this.handlers?.message(datagram, this.backend.address, this.backend.port);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.engine.release(this);
  }
}

/**
 * The process's raw engine: its sockets open at start and stay for the
 * process's life (a handful of fds, whatever the number of sessions). It takes
 * the first free slot (src/udp-engine.ts): its receive port, and the mark that
 * brings its flows' replies there, so several relays (workers) share a host.
 */
export class RawUdpEngine {
  /** Client address and port (endpointKey) -> its flow: one flow per address and port, as one socket per bound address would be. */
  private readonly flows = new Map<EndpointKey, RawFlow>();
  private readonly senders = new Map<Family, RawUdpSender>();
  private readonly receivers = new Map<Family, TproxyReceiver>();
  private readonly backends = new Map<EndpointKey, SharedBackend>();
  private nextFallback = 0;
  readonly slot: number;
  readonly mark: number;
  readonly port: number;

  constructor() {
    let lastError: unknown;
    for (let slot = 0; slot < RAW_ENGINE_SLOTS; slot++) {
      try {
        this.openReceivers(rawEngineSlot(slot).port);
        ({ mark: this.mark, port: this.port } = rawEngineSlot(slot));
        this.slot = slot;
        // Both families' raw sockets now: the engine's fds never change after start.
        for (const family of this.receivers.keys()) this.sender(family);
        return;
      } catch (err) {
        this.closeReceivers();
        if (!(err instanceof SysError) || err.code !== 'EADDRINUSE') throw err;
        lastError = err;
      }
    }
    throw new SysError({ errno: EADDRINUSE, syscall: 'bind (raw engine receive port)', address: '0.0.0.0',
      port: rawEngineSlot(RAW_ENGINE_SLOTS - 1).port,
      hint: `every raw-engine slot's port is taken (${RAW_ENGINE_SLOTS} relays at once?): ${(lastError as Error)?.message}` });
  }

  /** A flow from address:port (port 0: a free port of the ephemeral range). Throws SysError EADDRINUSE when taken. */
  flowFrom(address: string, port: number): RawFlow {
    const family = familyOfAddress(address);
    const chosen = port === 0 ? this.freePort(address) : port;
    const key = endpointKey(address, chosen);
    if (this.flows.has(key)) throw new SysError({ errno: EADDRINUSE, syscall: 'bind (raw engine)', address, port });
    const flow = new RawFlow(this, address, chosen, family, key);
    this.flows.set(key, flow);
    return flow;
  }

  sender(family: Family): RawUdpSender {
    let sender = this.senders.get(family);
    if (!sender) {
      sender = new RawUdpSender(family, { mark: this.mark });
      this.senders.set(family, sender);
      sender.watchErrors((client, backend, errno) => this.flows.get(endpointKey(client.address, client.port))?.failed(backend, errno));
    }
    return sender;
  }

  /** The backend at address:port as its flows share it (made once, never modified). */
  sharedBackend(address: string, port: number, family: Family): SharedBackend {
    const key = endpointKey(address, port);
    let backend = this.backends.get(key);
    if (!backend) {
      if (this.backends.size >= MAX_SHARED_BACKENDS) this.backends.clear();
      backend = Object.freeze({ ...rawDestination(address, port), address, key, sender: this.sender(family) });
      this.backends.set(key, backend);
    }
    return backend;
  }

  release(flow: RawFlow): void {
    const key = flow.key;
    if (this.flows.get(key) === flow) this.flows.delete(key);
  }

  get openFlows(): number {
    return this.flows.size;
  }

  close(): void {
    this.closeReceivers();
    for (const sender of this.senders.values()) sender.close();
    this.senders.clear();
    this.flows.clear();
    this.backends.clear();
  }

  /** Both families' receive sockets on port; a family this host lacks (no IPv6) is left out. */
  private openReceivers(port: number): void {
    for (const family of [4, 6] as const) {
      const local = { address: family === 4 ? '0.0.0.0' : '::', port };
      let receiver: TproxyReceiver;
      try {
        receiver = new TproxyReceiver(local, (datagram, from, to) => this.flows.get(to)?.deliver(datagram, from));
      } catch (err) {
        if (family === 6 && err instanceof SysError && err.code === 'EAFNOSUPPORT') continue;
        throw err;
      }
      this.receivers.set(family, receiver);
      receiver.start();
    }
  }

  private closeReceivers(): void {
    for (const receiver of this.receivers.values()) receiver.close();
    this.receivers.clear();
  }

  private freePort(address: string): number {
    for (let i = 0; i < FALLBACK_PORTS.count; i++) {
      const port = FALLBACK_PORTS.first + ((this.nextFallback++) % FALLBACK_PORTS.count);
      if (!this.flows.has(endpointKey(address, port))) return port;
    }
    throw new SysError({ errno: EADDRINUSE, syscall: 'bind (raw engine)', address, port: 0 });
  }
}

let engine: RawUdpEngine | undefined;
let users = 0;

/**
 * The process's raw engine, for one more user (a UDP service): one engine
 * serves every service, as its receive port and mark are the process's.
 */
export function acquireRawUdpEngine(): RawUdpEngine {
  users++;
  return (engine ??= new RawUdpEngine());
}

/** A user is done; the last one closes the engine's sockets (their receive loops end with them). */
export function releaseRawUdpEngine(): void {
  users = Math.max(0, users - 1);
  if (users === 0) {
    engine?.close();
    engine = undefined;
  }
}
