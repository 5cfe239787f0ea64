// Transparent sockets: a socket bound to an address that is not the relay
// host's own (the client's), then adopted by Node so the data path stays on
// the event loop. Every option is set in openTransparentFd, in order, so the
// sequence can be read at a glance.
import * as net from 'node:net';
import * as dgram from 'node:dgram';
import { libc } from './libc';
import * as C from './constants';
import { encodeSockaddr, familyOf, Family } from './sockaddr';
import { SysError } from '../errors';
import { TcpHandle, TcpListener } from './tcp-handle';
import { UdpHandle } from './udp-handle';

export type Transport = 'tcp' | 'udp';

export interface TransparentSocketOptions {
  transport: Transport;
  /** The source address to spoof: the client's IP. */
  address: string;
  /** The source port; 0 lets the kernel choose one at connect time. */
  port: number;
  /** SO_MARK for the upstream packets (needs CAP_NET_ADMIN); 0 leaves it unset. */
  mark?: number;
}

export const PRIVILEGE_HINT =
  'IP_TRANSPARENT needs CAP_NET_RAW (or CAP_NET_ADMIN): grant it, e.g. systemd ' +
  'AmbientCapabilities=CAP_NET_RAW (docs/systemd/relay.service), or run relay as root';

/**
 * Open a socket bound to a foreign address and return its fd. On any failure
 * the fd is closed and a SysError naming the failed call is thrown.
 */
export function openTransparentFd(options: TransparentSocketOptions): number {
  const family = familyOf(options.address);
  const fd = createSocket(family, options.transport);
  try {
    configureTransparent(fd, family, options);
    bindTo(fd, options.address, options.port);
    return fd;
  } catch (err) {
    libc().close(fd);
    throw err;
  }
}

function createSocket(family: Family, transport: Transport): number {
  const domain = family === 4 ? C.AF_INET : C.AF_INET6;
  const type = (transport === 'tcp' ? C.SOCK_STREAM : C.SOCK_DGRAM) | C.SOCK_NONBLOCK | C.SOCK_CLOEXEC;
  const fd = libc().socket(domain, type, 0);
  if (fd < 0) throw new SysError({ errno: libc().errno(), syscall: 'socket' });
  return fd;
}

/** The per-family option names: IPv4 and IPv6 differ only in these values. */
const FAMILY_OPTIONS = {
  4: { level: C.SOL_IP, transparent: C.IP_TRANSPARENT, transparentName: 'IP_TRANSPARENT',
    freebind: C.IP_FREEBIND, freebindName: 'IP_FREEBIND' },
  6: { level: C.SOL_IPV6, transparent: C.IPV6_TRANSPARENT, transparentName: 'IPV6_TRANSPARENT',
    freebind: C.IPV6_FREEBIND, freebindName: 'IPV6_FREEBIND' },
} as const;

function configureTransparent(fd: number, family: Family, options: TransparentSocketOptions): void {
  const opt = FAMILY_OPTIONS[family];
  // Fatal: without it the kernel refuses to send from the client's address
  // (FREEBIND alone lets bind succeed, then connect fails with ENETUNREACH).
  setIntOption(fd, opt.level, opt.transparent, 1, opt.transparentName, options, PRIVILEGE_HINT);
  // Fatal: lets the bind succeed before any route makes the address local.
  setIntOption(fd, opt.level, opt.freebind, 1, opt.freebindName, options);
  if (options.transport === 'tcp' && options.port === 0) {
    // Tolerated: it only delays port choice to connect() so the 4-tuple, not
    // the 2-tuple, must be unique, which keeps busy clients from exhausting ports.
    trySetIntOption(fd, C.SOL_IP, C.IP_BIND_ADDRESS_NO_PORT, 1);
  }
  if (options.mark) {
    setIntOption(fd, C.SOL_SOCKET, C.SO_MARK, options.mark, 'SO_MARK', options,
      'SO_MARK needs CAP_NET_ADMIN (CAP_NET_RAW suffices on recent kernels)');
  }
}

/** Set an int option or throw a SysError naming it (and the address, when there is one). */
export function setIntOption(
  fd: number, level: number, name: number, value: number, label: string,
  target?: { address: string; port: number }, hintOnEperm?: string,
): void {
  if (trySetIntOption(fd, level, name, value)) return;
  const errno = libc().errno();
  throw new SysError({
    errno,
    syscall: `setsockopt(${label})`,
    address: target?.address,
    port: target?.port,
    hint: errno === C.EPERM ? hintOnEperm : undefined,
  });
}

/** setsockopt copies the value in, so one buffer serves every call (the data path is single-threaded). */
const optionValue = Buffer.alloc(4);

function trySetIntOption(fd: number, level: number, name: number, value: number): boolean {
  optionValue.writeInt32LE(value, 0);
  return libc().setsockopt(fd, level, name, optionValue, optionValue.length) === 0;
}

export function bindTo(fd: number, address: string, port: number): void {
  const sockaddr = encodeSockaddr(address, port);
  if (libc().bind(fd, sockaddr, sockaddr.length) !== 0) {
    throw new SysError({ errno: libc().errno(), syscall: 'bind', address, port });
  }
}

/**
 * A TCP socket from the given source, connecting to the target. connect() is
 * issued in the same tick as the wrap: libuv starts reading a wrapped fd at
 * once, and an unconnected one would look hung up (ENOTCONN).
 */
