// The start-up self-test: relay's own handle code (TcpListener, TcpHandle,
// UdpHandle, ReplyBatch, ReceiveBatch), driven over loopback before any
// listener opens. node-binding.ts can only check that the members relay uses
// exist; a Node.js release that kept the names and changed what they do (a
// callback no longer called, what a write returns, the bytes a read hands
// over, a close that leaves the fd open) would corrupt data or hang
// connections with no error. So each start does, on 127.0.0.1 and (when the
// namespace has it) ::1, with ephemeral ports and nothing else: a TCP pair
// (listen, accept, connect, writes taken at once and queued, reads, a FIN each
// way, close), a reset, a reset while a shutdown is pending, and a UDP pair
// (send, receive, sendmmsg, recvmmsg), checking that every callback runs, once,
// that the bytes arrive intact and that every close releases its socket. Any
// difference refuses the start with one line naming it and the Node.js
// version; the whole test is bounded by a timeout that names the step it
// was waiting for. Its cost (about 25 ms a start) is in docs/operations.md.
import * as fs from 'node:fs';
import { RelayError, SysError, describeError } from '../errors';
import { TcpHandle, TcpListener, type FaultOwner, type ReadHandlers } from './tcp-handle';
import { UdpHandle, type DatagramHandlers } from './udp-handle';
import { ReceiveBatch, ReplyBatch } from './udp-batch';
import { openUdpListener } from './transparent';
import { encodeSockaddr, type Family } from './sockaddr';
import { libc } from './libc';
import * as C from './constants';

/** How long the whole self-test may take before it fails, naming the step it waited for. */
export const SELF_TEST_TIMEOUT_MS = 2000;

export interface SelfTestOptions {
  timeoutMs?: number;
}

export interface SelfTestResult {
  /** Wall-clock time the self-test took. */
  ms: number;
  /** The loopback families tested (IPv6 only when the namespace has ::1). */
  families: Family[];
}

const LOOPBACK: Record<Family, string> = { 4: '127.0.0.1', 6: '::1' };

/** A write small enough that an idle loopback connection must take it at once. */
const SMALL_BYTES = 1000;
/**
 * The writing socket's send buffer (SO_SNDBUF; the kernel doubles it and turns
 * off its autotuning, which on loopback would grow it to megabytes).
 */
const SEND_BUFFER_BYTES = 64 * 1024;
/**
 * A write too large to be taken at once by a socket with that send buffer
 * whose peer is not reading (the peer's receive queue holds tcp_rmem's
 * default until it reads: 128 KiB unless tuned; see largeWriteBytes), so
 * it goes through libuv's queue and its completion callback.
 */
const LARGE_MIN_BYTES = 512 * 1024;
/** The UDP listeners' receive buffer: room for the test's few datagrams. */
const UDP_RECEIVE_BUFFER_BYTES = 256 * 1024;

export const SELF_TEST_HINT = "relay drives Node's libuv handles directly and is tested on Node.js 20, 22, 24 and 26 " +
  '(docs/operations.md#nodejs-versions): run it on one of those, or report this line';

/**
 * Run the self-test; resolves with its cost, or rejects with a RelayError
 * whose one line names what differs and the Node.js version.
 */
export async function runSelfTest(options: SelfTestOptions = {}): Promise<SelfTestResult> {
  const started = process.hrtime.bigint();
  const probe = new Probe(options.timeoutMs ?? SELF_TEST_TIMEOUT_MS);
  const fdsBefore = new Set(listFds());
  let families: Family[];
  try {
    families = await probe.run(async () => {
      const tested: Family[] = [];
      for (const family of [4, 6] as const) {
        if (await testFamily(probe, family)) tested.push(family);
      }
      if (tested.length === 0) {
        throw new Difference('no loopback address to test on (127.0.0.1 and ::1 both refused a listener)',
          'bring the loopback interface up in relay\'s network namespace: ip link set lo up');
      }
      return tested;
    });
  } catch (err) {
    throw selfTestError(err, probe);
  } finally {
    probe.closeAll();
  }
  const left = newFds(fdsBefore);
  if (left.length > 0) {
    throw selfTestError(new Difference(`${left.length} fds were still open after every handle closed (${left.join(', ')})`), probe);
  }
  return { ms: Number(process.hrtime.bigint() - started) / 1e6, families };
}

