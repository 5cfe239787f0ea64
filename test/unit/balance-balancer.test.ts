import t from 'tap';
import { parseEndpoint } from '../../src/addr';
import { ALGORITHMS, createBalancer, parseBackend } from '../../src/balance/index';

const a4 = parseBackend('198.51.100.20:80');
const b4 = parseBackend('198.51.100.21:80,weight=2');
const a6 = parseBackend('[2001:db8::20]:80');
const v4 = { address: '192.0.2.7', family: 4 } as const;
const v6 = { address: '2001:db8::7', family: 6 } as const;

for (const algorithm of ALGORITHMS) {
  t.test(`${algorithm}: the client's own family first`, async (t) => {
    const balancer = createBalancer(algorithm, [a4, a6, b4]);
    for (let i = 0; i < 20; i++) {
      t.not(balancer.pick(v4), a6);
      t.equal(balancer.pick(v6), a6);
    }
  });

  t.test(`${algorithm}: the other family only when none of the client's is up`, async (t) => {
    const balancer = createBalancer(algorithm, [a4, a6, b4]);
    balancer.setUp(a6, false);
    t.not(balancer.pick(v6), undefined, 'an IPv4 backend for an IPv6 client');
    t.not(balancer.pick(v6), a6);
    balancer.setUp(a4, false);
    balancer.setUp(b4, false);
    t.equal(balancer.pick(v6), undefined, 'none up at all');
    t.equal(balancer.pick(v4), undefined);
    balancer.setUp(a6, true);
    t.equal(balancer.pick(v4), a6, 'an IPv6 backend for an IPv4 client');
  });

  t.test(`${algorithm}: a family without backends is served by the other`, async (t) => {
    const balancer = createBalancer(algorithm, [a4, b4]);
    t.ok([a4, b4].includes(balancer.pick(v6)!));
  });
}

t.test('backends are told apart by ADDR:PORT, not by object', async (t) => {
  const balancer = createBalancer('roundrobin', [a4, b4]);
  balancer.setUp(parseBackend('198.51.100.20:80'), false);
  balancer.onOpen(parseBackend('198.51.100.21:80,weight=2'));
  t.same(balancer.status(), [
    { backend: a4, up: false, active: 0 },
    { backend: b4, up: true, active: 1 },
  ]);
  balancer.setUp(parseEndpoint('198.51.100.20:80'), true);
  t.equal(balancer.status()[0].up, true, 'or by its endpoint alone, as the health checker knows it');
  t.throws(() => balancer.setUp(parseBackend('198.51.100.99:80'), false), /not a backend of this balancer: 198\.51\.100\.99:80/);
  t.doesNotThrow(() => balancer.onClose(a6), 'a connection ending on a backend a reload removed is ignored');
  t.same(balancer.status().map((s) => s.active), [0, 1], 'and counts nowhere');
});

t.test('a reload: the new balancer inherits up/down and open connections of the backends both have', async (t) => {
  const old = createBalancer('roundrobin', [a4, b4]);
  old.setUp(a4, false);
  old.onOpen(b4);
  old.onOpen(b4);
  const c4 = parseBackend('198.51.100.22:80');
  // Parsed again from the new configuration: other objects, the same names.
  const next = createBalancer('leastconn', [parseBackend('198.51.100.20:80'), parseBackend('198.51.100.21:80,weight=2'), c4]);
  next.inherit(old);
  t.same(next.status().map((s) => [s.up, s.active]), [[false, 0], [true, 2], [true, 0]]);
  t.equal(next.pick({ address: '192.0.2.2', family: 4 }), next.backends[2], 'leastconn counts the connections opened before the reload');
  next.onClose(b4); // an old connection ends, with the old config's object
  t.equal(next.status()[1].active, 1, 'found by name');
});

t.test('setUp is idempotent and counts survive it', async (t) => {
  const balancer = createBalancer('maglev', [a4, b4]);
  balancer.onOpen(a4);
  balancer.setUp(a4, false);
  balancer.setUp(a4, false);
  t.same(balancer.status()[0], { backend: a4, up: false, active: 1 });
  balancer.onClose(a4);
  t.equal(balancer.status()[0].active, 0, 'a connection to a down backend still closes');
});

t.test('configuration errors', async (t) => {
  t.throws(() => createBalancer('roundrobin', []), { name: 'ConfigError', message: 'at least one backend is needed' });
  t.throws(() => createBalancer('source', [a4, parseBackend('198.51.100.20:80,weight=3')]), {
    name: 'ConfigError',
    message: 'backend 198.51.100.20:80 is listed twice',
  });
});

t.test('backends keeps the order given', async (t) => {
  const balancer = createBalancer('maglev', [b4, a6, a4]);
  t.same(balancer.backends, [b4, a6, a4]);
  t.equal(balancer.algorithm, 'maglev');
});

t.test('pickOther: another backend of the client\'s family, else of the other family unless told not to', async (t) => {
  const balancer = createBalancer('roundrobin', [a4, b4, a6]);
  t.equal(balancer.pickOther(v4, a4), b4, 'the other IPv4 backend');
  t.equal(balancer.pickOther(v4, a4, true), b4, 'the same with ownFamilyOnly');
  balancer.setUp(b4, false);
  t.equal(balancer.pickOther(v4, a4), a6, 'across families when none of its own is left');
  t.equal(balancer.pickOther(v4, a4, true), undefined, 'never across families with ownFamilyOnly (--on-family-mismatch reject)');
  t.equal(balancer.pickOther(v6, a6), a4, 'an IPv6 client may go to IPv4');
  t.equal(balancer.pickOther(v6, a6, true), undefined, 'but not with ownFamilyOnly');
});