export function connectTransparent(
  source: TransparentSocketOptions,
  target: { address: string; port: number },
  socketOptions: { allowHalfOpen?: boolean } = {},
): net.Socket {
  const fd = openTransparentFd({ ...source, transport: 'tcp' });
  const socket = new net.Socket({ fd, allowHalfOpen: socketOptions.allowHalfOpen ?? true, readable: true, writable: true });
  socket.connect(target.port, target.address);
  return socket;
}

/**
 * An unconnected TCP handle bound to the given foreign source, for the data
 * path (see tcp-handle.ts); the caller connects it.
 */
export function openTransparentTcp(source: Omit<TransparentSocketOptions, 'transport'>): TcpHandle {
  const fd = openTransparentFd({ ...source, transport: 'tcp' });
  try {
    return TcpHandle.adopt(fd);
  } catch (err) {
    libc().close(fd);
    throw err;
  }
}

/** A UDP socket bound to the given foreign source, adopted by Node. */
export function bindTransparentUdp(source: Omit<TransparentSocketOptions, 'transport'>): dgram.Socket {
  const fd = openTransparentFd({ ...source, transport: 'udp' });
  const type = familyOf(source.address) === 4 ? 'udp4' : 'udp6';
  const socket = dgram.createSocket({ type });
  // exclusive: in a cluster worker the fd must not be shipped to the primary.
  socket.bind({ fd, exclusive: true });
  return socket;
}

/**
 * Fail fast at start-up when the process lacks the privilege for transparent
 * sockets, rather than on the first client.
 */
export function assertTransparentAllowed(family: Family): void {
  const fd = createSocket(family, 'tcp');
  try {
    const opt = FAMILY_OPTIONS[family];
    setIntOption(fd, opt.level, opt.transparent, 1, opt.transparentName, undefined, PRIVILEGE_HINT);
  } finally {
    libc().close(fd);
  }
}

/**
 * An unconnected UDP handle bound to the given foreign source (the client's
 * address and port), for the data path; the caller connects it.
 */
export function openTransparentUdp(source: Omit<TransparentSocketOptions, 'transport'>): UdpHandle {
  const fd = openTransparentFd({ ...source, transport: 'udp' });
  return adoptUdp(fd, familyOf(source.address));
}

/**
 * A UDP listening socket with a large receive buffer. A burst of new clients
 * (each needs an upstream socket before its datagram moves on) must queue in
 * the kernel rather than be dropped: SO_RCVBUFFORCE passes net.core.rmem_max
 * where relay holds CAP_NET_ADMIN; otherwise SO_RCVBUF gets what rmem_max
 * allows. IPv6 sockets are v6-only: relay binds each address itself.
 */
/**
 * A TCP listener in a SO_REUSEPORT group: each worker process binds its own
 * socket to the same address and port, and the kernel spreads new clients
 * over them by a hash of the four-tuple. libuv's bind sets no SO_REUSEPORT,
 * so the socket is made here and handed to the listener.
 */
export function listenTcpReusePort(address: string, port: number, v6Only: boolean, backlog: number,
  onClient: (client: TcpHandle) => void, onError: (error: SysError) => void): TcpListener {
  const family = familyOf(address);
  const fd = createSocket(family, 'tcp');
  try {
    setIntOption(fd, C.SOL_SOCKET, C.SO_REUSEADDR, 1, 'SO_REUSEADDR', { address, port });
    setIntOption(fd, C.SOL_SOCKET, C.SO_REUSEPORT, 1, 'SO_REUSEPORT', { address, port });
    if (family === 6) setIntOption(fd, C.SOL_IPV6, C.IPV6_V6ONLY, v6Only ? 1 : 0, 'IPV6_V6ONLY', { address, port });
    bindTo(fd, address, port);
  } catch (err) {
    libc().close(fd);
    throw err;
  }
  return TcpListener.adopt(fd, address, port, backlog, onClient, onError);
}

export function openUdpListener(address: string, port: number, receiveBufferBytes: number, reusePort = false): UdpHandle {
  const family = familyOf(address);
  const fd = createSocket(family, 'udp');
  try {
    // Workers: one socket each in the group; the kernel keeps a client's
    // four-tuple on one of them while the group does not change.
    if (reusePort) setIntOption(fd, C.SOL_SOCKET, C.SO_REUSEPORT, 1, 'SO_REUSEPORT', { address, port });
    setReceiveBuffer(fd, receiveBufferBytes);
    if (family === 6) setIntOption(fd, C.SOL_IPV6, C.IPV6_V6ONLY, 1, 'IPV6_V6ONLY', { address, port });
    bindTo(fd, address, port);
  } catch (err) {
    libc().close(fd);
    throw err;
  }
  return adoptUdp(fd, family);
}

/**
 * A receive buffer of the given size: past net.core.rmem_max where relay may
 * (SO_RCVBUFFORCE, CAP_NET_ADMIN), else up to it. Tolerated: the default works.
 */
export function setReceiveBuffer(fd: number, bytes: number): void {
  if (!trySetIntOption(fd, C.SOL_SOCKET, C.SO_RCVBUFFORCE, bytes)) trySetIntOption(fd, C.SOL_SOCKET, C.SO_RCVBUF, bytes);
}

function adoptUdp(fd: number, family: Family): UdpHandle {
  try {
    return UdpHandle.adopt(fd, family);
  } catch (err) {
    libc().close(fd);
    throw err;
  }
}
