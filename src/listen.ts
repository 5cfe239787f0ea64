// Listening sockets: which ones are IPv6-only, and turning a failed listen()
// into one line an operator can act on.
import { SysError } from './errors';
import type { Endpoint } from './addr';

/**
 * Whether relay's listener on endpoint sets IPV6_V6ONLY; relay's listeners
 * and doctor's prediction of them both ask here. A lone TCP [::]:P stays
 * dual-stack (IPv4 clients arrive as ::ffff:a.b.c.d), but beside an IPv4
 * listen on the same port and protocol it must be IPv6-only, or it clashes
 * with relay's own IPv4 socket (EADDRINUSE), as nginx's ipv6only=on. UDP
 * listeners are always IPv6-only: relay binds each address itself.
 */
export function listensV6Only(endpoint: Endpoint, protocol: 'tcp' | 'udp', listeners: readonly Endpoint[]): boolean {
  if (endpoint.family !== 6) return false;
  if (protocol === 'udp') return true;
  return listeners.some((l) => l.family === 4 && l.port === endpoint.port);
}

const LISTEN_HINTS: Record<string, string> = {
  EADDRINUSE: 'another process listens there: stop it, or choose another --listen',
  EADDRNOTAVAIL: 'that address is not on this host: add it, or listen on 0.0.0.0 / [::]',
  EACCES: 'ports below 1024 need CAP_NET_BIND_SERVICE (or root)',
};

export function listenError(err: NodeJS.ErrnoException, endpoint: Endpoint): Error {
  if (typeof err.errno !== 'number') return err;
  return new SysError({
    errno: err.errno,
    syscall: err.syscall ?? 'listen',
    address: endpoint.address,
    port: endpoint.port,
    hint: LISTEN_HINTS[err.code ?? ''],
  });
}
