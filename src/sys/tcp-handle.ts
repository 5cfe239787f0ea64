// Node's own libuv TCP handles, driven without net.Socket. src/sys/ is the
// only place relay reaches below Node's public API: here, udp-handle.ts and
// node-binding.ts (Node's internal handles), and libc.ts (koffi).
//
// Why: a proxied connection is two sockets that each see a few small reads, a
// FIN and a close. net.Socket wraps every one of those in stream machinery
// (Duplex state, event emitters, nextTicks, pipe bookkeeping) that cost about
// 100 µs of CPU per proxied connection in the bench lab, more than the kernel's
// own work; through these handles relay's connection rate about doubled
// (docs/benchmarks.md). They are the objects net.js itself is built on
// (process.binding's allow-listed 'tcp_wrap' and 'stream_wrap'), so relay
// checks their shape once, at first use, and fails with one clear line if a
// Node.js release ever changes it (node-binding.ts).
import { SysError } from '../errors';
import type { Family } from './sockaddr';
import { missingBindingError, missingMethods, processBinding } from './node-binding';
import { libc } from './libc';
import * as C from './constants';

/** libuv's end-of-stream status (UV_EOF). */
const UV_EOF = -4095;
/** libuv's "not connected" (UV_ENOTCONN): a shutdown of a socket the peer already reset. */
const UV_ENOTCONN = -107;
/** libuv's uv_tcp_flags: bind6 sets IPV6_V6ONLY (uv.h). */
const UV_TCP_IPV6ONLY = 1;

interface RawStatusRequest {
  handle?: RawTcp;
  /** The handle whose owner a throw in done goes to. */
  tcp?: TcpHandle;
  buffer?: Buffer;
  /** Called by libuv with this = the request. */
  oncomplete: (this: RawStatusRequest, status: number) => void;
  /** For requests whose oncomplete is shared: what to tell when done. */
  done?: (error?: SysError) => void;
}

interface RawTcp {
  open(fd: number): number;
  bind(address: string, port: number): number;
  bind6(address: string, port: number, flags: number): number;
  listen(backlog: number): number;
  connect(req: RawStatusRequest, address: string, port: number): number;
  connect6(req: RawStatusRequest, address: string, port: number): number;
  getpeername(out: { address?: string; port?: number }): number;
  getsockname(out: { address?: string; port?: number }): number;
  setNoDelay(on: boolean): number;
  readStart(): number;
  readStop(): number;
  /** The socket's fd (-1 once closed). */
  readonly fd: number;
  writeBuffer(req: RawStatusRequest, data: Buffer): number;
  shutdown(req: RawStatusRequest): number;
  reset(onClosed?: () => void): number;
  close(onClosed?: () => void): void;
  /** An accessor in C++ that aborts the process unless given a function: never null. */
  onread: (this: RawTcp, chunk?: ArrayBuffer) => void;
  /** Ours: the handle that wraps this socket, for the one shared onread (onRead). */
  relayHandle?: TcpHandle;
  onconnection: (status: number, client?: RawTcp) => void;
}

interface Bindings {
  TCP: new (type: number) => RawTcp;
  TCPConnectWrap: new () => RawStatusRequest;
  WriteWrap: new () => RawStatusRequest;
  ShutdownWrap: new () => RawStatusRequest;
  socketType: number;
  serverType: number;
  /** Shared with C++: a read's byte count or error, the chunk's offset, whether the last write went async. */
  state: Int32Array;
  kReadBytesOrError: number;
  kArrayBufferOffset: number;
  kLastWriteWasAsync: number;
}

let loaded: Bindings | undefined;

function bindings(): Bindings {
  loaded ??= loadBindings();
  return loaded;
}

