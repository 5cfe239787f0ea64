// The upstream socket from the client's address, for every protocol: one
// place decides what happens when the client and the backend are of different
// families (--on-family-mismatch) and when the client's port is taken on this
// host (EADDRINUSE: keep the address, let the kernel pick the port). Each
// protocol says how to make its handle and counts and logs the outcomes itself.
import type { Endpoint } from '../src/addr';
import { familyOfAddress } from '../src/addr';
import type { FamilyMismatchPolicy } from '../src/config';
import { SysError } from '../src/errors';
import type { Family } from '../src/sys';

export interface UpstreamSockets<H> {
  onFamilyMismatch: FamilyMismatchPolicy;
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
  if (familyOfAddress(client.address) !== backend.family) {
    if (sockets.onFamilyMismatch === 'reject') {
      outcomes.rejectedMismatch();
      return undefined;
    }
    outcomes.masqueraded?.();
    return sockets.unbound(backend.family);
  }
  try {
    return sockets.bindFrom(client.address, client.port);
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
    return sockets.bindFrom(client.address, 0);
  } catch (err) {
    outcomes.failed(err);
    return undefined;
  }
}
