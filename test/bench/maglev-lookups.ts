// Maglev lookup speed: how many new clients per second pick() can place,
// and how long a table takes to build. Pure CPU, no root, not part of
// `npm test` (timings are machine-dependent, so nothing here can fail).
//
//   npm run build && node dist/test/bench/maglev-lookups.js [--backends 100] [--lookups 1000000]
import * as os from 'node:os';
import { parseArgs } from 'node:util';
import { Client, MAGLEV_TABLE_SIZE, WeightedBackend, createBalancer, parseBackend } from '../../src/balance/index';
import { clientHash } from '../../src/balance/hash';

const { values } = parseArgs({
  options: {
    backends: { type: 'string', default: '100' },
    lookups: { type: 'string', default: '1000000' },
    runs: { type: 'string', default: '5' },
  },
});
const BACKENDS = Number(values.backends);
const LOOKUPS = Number(values.lookups);
const RUNS = Number(values.runs);

/** Deterministic pseudo-random 32-bit values (mulberry32). */
function randoms(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let x = Math.imul(state ^ (state >>> 15), state | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return (x ^ (x >>> 14)) >>> 0;
  };
}

function v4Clients(count: number): Client[] {
  const next = randoms(1);
  return Array.from({ length: count }, () => {
    const x = next();
    return { address: `${x >>> 24}.${(x >>> 16) & 255}.${(x >>> 8) & 255}.${x & 255}`, family: 4 as const };
  });
}

function v6Clients(count: number): Client[] {
  const next = randoms(2);
  const group = () => (next() & 0xffff).toString(16);
  return Array.from({ length: count }, () => ({
    address: `2001:db8:${group()}:${group()}:${group()}:${group()}:${group()}:${group()}`,
    family: 6 as const,
  }));
}

function backendList(family: 4 | 6): WeightedBackend[] {
  return Array.from({ length: BACKENDS }, (_, i) =>
    parseBackend(family === 4 ? `10.0.${i >> 8}.${i & 255}:80` : `[2001:db8:ffff::${i.toString(16)}]:80`));
}

/** Best of RUNS: the least disturbed by GC and other processes. */
function perSecond(clients: readonly Client[], lookup: (client: Client) => unknown): number {
  let best = 0;
  for (let run = 0; run < RUNS; run++) {
    const start = process.hrtime.bigint();
    for (const client of clients) lookup(client);
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    best = Math.max(best, clients.length / seconds);
  }
  return best;
}

function buildMs(family: 4 | 6): number {
  const list = backendList(family);
  const start = process.hrtime.bigint();
  createBalancer('maglev', list);
  return Number(process.hrtime.bigint() - start) / 1e6;
}

function main(): void {
  console.log(`node ${process.version}, ${os.cpus()[0]?.model ?? 'unknown CPU'}`);
  console.log(`maglev, ${BACKENDS} backends, table ${MAGLEV_TABLE_SIZE}, ${LOOKUPS} distinct clients, best of ${RUNS}`);
  buildMs(4); // warm-up: the first build also compiles the fill loop
  console.log(`table build: ${buildMs(4).toFixed(1)} ms`);
  const down = createBalancer('maglev', backendList(4));
  const start = process.hrtime.bigint();
  down.setUp(down.backends[0], false);
  console.log(`one backend down (fallback table build): ${(Number(process.hrtime.bigint() - start) / 1e6).toFixed(1)} ms`);
  for (const [name, clients, family] of [
    ['IPv4', v4Clients(LOOKUPS), 4],
    ['IPv6', v6Clients(LOOKUPS), 6],
  ] as const) {
    const balancer = createBalancer('maglev', backendList(family));
    const hashes = perSecond(clients, (c) => clientHash(c.address));
    const picks = perSecond(clients, (c) => balancer.pick(c));
    console.log(`${name}: pick() ${fmt(picks)} lookups/s (of which hashing the address alone: ${fmt(hashes)}/s)`);
  }
}

function fmt(rate: number): string {
  return rate >= 1e6 ? `${(rate / 1e6).toFixed(2)}M` : `${(rate / 1e3).toFixed(0)}k`;
}

main();