function loadBindings(): Bindings {
  const tcp = processBinding('tcp_wrap');
  const stream = processBinding('stream_wrap');
  const constants = tcp.constants as { SOCKET?: number; SERVER?: number } | undefined;
  const found: Partial<Bindings> = {
    TCP: tcp.TCP as Bindings['TCP'],
    TCPConnectWrap: tcp.TCPConnectWrap as Bindings['TCPConnectWrap'],
    WriteWrap: stream.WriteWrap as Bindings['WriteWrap'],
    ShutdownWrap: stream.ShutdownWrap as Bindings['ShutdownWrap'],
    socketType: constants?.SOCKET,
    serverType: constants?.SERVER,
    state: stream.streamBaseState as Int32Array,
    kReadBytesOrError: stream.kReadBytesOrError as number,
    kArrayBufferOffset: stream.kArrayBufferOffset as number,
    kLastWriteWasAsync: stream.kLastWriteWasAsync as number,
  };
  const missing = Object.entries(found).filter(([, value]) => value === undefined).map(([key]) => key);
  missing.push(...missingMethods(found.TCP, 'TCP', ['open', 'bind', 'bind6', 'listen', 'connect', 'connect6',
    'getpeername', 'setNoDelay', 'readStart', 'readStop', 'writeBuffer', 'shutdown', 'reset', 'close']));
  // An accessor, not a method: reset() needs it while a shutdown is pending.
  if (!(found.TCP && 'fd' in found.TCP.prototype)) missing.push('TCP.fd');
  if (missing.length > 0) throw missingBindingError('TCP handle', missing);
  return found as Bindings;
}

function ignoreRead(): void {}

/**
 * The onread of every reading socket (Node calls it with this = the raw
 * socket): one function for all, where a closure per socket cost each idle
 * connection two closures and their contexts (some 230 bytes).
 */
function onRead(this: RawTcp, chunk?: ArrayBuffer): void {
  const handle = this.relayHandle;
  const reader = handle?.reader;
  if (!reader) return;
  const b = bindings();
  const nread = b.state[b.kReadBytesOrError];
  try {
    if (nread > 0 && chunk) {
      reader.data(Buffer.from(chunk, b.state[b.kArrayBufferOffset], nread));
    } else if (nread < 0) {
      reader.end(nread === UV_EOF ? undefined : failure(nread, 'read'));
    }
  } catch (err) {
    handle.fault(err);
  }
}

/** What libuv asks Node to allocate for each read: a read that fills it is not the last before a FIN. */
const READ_BUFFER_BYTES = 64 * 1024;

/** Where a peek's byte goes (never read: only the count matters). */
const PEEK_BUFFER = Buffer.alloc(1);

/** struct linger { l_onoff = 1, l_linger = 0 }: close() then sends an RST and drops what is unsent. */
const LINGER_ZERO = Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]);

/** One function for every write request (no closure per write): the request carries its own callback. */
function afterWrite(this: RawStatusRequest, status: number): void {
  const tcp = this.tcp!;
  tcp.writesQueued--;
  if (this.done) tcp.complete(this.done, status < 0 ? failure(status, 'write') : undefined);
}
function ignoreConnection(): void {}

/** A failed status from libuv (a negative errno) as a SysError. */
function failure(status: number, syscall: string, address?: string, port?: number): SysError {
  return new SysError({ errno: status, syscall, address, port });
}

/**
 * Whoever a handle's callbacks serve (a proxied connection). A throw inside
 * any of them goes to internalError, so one connection's failure stays its
 * own; a handle without an owner lets the throw go on up.
 */
export interface FaultOwner {
  internalError(error: unknown): void;
}

export interface ReadHandlers {
  /** A chunk arrived (a buffer of its own: the caller may keep it). */
  data(chunk: Buffer): void;
  /** The peer sent a FIN (no error) or the read failed. Reading has stopped either way. */
  end(error?: SysError): void;
}

/**
 * One TCP socket. Every call is the libuv call underneath with its status
 * turned into a SysError; nothing is buffered here, so backpressure is the
 * caller's: write() says whether the kernel took the whole chunk at once.
 */
