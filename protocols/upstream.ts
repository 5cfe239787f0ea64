// The upstream socket from the client's address, for every protocol: one
// place decides what happens when the client and the backend are of different
// families (--on-family-mismatch) and when the client's port is taken on this
// host (EADDRINUSE: keep the address, let the kernel pick the port), and
// when an IPv4 client goes to an IPv6 backend with --map-ipv4-prefix set (the
// upstream is from the prefix + the client's address, RFC 6052). Each
// protocol says how to make its handle and counts and logs the outcomes itself.
import type { Endpoint } from '../src/addr';
import { familyOfAddress } from '../src/addr';
import type { FamilyMismatchPolicy } from '../src/config';
import { SysError } from '../src/errors';
import type { Family } from '../src/sys';
import { MapPrefix, mapIpv4 } from '../src/map-prefix';

export interface UpstreamSockets<H> {
  onFamilyMismatch: FamilyMismatchPolicy;
  /** Set: an IPv4 client of an IPv6 backend is relayed from this prefix + its address, not by the policy. */
  mapIpv4Prefix?: MapPrefix;
  /** A transparent handle bound to address:port (port 0: the kernel's pick). Throws a SysError. */
  bindFrom(address: string, port: number): H;
  /** An ordinary handle on relay's own address, for --on-family-mismatch masquerade. */
  unbound(family: Family): H;
}

/** What the opener reports; each returns nothing and must not throw. */
export interface UpstreamOutcomes {
  /** Families differ and the policy is reject: no upstream. */
  rejectedMismatch(): void;
  /** Families differ and the policy is masquerade: the upstream is relay's own address. */
  masqueraded?(): void;
  /** An IPv4 client going to an IPv6 backend: the upstream is from source, its address in --map-ipv4-prefix. */
  mapped?(source: string): void;
  /** The client's port is taken here: the upstream keeps the address, not the port. */
  portInUse(port: number): void;
  /** No upstream could be made (EMFILE, EPERM, ...). */
  failed(err: unknown): void;
}

/**
 * The upstream handle for a client at address:port going to backend, bound
 * but not connected; undefined when there is none (reported through outcomes).
 * A port of 0 asks for the client's address only (TCP without --keep-client-port).
 */
export function openUpstream<H>(
  sockets: UpstreamSockets<H>, outcomes: UpstreamOutcomes,
  client: { address: string; port: number }, backend: Endpoint,
): H | undefined {
  let source = client.address;
  if (familyOfAddress(client.address) !== backend.family) {
    const mapped = mappedSource(sockets, client.address, backend.family);
    if (mapped === undefined) {
      if (sockets.onFamilyMismatch === 'reject') {
        outcomes.rejectedMismatch();
        return undefined;
      }
      outcomes.masqueraded?.();
      return sockets.unbound(backend.family);
    }
    outcomes.mapped?.(mapped);
    source = mapped;
  }
  try {
    return sockets.bindFrom(source, client.port);
  } catch (err) {
    if (client.port === 0 || !(err instanceof SysError) || err.code !== 'EADDRINUSE') {
      outcomes.failed(err);
      return undefined;
    }
  }
  // Something on this host holds the client's address and port (another
  // listener's session, or a local socket).
  outcomes.portInUse(client.port);
  try {
    return sockets.bindFrom(source, 0);
  } catch (err) {
    outcomes.failed(err);
    return undefined;
  }
}

/** The IPv6 address an IPv4 client is relayed from, or undefined when the families match or no prefix is set. */
function mappedSource<H>(sockets: UpstreamSockets<H>, clientAddress: string, backendFamily: Family): string | undefined {
  if (backendFamily !== 6 || !sockets.mapIpv4Prefix || familyOfAddress(clientAddress) !== 4) return undefined;
  return mapIpv4(sockets.mapIpv4Prefix, clientAddress);
}
