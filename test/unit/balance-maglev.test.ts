import t from 'tap';
import {
  MAGLEV_TABLE_SIZE, WeightedBackend, createBalancer, maglevTableNames, parseBackend,
} from '../../src/balance/index';

/** Deterministic pseudo-random IPv4 clients (mulberry32), the same on every run. */
function clients(count: number, seed = 1): string[] {
  let state = seed;
  return Array.from({ length: count }, () => {
    state = (state + 0x6d2b79f5) | 0;
    let x = Math.imul(state ^ (state >>> 15), state | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    x = (x ^ (x >>> 14)) >>> 0;
    return `${x >>> 24}.${(x >>> 16) & 255}.${(x >>> 8) & 255}.${x & 255}`;
  });
}

function backends(count: number, weight = 1): WeightedBackend[] {
  return Array.from({ length: count }, (_, i) => parseBackend(`10.0.${i >> 8}.${i & 255}:80,weight=${weight}`));
}

/** Backend name per client. */
function assign(list: readonly WeightedBackend[], sample: readonly string[]): string[] {
  const balancer = createBalancer('maglev', list);
  return sample.map((address) => {
    const b = balancer.pick({ address, family: 4 })!;
    return `${b.endpoint.address}:${b.endpoint.port}`;
  });
}

function moved(before: readonly string[], after: readonly string[]): number {
  return before.filter((name, i) => after[i] !== name).length / before.length;
}

function shuffled<T>(list: readonly T[]): T[] {
  // A fixed reordering (reverse, then odd positions first): any order will do.
  const reversed = [...list].reverse();
  return [...reversed.filter((_, i) => i % 2 === 1), ...reversed.filter((_, i) => i % 2 === 0)];
}

const SAMPLE = clients(100_000);
const pct = (x: number) => `${(x * 100).toFixed(2)}%`;

t.test('two independent builds of one backend list make the same table, in any order', async (t) => {
  const list = backends(10);
  const table = maglevTableNames(list);
  t.equal(table.length, MAGLEV_TABLE_SIZE);
  t.same(maglevTableNames(shuffled(list)), table, 'listed in another order');
  const reparsed = list.map((b) => parseBackend(`${b.endpoint.address}:${b.endpoint.port}`));
  t.same(maglevTableNames(reparsed.reverse()), table, 'parsed again, reversed');
  t.same(assign(shuffled(list), SAMPLE), assign(list, SAMPLE), 'and so pick the same for every client');
});

t.test('the table is shared by weight', async (t) => {
  const even = counts(maglevTableNames(backends(10)));
  t.comment(`10 backends, weight 1: ${Math.min(...even)}-${Math.max(...even)} slots each of ${MAGLEV_TABLE_SIZE}`);
  t.ok(Math.max(...even) - Math.min(...even) <= 1, 'within one slot');
  const weights = [1, 2, 3, 10];
  const list = weights.map((w, i) => parseBackend(`10.0.0.${i + 1}:80,weight=${w}`));
  const uneven = counts(maglevTableNames(list));
  weights.forEach((w, i) => {
    const share = uneven[i] / MAGLEV_TABLE_SIZE;
    t.comment(`weight ${w}: ${pct(share)} of the table, expected ${pct(w / 16)}`);
    t.ok(Math.abs(share - w / 16) < 0.005, `weight ${w} within half a point`);
  });
});

function counts(table: readonly string[]): number[] {
  const byName = new Map<string, number>();
  for (const name of table) byName.set(name, (byName.get(name) ?? 0) + 1);
  return [...byName.keys()].sort().map((name) => byName.get(name)!);
}

t.test('adding or removing one of N backends moves close to 1/N of the clients', async (t) => {
  for (const n of [5, 10, 50, 100]) {
    const all = backends(n + 1);
    const base = assign(all.slice(0, n), SAMPLE);
    const added = moved(base, assign(all, SAMPLE));
    // Remove each of three backends in turn: the disruption varies a little with which.
    for (const removedIndex of [0, Math.floor(n / 2), n - 1]) {
      const gone = `${all[removedIndex].endpoint.address}:80`;
      const after = assign(all.slice(0, n).filter((_, i) => i !== removedIndex), SAMPLE);
      const removed = moved(base, after);
      const collateral = base.filter((name, i) => name !== gone && after[i] !== name).length / SAMPLE.length;
      t.comment(`N=${n} remove ${gone}: ${pct(removed)} of 100,000 clients moved (ideal ${pct(1 / n)}; ${pct(collateral)} were not its clients)`);
      t.ok(removed >= 0.8 / n && removed <= 1 / n + 0.01, `N=${n}: removing one moves ${pct(removed)}, within 1 point of 1/N`);
    }
    t.comment(`N=${n} add one: ${pct(added)} of 100,000 clients moved (ideal ${pct(1 / (n + 1))})`);
    t.ok(added >= 0.8 / (n + 1) && added <= 1 / (n + 1) + 0.01, `N=${n}: adding one moves ${pct(added)}, within 1 point of 1/(N+1)`);
  }
});

t.test('a backend marked down moves only its own clients, and they come back', async (t) => {
  for (const n of [10, 100]) {
    const list = backends(n);
    const balancer = createBalancer('maglev', list);
    const pick = (address: string) => balancer.pick({ address, family: 4 })!;
    const before = SAMPLE.map(pick);
    balancer.setUp(list[3], false);
    const during = SAMPLE.map(pick);
    const movedShare = before.filter((b, i) => during[i] !== b).length / SAMPLE.length;
    const strays = before.filter((b, i) => b !== list[3] && during[i] !== b).length;
    t.comment(`N=${n} one down: ${pct(movedShare)} of 100,000 clients moved (ideal ${pct(1 / n)}); ${strays} of other backends' clients moved`);
    t.equal(strays, 0, `N=${n}: no client of a healthy backend moved`);
    t.notOk(during.includes(list[3]), 'none is sent to the down backend');
    balancer.setUp(list[3], true);
    t.same(SAMPLE.map(pick), before, 'back up: every client is where it was');
  }
});

t.test('several down: still only their clients move, spread over the rest', async (t) => {
  const list = backends(10);
  const balancer = createBalancer('maglev', list);
  const pick = (address: string) => balancer.pick({ address, family: 4 })!;
  const before = SAMPLE.map(pick);
  const down = new Set([list[1], list[4], list[7]]);
  for (const b of down) balancer.setUp(b, false);
  const during = SAMPLE.map(pick);
  t.equal(before.filter((b, i) => !down.has(b) && during[i] !== b).length, 0);
  const load = list.filter((b) => !down.has(b)).map((b) => during.filter((x) => x === b).length / SAMPLE.length);
  t.comment(`3 of 10 down: the 7 others serve ${load.map(pct).join(' ')}`);
  t.ok(load.every((share) => Math.abs(share - 1 / 7) < 0.01), 'each near 1/7');
  for (const b of list) balancer.setUp(b, false);
  t.equal(balancer.pick({ address: '192.0.2.7', family: 4 }), undefined, 'none up: undefined');
});

t.test('the key is the client address, or address and port with hashPort', async (t) => {
  const list = backends(10);
  const plain = createBalancer('maglev', list);
  const first = plain.pick({ address: '192.0.2.7', family: 4, port: 1 });
  for (let port = 2; port < 100; port++) t.equal(plain.pick({ address: '192.0.2.7', family: 4, port }), first);
  const perPort = createBalancer('maglev', list, { hashPort: true });
  const seen = new Set<WeightedBackend | undefined>();
  for (let port = 1; port < 100; port++) seen.add(perPort.pick({ address: '192.0.2.7', family: 4, port }));
  t.ok(seen.size > 5, `hashPort: 99 ports of one client reach ${seen.size} of 10 backends`);
});

t.test('table size: a prime, in range, and the choice of the operator', async (t) => {
  const list = backends(3);
  t.equal(maglevTableNames(list, 251).length, 251);
  t.ok(createBalancer('maglev', list, { maglevTableSize: 251 }).pick({ address: '192.0.2.7', family: 4 }));
  for (const size of [65536, 1, 2_000_003, 1.5]) {
    t.throws(() => createBalancer('maglev', list, { maglevTableSize: size }), {
      name: 'ConfigError',
      message: /maglev table size must be a prime/,
    }, String(size));
  }
  t.throws(() => maglevTableNames(backends(5), 3), /smaller than the 5 backends/);
});
