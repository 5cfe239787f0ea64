// Where relay listens: the UDP sockets a --listen stands for, which
// listeners are IPv6-only, and a failed listen() turned into one line an
// operator can act on.
import * as os from 'node:os';
import { SysError } from './errors';
import type { Endpoint } from './addr';
import { formatEndpoint, isWildcard, normalize } from './addr';
import type { Family } from './sys/sockaddr';

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

/**
 * The addresses a UDP listener binds for a listen endpoint: itself, or for a
 * wildcard every local address of its family ([::] also takes IPv4
 * addresses, as a dual-stack TCP listener does). relay binds each address
 * rather than the wildcard so that every reply leaves from the address its
 * client sent to (see docs/udp.md).
 */
export function listenAddresses(endpoint: Endpoint, interfaces = os.networkInterfaces()): string[] {
  if (!isWildcard(endpoint.address)) return [endpoint.address];
  const families: Family[] = endpoint.address === '0.0.0.0' ? [4] : [6, 4];
  const found = Object.values(interfaces).flat()
    .filter((i): i is os.NetworkInterfaceInfo => i !== undefined)
    .filter((i) => families.includes(i.family === 'IPv4' ? 4 : 6))
    // Link-local IPv6 needs a scope id per interface; relay's clients use routable addresses.
    .filter((i) => !(i.family === 'IPv6' && i.address.toLowerCase().startsWith('fe80:')))
    .map((i) => normalize(i.address));
  return [...new Set(found)];
}

/** One UDP socket relay binds: an address, a port, and the --listen it serves. */
export interface UdpBinding {
  address: string;
  port: number;
  /** The --listen this binding came from (a wildcard, or the address itself). */
  endpoint: Endpoint;
  /** Found among the host's addresses for a wildcard --listen: it may come and go. */
  fromWildcard: boolean;
}

/**
 * Every UDP socket relay binds for these --listen endpoints, given the host's
 * addresses now. 0.0.0.0 and [::] on one port both expand to the IPv4
 * addresses, and a specific address may also be one a wildcard expands to:
 * each address and port is bound once, the first endpoint naming it wins.
 * relay and `relay doctor` both follow this plan.
 */
export function udpListenPlan(endpoints: readonly Endpoint[], interfaces = os.networkInterfaces()): UdpBinding[] {
  const plan = new Map<string, UdpBinding>();
  // Specific addresses first: they stay bound for relay's life, whatever the host does.
  const ordered = [...endpoints.filter((e) => !isWildcard(e.address)), ...endpoints.filter((e) => isWildcard(e.address))];
  for (const endpoint of ordered) {
    for (const address of listenAddresses(endpoint, interfaces)) {
      const id = udpBindingId(address, endpoint.port);
      if (!plan.has(id)) plan.set(id, { address, port: endpoint.port, endpoint, fromWildcard: isWildcard(endpoint.address) });
    }
  }
  return [...plan.values()];
}

export function udpBindingId(address: string, port: number): string {
  return formatEndpoint(address, port);
}