/** What differs, as a phrase; the hint, when this is not Node.js's doing. */
class Difference extends Error {
  constructor(message: string, readonly hint?: string) {
    super(message);
  }
}

function selfTestError(err: unknown, probe: Probe): RelayError {
  const what = err instanceof Difference ? err.message : `${probe.step}: ${describeError(err)}`;
  const hint = err instanceof Difference && err.hint ? err.hint : SELF_TEST_HINT;
  return new RelayError('ERR_SELF_TEST', `Node.js ${process.version} failed relay's start-up self-test: ${what}`, hint);
}

/**
 * The test's bookkeeping: the step it is at (for a throw or the timeout to
 * name), what it waits for, and every handle it opened (closed on any way out).
 */
class Probe implements FaultOwner {
  step = 'starting';
  private readonly closers: (() => void)[] = [];
  private waiting: { what: string; ready: () => boolean; resolve: () => void; poll: boolean } | undefined;
  private abort: ((err: Error) => void) | undefined;

  constructor(private readonly timeoutMs: number) {}

  /** Run body, failing it if it takes longer than the timeout or a handle's callback throws. */
  async run<T>(body: () => Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const aborted = new Promise<never>((_, reject) => {
      this.abort = reject;
      timer = setTimeout(() => {
        const what = this.waiting ? this.waiting.what : this.step;
        reject(new Difference(`${what} within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
    });
    try {
      return await Promise.race([body(), aborted]);
    } finally {
      clearTimeout(timer);
      this.waiting = undefined;
    }
  }

  /** Name the step now running. */
  at(step: string): void {
    this.step = step;
  }

  /** Close this on the way out, whatever happens. */
  own<T extends { close(): void }>(handle: T): T {
    this.closers.push(() => handle.close());
    return handle;
  }

  closeAll(): void {
    for (const close of this.closers.splice(0)) {
      try {
        close();
      } catch {
        // Already closed or broken: the fd count after the test will tell.
      }
    }
  }

  /** A throw in one of relay's callbacks (the handles route it here). */
  internalError(error: unknown): void {
    this.abort?.(new Difference(`${this.step}: a callback threw: ${describeError(error)}`));
  }

  /**
   * Wait until ready() holds; what says, for the timeout, what never came.
   * Callbacks call poke(); with poll, it is also checked once per turn of
   * the event loop (for what no callback announces: recvmmsg's datagrams).
   */
  until(what: string, ready: () => boolean, poll = false): Promise<void> {
    if (ready()) return Promise.resolve();
    return new Promise((resolve) => {
      this.waiting = { what, ready, resolve, poll };
      if (poll) setImmediate(() => this.pollAgain());
    });
  }

  /** Something happened: see whether what is awaited has. */
  poke(): void {
    const waiting = this.waiting;
    if (waiting && waiting.ready()) {
      this.waiting = undefined;
      waiting.resolve();
    }
  }

  private pollAgain(): void {
    const waiting = this.waiting;
    if (!waiting?.poll) return;
    this.poke();
    if (this.waiting === waiting) setImmediate(() => this.pollAgain());
  }
}

/** Both protocols on one family's loopback; false when the namespace has no such address. */
async function testFamily(probe: Probe, family: Family): Promise<boolean> {
  const accepted: TcpHandle[] = [];
  let acceptError: SysError | undefined;
  probe.at(`TCP${family} listen on ${LOOPBACK[family]}`);
  let listener: TcpListener;
  try {
    listener = TcpListener.listen(LOOPBACK[family], 0, family, false, 16, (client) => {
      accepted.push(probe.own(client));
      probe.poke();
    }, (error) => {
      acceptError = error;
      probe.poke();
    });
  } catch (err) {
    // No such address here (IPv6 off, or lo down): not Node.js's doing.
    if (err instanceof SysError && (err.code === 'EADDRNOTAVAIL' || err.code === 'EAFNOSUPPORT')) return false;
    throw err;
  }
  probe.own(listener);
  const port = listener.port();
  if (!port) throw new Difference(`TCP${family} listen: the listener reports no port (getsockname)`);
  const tcp: TcpSetup = { probe, family, port, accepted, acceptError: () => acceptError };
  await tcpExchange(tcp);
  if (family === 4) {
    await tcpReset(tcp);
    await tcpResetDuringShutdown(tcp);
  }
  closeReleasesFd(probe, `TCP${family} listener close`, () => listener.close());
  await udpExchange(probe, family);
  return true;
}

interface TcpSetup {
  probe: Probe;
  family: Family;
  port: number;
  accepted: TcpHandle[];
  acceptError: () => SysError | undefined;
}

interface TcpPair {
  client: TcpHandle;
  server: TcpHandle;
  fromClient: Received;
  fromServer: Received;
}

/**
 * Connect a client to the listener, accept it, and read on both sides. With
 * sendBuffer, the client is a socket made with koffi and adopted, as relay's
 * upstreams are; else an unbound handle, as for a masquerading upstream.
 */
async function tcpPair(t: TcpSetup, sendBuffer?: number): Promise<TcpPair> {
  const { probe, family, port } = t;
  const name = `TCP${family}`;
  const host = LOOPBACK[family];
  probe.at(`${name} connect to ${host}:${port}`);
  const client = probe.own(sendBuffer ? TcpHandle.adopt(smallSendBufferSocket(family, sendBuffer)) : TcpHandle.unbound());
  client.owner = probe;
  const connected = new Calls(probe);
  client.connect(host, port, family, connected.callback);
  await probe.until(`${name} connect: its callback (oncomplete) did not run`, () => connected.count > 0);
  connected.expectSuccess(`${name} connect to ${host}:${port}`);
  await probe.until(`${name} accept: the listener's callback (onconnection) did not run`,
    () => t.accepted.length > 0 || t.acceptError() !== undefined);
  const acceptError = t.acceptError();
  if (acceptError) throw new Difference(`${name} accept failed: ${acceptError.message}`);
  const server = t.accepted.shift()!;
  server.owner = probe;

  probe.at(`${name} peer addresses`);
  const serverSide = client.peer();
  if (serverSide?.address !== host || serverSide.port !== port) {
    throw new Difference(`${name} peer: the client's peer is ${JSON.stringify(serverSide)}, not ${host}:${port} (getpeername)`);
  }
  const clientSide = server.peer();
  if (clientSide?.address !== host || !(clientSide.port > 0)) {
    throw new Difference(`${name} peer: the accepted socket's peer is ${JSON.stringify(clientSide)}, not ${host} (getpeername)`);
  }

  probe.at(`${name} read start`);
  const fromServer = new Received(probe);
  const fromClient = new Received(probe);
  client.readStart(fromServer.handlers);
  server.readStart(fromClient.handlers);
  return { client, server, fromClient, fromServer };
}

/** Writes both ways (one taken at once, one queued), a FIN each way, close. */
async function tcpExchange(t: TcpSetup): Promise<void> {
  const { probe, family } = t;
  const name = `TCP${family}`;
  const { client, server, fromClient, fromServer } = await tcpPair(t, SEND_BUFFER_BYTES);

  const hello = pattern(SMALL_BYTES, 1);
  probe.at(`${name} write`);
  const helloWritten = new Calls(probe);
  if (!client.write(hello, helloWritten.callback)) {
    throw new Difference(`${name} write: ${SMALL_BYTES} bytes on an idle connection were not taken at once ` +
      '(writeBuffer\'s status or streamBaseState[kLastWriteWasAsync] changed)');
  }
  await receiveAll(probe, `${name} read`, fromClient, hello);

  // The queued path: the server stops reading, so the client cannot send it all at once.
  const large = pattern(largeWriteBytes(), 2);
  server.pauseReading();
  probe.at(`${name} queued write`);
  const largeWritten = new Calls(probe);
  if (client.write(large, largeWritten.callback)) {
    throw new Difference(`${name} write: ${large.length} bytes to a peer that is not reading were all taken at once ` +
      '(streamBaseState[kLastWriteWasAsync] changed)');
  }
  server.resumeReading();
  await probe.until(`${name} queued write: its callback (oncomplete) did not run`, () => largeWritten.count > 0);
  largeWritten.expectSuccess(`${name} queued write`);
  await receiveAll(probe, `${name} read after a queued write`, fromClient, Buffer.concat([hello, large]));
  const back = pattern(SMALL_BYTES, 9);
  probe.at(`${name} write back`);
  server.write(back, () => {});
  await receiveAll(probe, `${name} read`, fromServer, back);
  if (helloWritten.count > 0) {
    throw new Difference(`${name} write: the callback of a write taken at once ran (it must not)`);
  }

  // A FIN each way; data still flows the other way after the first.
  probe.at(`${name} shutdown`);
  const clientShut = new Calls(probe);
  client.shutdown(clientShut.callback);
  await probe.until(`${name} shutdown: its callback (oncomplete) did not run`, () => clientShut.count > 0);
  clientShut.expectSuccess(`${name} shutdown`);
  await ended(probe, `${name} FIN`, fromClient, undefined);
  const after = pattern(SMALL_BYTES, 3);
  probe.at(`${name} write after the peer's FIN`);
  server.write(after, () => {});
  await receiveAll(probe, `${name} read after its own FIN`, fromServer, Buffer.concat([back, after]));
  const serverShut = new Calls(probe);
  server.shutdown(serverShut.callback);
  await probe.until(`${name} shutdown: its callback (oncomplete) did not run`, () => serverShut.count > 0);
  serverShut.expectSuccess(`${name} shutdown`);
  await ended(probe, `${name} FIN`, fromServer, undefined);

  closeReleasesFd(probe, `${name} close`, () => client.close());
  closeReleasesFd(probe, `${name} close`, () => server.close());
  expectOnce(`${name} read`, fromClient, fromServer);
}

/** A reset: the peer's read fails with ECONNRESET, and the fd goes at once. */
async function tcpReset(t: TcpSetup): Promise<void> {
  const name = `TCP${t.family} reset`;
  const { client, server, fromClient } = await tcpPair(t);
  closeReleasesFd(t.probe, name, () => client.reset());
  await ended(t.probe, name, fromClient, 'ECONNRESET');
  closeReleasesFd(t.probe, `${name}: close of its peer`, () => server.close());
}

/**
 * A reset while a shutdown is queued: libuv refuses uv_tcp_close_reset then,
 * so TcpHandle.reset() sets SO_LINGER 0 and closes; the peer must be reset,
 * not sent a FIN, and the fd must go. A shutdown is queued only behind a
 * write libuv still holds (with none, TcpHandle sends the FIN at once), so
 * the peer stops reading and the write is larger than the buffers. The peer
 * then has unread data, and libuv reports a reset behind data as the end of
 * the stream (POLLHUP after a short read): what tells a reset from a FIN is
 * that the peer can no longer write.
 */
async function tcpResetDuringShutdown(t: TcpSetup): Promise<void> {
  const name = `TCP${t.family} reset while a shutdown is pending`;
  const { client, server, fromClient } = await tcpPair(t, SEND_BUFFER_BYTES);
  server.pauseReading();
  t.probe.at(`${name}: a write that must be queued`);
  if (client.write(pattern(largeWriteBytes(), 4), () => t.probe.poke())) {
    throw new Difference(`${name}: ${largeWriteBytes()} bytes to a peer that does not read were taken at once ` +
      '(writeBuffer\'s status or streamBaseState[kLastWriteWasAsync] changed)');
  }
  t.probe.at(`${name}: shutdown`);
  client.shutdown(() => t.probe.poke());
  closeReleasesFd(t.probe, name, () => client.reset());
  t.probe.at(`${name}: a write from the peer`);
  const afterReset = new Calls(t.probe);
  server.write(pattern(SMALL_BYTES, 5), afterReset.callback);
  await t.probe.until(`${name}: the peer's write after the reset: its callback did not run`, () => afterReset.count > 0);
  if (!afterReset.error) throw new Difference(`${name}: the peer could still write, so it was sent a FIN, not a reset`);
  server.resumeReading();
  await t.probe.until(`${name}: the peer's read did not end`, () => fromClient.ends > 0);
  closeReleasesFd(t.probe, `${name}: close of its peer`, () => server.close());
}

/**
 * A connected UDP handle and a listener socket (as relay's sessions and
 * listeners are): send and receive through libuv both ways, then replies
 * through ReplyBatch's sendmmsg, read by libuv and by ReceiveBatch's recvmmsg.
 */
async function udpExchange(probe: Probe, family: Family): Promise<void> {
  const name = `UDP${family}`;
  const host = LOOPBACK[family];
  probe.at(`${name} listener on ${host}`);
  const listener = probe.own(openUdpListener(host, 0, UDP_RECEIVE_BUFFER_BYTES));
  const listenerPort = boundPort(listener.fd, `${name} listener`);
  // A second listener that libuv never reads: only recvmmsg empties it.
  const quiet = probe.own(openUdpListener(host, 0, UDP_RECEIVE_BUFFER_BYTES));
  const quietPort = boundPort(quiet.fd, `${name} listener`);
  probe.at(`${name} connect`);
  const session = probe.own(UdpHandle.unbound(family));
  session.connect(host, listenerPort);
  const sessionPort = boundPort(session.fd, `${name} connected socket (UdpHandle.fd)`);

  const atListener = new Datagrams(probe);
  const atSession = new Datagrams(probe);
  probe.at(`${name} receive`);
  listener.receive(atListener.handlers);
  session.receive(atSession.handlers);

  probe.at(`${name} send`);
  const request = pattern(700, 4);
  if (!session.send(request)) throw new Difference(`${name} send: a ${request.length}-byte datagram was refused`);
  await probe.until(`${name} receive: onmessage did not run`, () => atListener.list.length > 0);
  atListener.expect(`${name} receive`, 0, request, host, sessionPort);

  probe.at(`${name} sendmmsg`);
  let dropped = 0;
  const replies = new ReplyBatch(listener.fd, () => dropped++);
  const reply = pattern(900, 5);
  replies.add(reply, encodeSockaddr(host, sessionPort));
  const batched = [pattern(0, 6), pattern(1, 7), pattern(1400, 8)];
  const quietAddress = encodeSockaddr(host, quietPort);
  for (const datagram of batched) replies.add(datagram, quietAddress);
  await probe.until(`${name} sendmmsg: the reply did not arrive (onmessage did not run)`, () => atSession.list.length > 0);
  if (dropped > 0) throw new Difference(`${name} sendmmsg: ${dropped} datagrams were refused`);
  atSession.expect(`${name} sendmmsg`, 0, reply, host, listenerPort);

  probe.at(`${name} recvmmsg`);
  const drained = new Datagrams(probe);
  const batch = new ReceiveBatch();
  await probe.until(`${name} recvmmsg: ${batched.length} datagrams did not all arrive`, () => {
    batch.drain(quiet.fd, (datagram, address, port) => drained.handlers.message(datagram, address, port));
    return drained.list.length >= batched.length;
  }, true);
  batched.forEach((datagram, i) => drained.expect(`${name} recvmmsg`, i, datagram, host, listenerPort));

  closeReleasesFd(probe, `${name} close`, () => session.close());
  closeReleasesFd(probe, `${name} close`, () => listener.close());
  closeReleasesFd(probe, `${name} close`, () => quiet.close());
  for (const [what, datagrams, count] of [[`${name} receive`, atListener, 1], [`${name} sendmmsg`, atSession, 1],
    [`${name} recvmmsg`, drained, batched.length]] as const) {
    if (datagrams.errors.length > 0) throw new Difference(`${what}: failed: ${datagrams.errors[0].message}`);
    if (datagrams.list.length !== count) {
      throw new Difference(`${what}: ${datagrams.list.length} datagrams arrived for ${count} sent (onmessage ran more than once each)`);
    }
  }
}

/** What one side read: its chunks, and how its reading ended. */
class Received {
  chunks: Buffer[] = [];
  length = 0;
  ends = 0;
  error: SysError | undefined;
  readonly handlers: ReadHandlers;

  constructor(probe: Probe) {
    this.handlers = {
      data: (chunk) => {
        this.chunks.push(chunk);
        this.length += chunk.length;
        probe.poke();
      },
      end: (error) => {
        this.ends++;
        this.error = error;
        probe.poke();
      },
    };
  }

  take(): Buffer {
    const all = Buffer.concat(this.chunks);
    this.chunks = [all];
    return all;
  }
}

/** Wait for what was sent, then check it arrived intact. */
async function receiveAll(probe: Probe, what: string, received: Received, expected: Buffer): Promise<void> {
  await probe.until(`${what}: ${expected.length} bytes did not arrive (onread did not run)`,
    () => received.length >= expected.length || received.ends > 0);
  sameBytes(what, received.take(), expected);
}

/** Wait for a side's reading to end; code is the error expected (undefined: end of stream, a FIN). */
async function ended(probe: Probe, what: string, received: Received, code: string | undefined): Promise<void> {
  const expected = code ?? 'end of stream';
  await probe.until(`${what}: the peer's read did not end (onread with ${code ?? 'UV_EOF'} did not run)`,
    () => received.ends > 0);
  const got = received.error ? received.error.code : 'end of stream';
  if (got !== expected) throw new Difference(`${what}: the peer's read ended with ${got}, not ${expected}`);
}

/** Each read side ended exactly once. */
function expectOnce(what: string, ...sides: Received[]): void {
  for (const side of sides) {
    if (side.ends !== 1) throw new Difference(`${what}: the end of stream was reported ${side.ends} times, not once`);
  }
}

function sameBytes(what: string, got: Buffer, expected: Buffer): void {
  if (got.length !== expected.length) {
    throw new Difference(`${what}: ${got.length} bytes arrived, not the ${expected.length} sent`);
  }
  if (!got.equals(expected)) {
    let i = 0;
    while (got[i] === expected[i]) i++;
    throw new Difference(`${what}: the bytes arrived altered (first at byte ${i} of ${expected.length})`);
  }
}

/** Datagrams one socket received, with their senders. */
class Datagrams {
  list: { datagram: Buffer; address: string; port: number }[] = [];
  errors: SysError[] = [];
  readonly handlers: DatagramHandlers;

  constructor(probe: Probe) {
    this.handlers = {
      message: (datagram, address, port) => {
        this.list.push({ datagram, address, port });
        probe.poke();
      },
      error: (error) => {
        this.errors.push(error);
        probe.poke();
      },
    };
  }

  expect(what: string, i: number, datagram: Buffer, address: string, port: number): void {
    const got = this.list[i];
    if (!got) throw new Difference(`${what}: datagram ${i + 1} did not arrive`);
    sameBytes(what, got.datagram, datagram);
    if (got.address !== address || got.port !== port) {
      throw new Difference(`${what}: the sender is given as ${got.address}:${got.port}, not ${address}:${port}`);
    }
  }
}

/** How often, and with what, a completion callback ran. */
class Calls {
  count = 0;
  error: SysError | undefined;
  readonly callback = (error?: SysError): void => {
    this.count++;
    this.error = error;
    this.probe.poke();
  };

  constructor(private readonly probe: Probe) {}

  expectSuccess(what: string): void {
    if (this.error) throw new Difference(`${what} failed: ${this.error.message}`);
  }
}

/**
 * Close something and check its socket went with it, before close() returned
 * (as relay relies on). Sockets are counted, not fds: Node's own threads may
 * open or close a file meanwhile (seen on Node 22, once in a CI run).
 */
function closeReleasesFd(probe: Probe, what: string, close: () => void): void {
  probe.at(what);
  const before = openSockets();
  close();
  const after = openSockets();
  const released = [...before].filter((socket) => !after.has(socket)).length;
  if (released !== 1 || after.size !== before.size - 1) {
    throw new Difference(`${what}: ${released} sockets were released, not 1 (${before.size} open before, ${after.size} after)`);
  }
}

/** The sockets this process holds, as fd and inode ("21 socket:[4711]"). */
function openSockets(): Set<string> {
  const sockets = new Set<string>();
  for (const fd of listFds()) {
    try {
      const target = fs.readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith('socket:')) sockets.add(`${fd} ${target}`);
    } catch {
      // gone meanwhile: the directory read's own fd
    }
  }
  return sockets;
}

function listFds(): string[] {
  return fs.readdirSync('/proc/self/fd');
}

/**
 * The sockets opened since before, with what they are. Other fds are not the
 * handles' (libuv opens /dev/null once per event loop and keeps it, its spare
 * fd for when accept() meets EMFILE; Node's threads may open files meanwhile).
 */
function newFds(before: Set<string>): string[] {
  const opened: string[] = [];
  for (const fd of listFds()) {
    if (before.has(fd)) continue;
    let target: string;
    try {
      target = fs.readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue; // gone meanwhile: the directory read's own fd
    }
    if (target.startsWith('socket:')) opened.push(`${fd} ${target}`);
  }
  return opened;
}

/** A TCP socket with a small, fixed send buffer, made as relay makes its upstreams (koffi, then adopted). */
function smallSendBufferSocket(family: Family, bytes: number): number {
  const fd = libc().socket(family === 4 ? C.AF_INET : C.AF_INET6, C.SOCK_STREAM | C.SOCK_NONBLOCK | C.SOCK_CLOEXEC, 0);
  if (fd < 0) throw new SysError({ errno: libc().errno(), syscall: 'socket' });
  const value = Buffer.alloc(4);
  value.writeInt32LE(bytes);
  if (libc().setsockopt(fd, C.SOL_SOCKET, C.SO_SNDBUF, value, value.length) !== 0) {
    const errno = libc().errno();
    libc().close(fd);
    throw new SysError({ errno, syscall: 'setsockopt(SO_SNDBUF)' });
  }
  return fd;
}

/**
 * Twice what the peer's receive queue holds before it reads (tcp_rmem's
 * default, which a host may have tuned up), and at least LARGE_MIN_BYTES.
 */
function largeWriteBytes(): number {
  let receiveDefault = 0;
  try {
    receiveDefault = Number(fs.readFileSync('/proc/sys/net/ipv4/tcp_rmem', 'latin1').split(/\s+/)[1]) || 0;
  } catch {
    // No such file in this namespace: the minimum will do.
  }
  return Math.max(LARGE_MIN_BYTES, 2 * receiveDefault + 4 * SEND_BUFFER_BYTES);
}

/** The port a socket is bound to, read from its fd with getsockname. */
function boundPort(fd: number, what: string): number {
  const address = Buffer.alloc(28);
  const length = Buffer.alloc(4);
  length.writeUInt32LE(address.length);
  if (fd < 0 || libc().getsockname(fd, address, length) !== 0) {
    throw new Difference(`${what}: its fd (${fd}) is not an open socket`);
  }
  return address.readUInt16BE(2);
}

/**
 * Bytes unlike any other seed's: a block of 4,093 bytes (a prime, so no
 * power-of-two chunk boundary lines up with it) repeated by fill(), which
 * costs what a copy does.
 */
function pattern(length: number, seed: number): Buffer {
  const block = Buffer.allocUnsafe(Math.min(length, 4093));
  for (let i = 0; i < block.length; i++) block[i] = (i * 31 + seed * 97 + (i >> 8)) & 0xff;
  return length <= block.length ? block : Buffer.allocUnsafe(length).fill(block);
}
