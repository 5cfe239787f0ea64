// libc bindings through koffi. This directory is the only place koffi is
// imported. Bindings load on first use so that pure code (config parsing,
// tests without root) never touches the native library.
import koffi from 'koffi';

export interface Libc {
  socket(domain: number, type: number, protocol: number): number;
  setsockopt(fd: number, level: number, name: number, value: Buffer, length: number): number;
  bind(fd: number, addr: Buffer, length: number): number;
  /** length: a 4-byte socklen_t in and out (the room in addr, then the size written). */
  getsockname(fd: number, addr: Buffer, length: Buffer): number;
  close(fd: number): number;
  shutdown(fd: number, how: number): number;
  recv(fd: number, buffer: Buffer, length: number, flags: number): number;
  send(fd: number, buffer: Buffer, length: number, flags: number): number;
  getrlimit(resource: number, limits: Buffer): number;
  setrlimit(resource: number, limits: Buffer): number;
  sendmmsg(fd: number, messages: Buffer, count: number, flags: number): number;
  recvmmsg(fd: number, messages: Buffer, count: number, flags: number, timeout: null): number;
  sendmsg(fd: number, message: Buffer, flags: number): number;
  recvmsg(fd: number, message: Buffer, flags: number): number;
  /** poll(2) on one of koffi's worker threads: done gets its result (-1 on failure). */
  pollAsync(fds: Buffer, count: number, timeoutMs: number, done: (result: number) => void): void;
  /**
   * recvmmsg on one of koffi's worker threads, for a blocking socket: done
   * gets the count (-1 on failure; errno is the worker's, not readable here).
   */
  recvmmsgAsync(fd: number, messages: Buffer, count: number, flags: number, done: (result: number) => void): void;
  /** errno of the last call above that failed (returned a negative number), kept at its return. */
  errno(): number;
  /** Where a Buffer's bytes are in memory, for the pointers inside structs relay builds (sendmmsg's). */
  addressOf(buffer: Buffer): number;
}

let loaded: Libc | undefined;

/** errno of the last call that failed, kept by keepingErrno. */
let lastErrno = 0;

/**
 * The call, keeping errno when it fails before any other JavaScript runs:
 * V8 itself may change errno between two calls (Node 24 did, about once in
 * 200,000 failed binds while compiling: ENOENT or EAGAIN in place of
 * EADDRINUSE), so koffi.errno() read after returning to relay's code can lie.
 */
function keepingErrno<A extends unknown[]>(call: (...args: A) => number): (...args: A) => number {
  return (...args: A) => {
    const result = call(...args);
    if (result < 0) lastErrno = koffi.errno();
    return result;
  };
}

export function libc(): Libc {
  if (!loaded) loaded = load();
  return loaded;
}

function load(): Libc {
  const lib = koffi.load('libc.so.6');
  const recvmmsg = lib.func('int recvmmsg(int, void *, uint32_t, int, void *)');
  const poll = lib.func('int poll(void *, uint64_t, int)');
  // Addresses and option values are passed as raw Buffers: the layouts are
  // built (and unit-tested) in sockaddr.ts, so koffi needs no struct types.
  return {
    socket: keepingErrno(lib.func('int socket(int, int, int)')),
    setsockopt: keepingErrno(lib.func('int setsockopt(int, int, int, void *, uint32_t)')),
    bind: keepingErrno(lib.func('int bind(int, void *, uint32_t)')),
    getsockname: keepingErrno(lib.func('int getsockname(int, void *, void *)')),
    close: keepingErrno(lib.func('int close(int)')),
    shutdown: keepingErrno(lib.func('int shutdown(int, int)')),
    recv: keepingErrno(lib.func('long recv(int, void *, size_t, int)')),
    send: keepingErrno(lib.func('long send(int, void *, size_t, int)')),
    getrlimit: keepingErrno(lib.func('int getrlimit(int, void *)')),
    setrlimit: keepingErrno(lib.func('int setrlimit(int, void *)')),
    sendmmsg: keepingErrno(lib.func('int sendmmsg(int, void *, uint32_t, int)')),
    recvmmsg: keepingErrno(recvmmsg),
    sendmsg: keepingErrno(lib.func('long sendmsg(int, void *, int)')),
    recvmsg: keepingErrno(lib.func('long recvmsg(int, void *, int)')),
    pollAsync: (fds, count, timeoutMs, done) =>
      poll.async(fds, count, timeoutMs, (err: unknown, result: number) => done(err ? -1 : result)),
    recvmmsgAsync: (fd, messages, count, flags, done) =>
      recvmmsg.async(fd, messages, count, flags, null, (err: unknown, result: number) => done(err ? -1 : result)),
    errno: () => lastErrno,
    // User-space addresses on 64-bit Linux fit in 47 bits, well inside a double's 53.
    addressOf: (buffer) => Number(koffi.address(buffer)),
  };
}
