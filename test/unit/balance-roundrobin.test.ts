import t from 'tap';
import { WeightedBackend, createBalancer, parseBackend } from '../../src/balance/index';

const v4 = { address: '192.0.2.7', family: 4 } as const;
const v6 = { address: '2001:db8::7', family: 6 } as const;

function names(picks: (WeightedBackend | undefined)[]): string[] {
  return picks.map((b) => b?.endpoint.address.split('.').at(-1) ?? 'none');
}

t.test('smooth: weights 5,1,1 interleave as nginx does', async (t) => {
  const a = parseBackend('198.51.100.1:80,weight=5');
  const b = parseBackend('198.51.100.2:80');
  const c = parseBackend('198.51.100.3:80');
  const balancer = createBalancer('roundrobin', [a, b, c]);
  const picks = Array.from({ length: 14 }, () => balancer.pick(v4));
  t.same(names(picks), ['1', '1', '2', '1', '3', '1', '1', '1', '1', '2', '1', '3', '1', '1']);
});

t.test('10,000 picks follow the weights within a few percent', async (t) => {
  const weights = [1, 2, 3, 7];
  const backends = weights.map((w, i) => parseBackend(`198.51.100.${i + 1}:80,weight=${w}`));
  const balancer = createBalancer('roundrobin', backends);
  const counts = new Map<WeightedBackend, number>();
  for (let i = 0; i < 10_000; i++) {
    const b = balancer.pick(v4)!;
    counts.set(b, (counts.get(b) ?? 0) + 1);
  }
  const total = weights.reduce((x, y) => x + y);
  for (const b of backends) {
    const share = (counts.get(b) ?? 0) / 10_000;
    const expected = b.weight / total;
    t.comment(`weight ${b.weight}: ${(share * 100).toFixed(2)}% of picks, expected ${(expected * 100).toFixed(2)}%`);
    t.ok(Math.abs(share - expected) < 0.02, `weight ${b.weight} within 2 points`);
  }
});

t.test('equal weights take strict turns, within the client family', async (t) => {
  const a = parseBackend('198.51.100.1:80');
  const b = parseBackend('198.51.100.2:80');
  const six = parseBackend('[2001:db8::20]:80');
  const balancer = createBalancer('roundrobin', [a, six, b]);
  t.same(names([balancer.pick(v4), balancer.pick(v4), balancer.pick(v4), balancer.pick(v4)]), ['1', '2', '1', '2']);
  t.same([balancer.pick(v6), balancer.pick(v6)], [six, six]);
});

t.test('down backends are skipped, and rejoin when up', async (t) => {
  const backends = [1, 2, 3].map((i) => parseBackend(`198.51.100.${i}:80`));
  const balancer = createBalancer('roundrobin', backends);
  balancer.setUp(backends[1], false);
  t.same(names(Array.from({ length: 4 }, () => balancer.pick(v4))), ['1', '3', '1', '3']);
  balancer.setUp(backends[1], true);
  const picks = names(Array.from({ length: 6 }, () => balancer.pick(v4)));
  t.same([...picks].sort(), ['1', '1', '2', '2', '3', '3'], 'an even share again');
});