export class TcpHandle {
  private closed = false;
  /** Whom reads go to (through onRead); undefined once closed. */
  reader: ReadHandlers | undefined;
  /** A shutdown request libuv has not completed: uv_tcp_close_reset refuses to run meanwhile. */
  private shutdownPending = false;
  /** Where a throw in one of this handle's callbacks goes. */
  owner: FaultOwner | undefined;
  /** Writes libuv still holds (the kernel did not take them at once). */
  writesQueued = 0;

  private constructor(private readonly raw: RawTcp) {
    raw.relayHandle = this;
  }

  /** Adopt a socket made elsewhere (a transparent one from openTransparentFd). */
  static adopt(fd: number): TcpHandle {
    const b = bindings();
    const raw = new b.TCP(b.socketType);
    const status = raw.open(fd);
    if (status < 0) {
      raw.close();
      throw failure(status, 'open');
    }
    return new TcpHandle(raw);
  }

  /** A socket with no address yet: connect() makes it from the host's own address. */
  static unbound(): TcpHandle {
    const b = bindings();
    return new TcpHandle(new b.TCP(b.socketType));
  }

  /** Wraps a socket the listener accepted. */
  static accepted(raw: RawTcp): TcpHandle {
    return new TcpHandle(raw);
  }

  /** The peer's address and port, or undefined when the socket is already gone. */
  peer(): { address: string; port: number } | undefined {
    const out: { address?: string; port?: number } = {};
    if (this.raw.getpeername(out) < 0 || out.address === undefined || out.port === undefined) return undefined;
    return { address: out.address, port: out.port };
  }

  /** The socket's own address and port (where an accepted client connected to), or undefined once gone. */
  local(): { address: string; port: number } | undefined {
    const out: { address?: string; port?: number } = {};
    if (this.raw.getsockname(out) < 0 || out.address === undefined || out.port === undefined) return undefined;
    return { address: out.address, port: out.port };
  }

  /**
   * Send small writes at once: a proxy must not add Nagle's delay to its
   * peers' exchanges. (Accepted clients have it from their listener.)
   */
  setNoDelay(): void {
    this.raw.setNoDelay(true);
  }

  /** Connect; done runs once, with the failure if there is one (a synchronous one too, on a later tick). */
  connect(address: string, port: number, family: Family, done: (error?: SysError) => void): void {
    const req = new (bindings().TCPConnectWrap)();
    req.oncomplete = (status) => this.complete(done, status < 0 ? failure(status, 'connect', address, port) : undefined);
    const status = family === 4 ? this.raw.connect(req, address, port) : this.raw.connect6(req, address, port);
    if (status < 0) queueMicrotask(() => this.complete(done, failure(status, 'connect', address, port)));
  }

  /** Run a completion callback; a throw in it goes to the owner. */
  complete(done: (error?: SysError) => void, error?: SysError): void {
    try {
      done(error);
    } catch (err) {
      this.fault(err);
    }
  }

  /** A throw in one of this handle's callbacks: to the owner, or on up without one. */
  fault(err: unknown): void {
    if (!this.owner) throw err;
    this.owner.internalError(err);
  }

  readStart(handlers: ReadHandlers): void {
    this.setReader(handlers);
    this.resumeReading();
  }

  /**
   * Give reads to other handlers without touching the reading state: for a
   * socket already reading (uv_read_start twice is an error), a read stop
   * and start, two epoll_ctl calls, fewer.
   */
  setReader(handlers: ReadHandlers): void {
    this.reader = handlers;
    this.raw.onread = onRead;
  }

  /** Stop reading until resumeReading(): what the kernel keeps meanwhile slows the sender down. */
  pauseReading(): void {
    if (!this.closed) this.raw.readStop();
  }

  resumeReading(): void {
    if (this.closed) return;
    const status = this.raw.readStart();
    // A socket that is already gone reports it as a failed read, like any other.
    if (status < 0) {
      queueMicrotask(() => {
        const reader = this.reader;
        if (reader) this.complete((error) => reader.end(error), failure(status, 'read'));
      });
    }
  }

