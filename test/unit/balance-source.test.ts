import t from 'tap';
import { WeightedBackend, createBalancer, parseBackend } from '../../src/balance/index';

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

const four = (address: string, port?: number) => ({ address, family: 4 as const, port });
const list = [1, 2, 3, 4].map((i) => parseBackend(`198.51.100.${i}:80`));

t.test('one client, one backend, whatever its port', async (t) => {
  const balancer = createBalancer('source', list);
  const first = balancer.pick(four('192.0.2.7', 40000));
  for (let port = 40001; port < 40100; port++) t.equal(balancer.pick(four('192.0.2.7', port)), first);
  t.equal(balancer.pick({ address: '::ffff:192.0.2.7', family: 4 }), first, 'mapped form too');
});

t.test('hashPort spreads one client over backends', async (t) => {
  const balancer = createBalancer('source', list, { hashPort: true });
  const seen = new Set<WeightedBackend | undefined>();
  for (let port = 40000; port < 40100; port++) seen.add(balancer.pick(four('192.0.2.7', port)));
  t.equal(seen.size, list.length);
});

t.test('relay hosts agree whatever order they list the backends in', async (t) => {
  const one = createBalancer('source', list);
  const other = createBalancer('source', [...list].reverse().map((b) => parseBackend(`${b.endpoint.address}:80`)));
  const differ = clients(10_000).filter((c) => one.pick(four(c))!.endpoint.address !== other.pick(four(c))!.endpoint.address);
  t.equal(differ.length, 0);
});

t.test('clients spread by weight', async (t) => {
  const weighted = [1, 2, 5].map((w, i) => parseBackend(`198.51.100.${i + 1}:80,weight=${w}`));
  const balancer = createBalancer('source', weighted);
  const counts = new Map<WeightedBackend, number>();
  for (const c of clients(100_000)) {
    const b = balancer.pick(four(c))!;
    counts.set(b, (counts.get(b) ?? 0) + 1);
  }
  for (const b of weighted) {
    const share = counts.get(b)! / 100_000;
    t.comment(`weight ${b.weight}: ${(share * 100).toFixed(2)}% of 100,000 clients, expected ${((b.weight / 8) * 100).toFixed(2)}%`);
    t.ok(Math.abs(share - b.weight / 8) < 0.01, `weight ${b.weight} within 1 point`);
  }
});

t.test('a down backend is skipped; back up, its clients return', async (t) => {
  const balancer = createBalancer('source', list);
  const sample = clients(1000);
  const before = sample.map((c) => balancer.pick(four(c)));
  balancer.setUp(list[0], false);
  t.notOk(sample.some((c) => balancer.pick(four(c)) === list[0]));
  balancer.setUp(list[0], true);
  t.same(sample.map((c) => balancer.pick(four(c))), before);
});
