import t from 'tap';
import { Algorithm, Balancer, WeightedBackend, createBalancer, parseBackend } from '../../src/balance/index';

const client = { address: '192.0.2.7', family: 4 } as const;

function backends(...weights: number[]): WeightedBackend[] {
  return weights.map((w, i) => parseBackend(`198.51.100.${i + 1}:80,weight=${w}`));
}

/** pick() and onOpen() together, as the data path does. */
function open(balancer: Balancer): WeightedBackend {
  const backend = balancer.pick(client)!;
  balancer.onOpen(backend);
  return backend;
}

t.test('ties take turns', async (t) => {
  const [a, b, c] = backends(1, 1, 1);
  const balancer = createBalancer('leastconn', [a, b, c]);
  t.same([balancer.pick(client), balancer.pick(client), balancer.pick(client), balancer.pick(client)], [a, b, c, a]);
});

t.test('the fewest active connections wins', async (t) => {
  const [a, b, c] = backends(1, 1, 1);
  const balancer = createBalancer('leastconn', [a, b, c]);
  t.same([open(balancer), open(balancer), open(balancer)], [a, b, c]);
  balancer.onClose(b);
  t.equal(open(balancer), b, 'b is the only one with none');
  balancer.onClose(a);
  balancer.onClose(c);
  t.same([open(balancer), open(balancer)], [c, a], 'a and c tie: turns go on after b');
});

t.test('weighted: active/weight', async (t) => {
  const [light, heavy] = backends(1, 3);
  const balancer = createBalancer('leastconn', [light, heavy]);
  for (let i = 0; i < 40; i++) open(balancer);
  t.same(balancer.status().map((s) => s.active), [10, 30]);
});

/**
 * `arrivals` new connections per tick; a connection to backend i lasts
 * lengths[i] ticks (a slow backend holds its connections longer). Returns how
 * many connections each backend got and the most any had open at once.
 */
function simulate(algorithm: Algorithm, lengths: number[], arrivals: number, ticks: number) {
  const list = backends(...lengths.map(() => 1));
  const balancer = createBalancer(algorithm, list);
  const closing = new Map<number, WeightedBackend[]>();
  const opened = list.map(() => 0);
  let mostActive = 0;
  for (let tick = 0; tick < ticks; tick++) {
    for (const backend of closing.get(tick) ?? []) balancer.onClose(backend);
    closing.delete(tick);
    for (let n = 0; n < arrivals; n++) {
      const before = balancer.status();
      const backend = open(balancer);
      const i = list.indexOf(backend);
      const fewest = Math.min(...before.map((s) => s.active));
      if (algorithm === 'leastconn' && before[i].active !== fewest) throw new Error(`tick ${tick}: not the fewest`);
      opened[i]++;
      const end = tick + lengths[i];
      closing.set(end, [...(closing.get(end) ?? []), backend]);
    }
    mostActive = Math.max(mostActive, ...balancer.status().map((s) => s.active));
  }
  return { opened, mostActive };
}

t.test('uneven connection lengths: the slow backend gets fewer new ones', async (t) => {
  const lengths = [20, 5, 1];
  const least = simulate('leastconn', lengths, 3, 10_000);
  const rr = simulate('roundrobin', lengths, 3, 10_000);
  t.comment(`lengths ${lengths.join('/')} ticks, 3 new a tick: leastconn opened ${least.opened.join('/')}, most open at once ${least.mostActive}`);
  t.comment(`                                roundrobin opened ${rr.opened.join('/')}, most open at once ${rr.mostActive}`);
  t.ok(least.opened[0] < least.opened[1] && least.opened[1] < least.opened[2], 'shorter connections, more of them');
  t.ok(least.opened[2] > 3 * least.opened[0], 'the fast backend takes the bulk');
  t.ok(least.mostActive < rr.mostActive, 'fewer piled up than round robin');
  t.ok(least.mostActive <= 3, 'never more open on one backend than arrive in one tick');
});

t.test('down backends are skipped; counts survive health changes', async (t) => {
  const [a, b] = backends(1, 1);
  const balancer = createBalancer('leastconn', [a, b]);
  open(balancer);
  balancer.setUp(b, false);
  t.same([open(balancer), open(balancer)], [a, a]);
  balancer.setUp(b, true);
  t.same([open(balancer), open(balancer)], [b, b], 'b has none open');
  t.same(balancer.status().map((s) => s.active), [3, 2]);
});

t.test('a stray onClose does not go below zero', async (t) => {
  const [a, b] = backends(1, 1);
  const balancer = createBalancer('leastconn', [a, b]);
  balancer.onClose(a);
  t.equal(balancer.status()[0].active, 0);
  t.same([open(balancer), open(balancer)], [a, b], 'a is not preferred for it');
});