  /**
   * Write a chunk. Returns true when the kernel took all of it; otherwise the
   * rest is queued and done runs when it has gone (or failed). done also runs,
   * on a later tick, when the write fails at once.
   */
  write(chunk: Buffer, done: (error?: SysError) => void): boolean {
    const b = bindings();
    const req = new b.WriteWrap();
    req.handle = this.raw;
    req.tcp = this;
    req.buffer = chunk; // held until libuv has written it
    req.done = done;
    req.oncomplete = afterWrite;
    const status = this.raw.writeBuffer(req, chunk);
    if (status < 0) {
      queueMicrotask(() => this.complete(done, failure(status, 'write')));
      return false;
    }
    if (b.state[b.kLastWriteWasAsync] === 0) return true;
    this.writesQueued++;
    return false;
  }

  /**
   * Send the last chunk before a FIN: with MSG_MORE the kernel holds a
   * partial segment back, so the FIN of the shutdown() or close() that must
   * follow at once rides in the same segment as the data. A peer then gets
   * data and FIN together and cannot close first: through relay the close
   * order stays the backend's, as through a router (a FIN in a segment of its
   * own, even microseconds later, lets a client such as wrk read the reply,
   * close first and keep the TIME_WAIT). Returns how many bytes the kernel
   * took (fewer when the peer's window is full: the caller writes the rest),
   * or the failure. Only with nothing queued, so bytes keep their order.
   */
  sendBeforeFin(chunk: Buffer): number | SysError {
    if (this.writesQueued !== 0 || this.closed) return 0;
    const c = libc();
    const sent = c.send(this.raw.fd, chunk, chunk.length, C.MSG_MORE | C.MSG_DONTWAIT | C.MSG_NOSIGNAL);
    if (sent >= 0) return sent;
    const errno = c.errno();
    return errno === C.EAGAIN ? 0 : failure(-errno, 'write');
  }

  /**
   * Send a FIN once queued writes have gone. done runs once: at once (before
   * this returns) when nothing was queued, else when libuv has sent the FIN.
   */
  shutdown(done: (error?: SysError) => void): void {
    if (this.writesQueued === 0) {
      this.shutdownNow(done);
      return;
    }
    const req = new (bindings().ShutdownWrap)();
    req.handle = this.raw;
    req.oncomplete = (status) => {
      this.shutdownPending = false;
      this.complete(done, status < 0 && status !== UV_ENOTCONN ? failure(status, 'shutdown') : undefined);
    };
    const status = this.raw.shutdown(req);
    // 1: finished at once (nothing queued); ENOTCONN: the peer is gone, which the reads will report.
    if (status === 1 || status === UV_ENOTCONN) queueMicrotask(() => this.complete(done));
    else if (status < 0) queueMicrotask(() => this.complete(done, failure(status, 'shutdown')));
    else this.shutdownPending = true;
  }

  /**
   * Whether the peer's FIN is already here, with nothing unread before it,
   * after a read of readBytes: one peek, so the caller can pass the FIN on
   * right behind the data it just relayed. libuv stops reading at a short
   * read and would report the FIN only on a later turn of the loop, too late
   * to keep the close order. After a full read it reads on at once and
   * reports the FIN itself, so bulk transfers pay no peek.
   */
  peerFinished(readBytes: number): boolean {
    if (readBytes >= READ_BUFFER_BYTES) return false;
    return libc().recv(this.raw.fd, PEEK_BUFFER, 1, C.MSG_PEEK | C.MSG_DONTWAIT) === 0;
  }

  /**
   * The FIN right behind the data the kernel already took, with shutdown(2)
   * itself. libuv's own shutdown goes out a loop turn later (it waits for
   * the next pass over pending handles): long enough for a client that has
   * its whole reply (wrk, most HTTP clients) to close first and keep the
   * TIME_WAIT, which filled clients' port ranges under the kernel's default
   * tcp_tw_reuse. Through relay the close order must be the backend's, as
   * through a router. Nothing else uses this side's writes afterwards: a FIN
   * passed on ends that direction.
   */
  private shutdownNow(done: (error?: SysError) => void): void {
    const c = libc();
    let error: SysError | undefined;
    if (c.shutdown(this.raw.fd, C.SHUT_WR) !== 0) {
      const errno = c.errno();
      // ENOTCONN: the peer is gone, which the reads will report.
      if (errno !== C.ENOTCONN) error = failure(-errno, 'shutdown');
    }
    this.complete(done, error);
  }

