// Backend choice. Pure: no I/O, so it is unit-tested without root.
import type { Endpoint } from './addr';
import type { Family } from './sys/sockaddr';

/** Picks a backend for a client of the given address family. */
export type PickBackend = (clientFamily: Family) => Endpoint;

/**
 * Round robin that prefers backends of the client's own family: only those
 * can see the client's address. A client is sent across families (and so
 * meets --on-family-mismatch) only when no backend of its family exists.
 */
export function roundRobin(backends: readonly Endpoint[]): PickBackend {
  if (backends.length === 0) throw new Error('roundRobin needs at least one backend');
  const rotations = new Map<Family | 'any', () => Endpoint>();
  for (const family of [4, 6] as const) {
    const same = backends.filter((b) => b.family === family);
    if (same.length > 0) rotations.set(family, rotate(same));
  }
  const any = rotate(backends);
  return (clientFamily) => (rotations.get(clientFamily) ?? any)();
}

function rotate(list: readonly Endpoint[]): () => Endpoint {
  let next = 0;
  return () => {
    const item = list[next];
    next = (next + 1) % list.length;
    return item;
  };
}
