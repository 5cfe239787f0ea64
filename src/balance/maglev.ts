// Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
// Software Network Load Balancer", NSDI 2016, section 3.4). Pure.
//
// A lookup table of prime size M maps hash(client) % M to a backend. Each
// backend walks its own permutation of the slots, (offset + j * skip) % M,
// from two hashes of its name; in turn, each claims its next free slot
// until the table is full. So every backend gets M/N slots (+-1), and
// adding or removing one backend moves little more than its own 1/N share.
//
// Relay hosts that share a backend list but never talk must build the same
// table. So the name is ADDR:PORT (what every host's config says), the
// hashes are seeded constants, and the fill runs over backends sorted by
// name: the paper's fill depends on the order of its turns, and sorting
// makes it independent of the order the backends were listed in.
import { ConfigError } from '../errors';
import type { WeightedBackend } from './backend';
import { clientHash, hashString } from './hash';
import { Client, Member, Strategy, byName, toMembers } from './member';

/** The paper's small table size: prime, and > 100 x backends up to 655 backends. */
export const MAGLEV_TABLE_SIZE = 65537;
/** 4 MB per table (Int32Array); past this the build takes long enough to stall the event loop. */
export const MAGLEV_MAX_TABLE_SIZE = 1_000_003;

// Changing either seed changes every table: relay hosts of different
// versions would then disagree. Treat them as part of the wire format.
const OFFSET_SEED = 0x4d61676c; // 'Magl'
const SKIP_SEED = 0x65762131; // 'ev!1'

interface Permutation {
  readonly offset: number;
  readonly skip: number;
}

/**
 * Maglev over the members of one family. A down member keeps its slots in
 * the primary table (built once, over every member); a client whose slot
 * names a down member is looked up in a fallback table built over the up
 * members. So when a backend goes down only its own clients move, and when
 * it comes back only they return; clients of healthy backends never move.
 */
export function maglev(members: readonly Member[], hashPort: boolean, size: number): Strategy {
  checkTableSize(size, members.length);
  const sorted = byName(members);
  const permutations = sorted.map((m) => permutation(m.name, size));
  const weights = sorted.map((m) => m.weight);
  const all = sorted.map((_, i) => i);
  const primary = fillTable(permutations, weights, all, size);
  let fallback: Int32Array | undefined = primary;
  return {
    pick(client: Client) {
      const slot = clientHash(client.address, hashPort ? client.port : undefined) % size;
      const first = sorted[primary[slot]];
      if (first.up) return first;
      return fallback === undefined ? undefined : sorted[fallback[slot]];
    },
    healthChanged() {
      // Build only on health changes, which are rare: ~10 ms for M = 65537.
      const up = all.filter((i) => sorted[i].up);
      fallback = up.length === 0 ? undefined
        : up.length === all.length ? primary : fillTable(permutations, weights, up, size);
    },
  };
}

/**
 * The table as backend names, for tests and diagnostics: what every relay
 * host with these backends (all up) maps slot i to.
 */
export function maglevTableNames(backends: readonly WeightedBackend[], size = MAGLEV_TABLE_SIZE): string[] {
  const members = toMembers(backends);
  checkTableSize(size, members.length);
  const sorted = byName(members);
  const table = fillTable(
    sorted.map((m) => permutation(m.name, size)),
    sorted.map((m) => m.weight),
    sorted.map((_, i) => i),
    size,
  );
  return Array.from(table, (i) => sorted[i].name);
}

/** skip is in 1..M-1 and M is prime, so the walk visits every slot once. */
function permutation(name: string, size: number): Permutation {
  return {
    offset: hashString(name, OFFSET_SEED) % size,
    skip: (hashString(name, SKIP_SEED) % (size - 1)) + 1,
  };
}

/**
 * The paper's Populate(), over the backends listed in `include` (indices
 * into permutations and weights), with weights: on each turn a backend
 * claims as many slots as its weight, so its share of the table is its
 * share of the total weight.
 */
function fillTable(
  permutations: readonly Permutation[],
  weights: readonly number[],
  include: readonly number[],
  size: number,
): Int32Array {
  const table = new Int32Array(size).fill(-1);
  const position = include.map((i) => permutations[i].offset);
  let filled = 0;
  for (;;) {
    for (let k = 0; k < include.length; k++) {
      const i = include[k];
      const { skip } = permutations[i];
      for (let claim = 0; claim < weights[i]; claim++) {
        let slot = position[k];
        while (table[slot] >= 0) slot = (slot + skip) % size;
        table[slot] = i;
        position[k] = (slot + skip) % size;
        if (++filled === size) return table;
      }
    }
  }
}

/** Throws ConfigError unless size is a prime in range with a slot for every backend. */
export function checkTableSize(size: number, backends: number): void {
  if (!Number.isInteger(size) || size < 3 || size > MAGLEV_MAX_TABLE_SIZE || !isPrime(size)) {
    throw new ConfigError(
      `maglev table size must be a prime 3-${MAGLEV_MAX_TABLE_SIZE}: got ${size}`,
      `the default is ${MAGLEV_TABLE_SIZE}; use a prime over 100 x the number of backends`,
    );
  }
  if (size < backends) {
    throw new ConfigError(`maglev table size ${size} is smaller than the ${backends} backends`);
  }
}

function isPrime(n: number): boolean {
  if (n % 2 === 0) return n === 2;
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
  return true;
}