  /**
   * Close: a FIN if the kernel holds nothing unread, else an RST. The fd is
   * closed before this returns; nothing is called back (a callback would cost
   * a trip into JavaScript per socket).
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.reader = undefined;
    this.raw.onread = ignoreRead;
    this.raw.close();
  }

  /** Close with an RST, so the peer learns the other side failed rather than finished. */
  reset(): void {
    if (this.closed) return;
    if (this.shutdownPending) {
      // libuv refuses uv_tcp_close_reset while a shutdown is queued, and Node
      // marks the handle closing even so: a close() after it would do
      // nothing and the fd would stay open for good. Do what the reset does
      // (SO_LINGER 0, then close) ourselves; close() cancels the shutdown.
      libc().setsockopt(this.raw.fd, C.SOL_SOCKET, C.SO_LINGER, LINGER_ZERO, LINGER_ZERO.length);
      this.close();
      return;
    }
    this.closed = true;
    this.reader = undefined;
    this.raw.onread = ignoreRead;
    if (this.raw.reset() < 0) this.raw.close();
  }
}

/** A listening TCP socket; every accepted client goes to onClient, every failed accept to onError. */
export class TcpListener {
  private constructor(private readonly raw: RawTcp) {}

  /** The port it listens on (the kernel's choice for port 0), or undefined once closed. */
  port(): number | undefined {
    const out: { port?: number } = {};
    return this.raw.getsockname(out) < 0 ? undefined : out.port;
  }

  /**
   * Bind and listen. An IPv6 listener also takes IPv4 clients (as
   * ::ffff:a.b.c.d), as net.Server does, so [::] covers both families.
   */
  static listen(address: string, port: number, family: Family, v6Only: boolean, backlog: number,
    onClient: (client: TcpHandle) => void, onError: (error: SysError) => void): TcpListener {
    const b = bindings();
    const raw = new b.TCP(b.serverType);
    const bound = family === 4 ? raw.bind(address, port) : raw.bind6(address, port, v6Only ? UV_TCP_IPV6ONLY : 0);
    return TcpListener.start(raw, bound, address, port, backlog, onClient, onError);
  }

  /**
   * Listen on a socket already bound (by transparent.ts, with options libuv
   * does not set, such as SO_REUSEPORT). The fd is the listener's from here on.
   */
  static adopt(fd: number, address: string, port: number, backlog: number,
    onClient: (client: TcpHandle) => void, onError: (error: SysError) => void): TcpListener {
    const b = bindings();
    const raw = new b.TCP(b.serverType);
    return TcpListener.start(raw, raw.open(fd), address, port, backlog, onClient, onError);
  }

  private static start(raw: RawTcp, bound: number, address: string, port: number, backlog: number,
    onClient: (client: TcpHandle) => void, onError: (error: SysError) => void): TcpListener {
    // libuv may report a bind's EADDRINUSE only at listen().
    const status = bound < 0 ? bound : raw.listen(backlog);
    if (status < 0) {
      raw.close();
      throw failure(status, bound < 0 ? 'bind' : 'listen', address, port);
    }
    // Accepted sockets inherit TCP_NODELAY from the listener: one setsockopt
    // here instead of one per client.
    raw.setNoDelay(true);
    raw.onconnection = (accepted, client) => {
      if (accepted < 0 || !client) onError(failure(accepted, 'accept', address, port));
      else onClient(TcpHandle.accepted(client));
    };
    return new TcpListener(raw);
  }

  close(): void {
    this.raw.onconnection = ignoreConnection;
    this.raw.close();
  }
}
