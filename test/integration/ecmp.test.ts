// Scale-out: a router spreads flows over two relay hosts with an ECMP
// multipath route (L4 hash). Both relays run maglev over the same backend
// list, so each client reaches the backend maglev predicts whichever relay
// carried it, and still does when one relay is withdrawn from the route.
import t from 'tap';
import { Lab, Namespace } from '../../src/lab/netns';
import { applyRelayRoutes, startRelay } from '../../src/lab/topology';
import { startNginxHttp } from '../../src/lab/peers';
import { createBalancer, parseBackend } from '../../src/balance';
import { canRunLab, SKIP_REASON, eventually, relayLogs } from './lab-fixture';

const VIP = '203.0.113.100';
const BACKENDS = ['198.51.100.20', '198.51.100.21', '198.51.100.22', '198.51.100.23'];
const CLIENTS = Array.from({ length: 40 }, (_, i) => `192.0.2.${10 + i}`);

interface EcmpLab {
  lab: Lab;
  client: Namespace;
  router: Namespace;
  relays: Namespace[];
  backend: Namespace;
}

function buildEcmpLab(lab: Lab): EcmpLab {
  const client = lab.addNamespace('client');
  const router = lab.addNamespace('router');
  const relays = [lab.addNamespace('relay1'), lab.addNamespace('relay2')];
  const backend = lab.addNamespace('backend');

  lab.link(client, 'eth0', router, 'eth-client');
  client.ip('addr', 'add', '192.0.2.2/24', 'dev', 'eth0');
  for (const address of CLIENTS) client.ip('addr', 'add', `${address}/24`, 'dev', 'eth0');
  client.ip('route', 'add', 'default', 'via', '192.0.2.1');
  router.ip('addr', 'add', '192.0.2.1/24', 'dev', 'eth-client');
  router.run('sysctl', '-qw', 'net.ipv4.ip_forward=1');
  // Hash on the 5-tuple, as an ECMP router in front of relay hosts would.
  router.run('sysctl', '-qw', 'net.ipv4.fib_multipath_hash_policy=1');

  relays.forEach((relay, i) => {
    const n = i + 1;
    const [routerSide, relaySide] = [`203.0.113.${4 * i + 1}`, `203.0.113.${4 * i + 2}`];
    lab.link(router, `eth-r${n}`, relay, 'eth-router');
    router.ip('addr', 'add', `${routerSide}/30`, 'dev', `eth-r${n}`);
    relay.ip('addr', 'add', `${relaySide}/30`, 'dev', 'eth-router');
    relay.ip('addr', 'add', `${VIP}/32`, 'dev', 'lo');
    relay.ip('route', 'add', 'default', 'via', routerSide);

    const [relayBack, backendSide] = [`198.51.100.${4 * i + 1}`, `198.51.100.${4 * i + 2}`];
    lab.link(relay, 'eth-backend', backend, `eth-r${n}`);
    relay.ip('addr', 'add', `${relayBack}/30`, 'dev', 'eth-backend');
    backend.ip('addr', 'add', `${backendSide}/30`, 'dev', `eth-r${n}`);
    relay.ip('route', 'add', '198.51.100.16/28', 'via', backendSide);
    // The backend's return path: replies leave towards the relay the flow came in from
    // (connection mark by arrival interface, then a route per mark).
    backend.ip('rule', 'add', 'fwmark', String(n), 'lookup', String(100 + n));
    backend.ip('route', 'add', 'default', 'via', relayBack, 'table', String(100 + n));
    applyRelayRoutes(relay);
  });
  router.ip('route', 'add', `${VIP}/32`, 'nexthop', 'via', '203.0.113.2', 'nexthop', 'via', '203.0.113.6');
  for (const address of BACKENDS) backend.ip('addr', 'add', `${address}/32`, 'dev', 'lo');
  // Some route to the clients must exist for the first lookup; the output hook
  // then re-marks the reply and it is routed again, by its connection's mark.
  backend.ip('route', 'add', 'default', 'via', '198.51.100.1');
  backend.run('nft', [
    'table inet connmark {',
    '  chain in { type filter hook prerouting priority mangle; iifname "eth-r1" ct mark set 1; iifname "eth-r2" ct mark set 2; }',
    '  chain out { type route hook output priority mangle; meta mark set ct mark; }',
    '}',
  ].join('\n'));
  return { lab, client, router, relays, backend };
}

t.test('two relays behind ECMP agree on every client\'s backend', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const lab = new Lab(`rtecmp${process.pid % 100000}`);
  t.teardown(() => lab.teardown());
  const net = buildEcmpLab(lab);
  const nginx = await startNginxHttp(lab, net.backend, BACKENDS, 7000);
  const backendArgs = BACKENDS.flatMap((a) => ['--backend', `${a}:7000`]);
  const relayProcs = await Promise.all(net.relays.map((ns) =>
    startRelay(lab, ns, ['--listen', `${VIP}:80`, ...backendArgs, '--balance', 'maglev', '--health-interval', '0'])));
  const predictor = createBalancer('maglev', BACKENDS.map((a) => parseBackend(`${a}:7000`)));
  const predicted = (client: string) => predictor.pick({ address: client, family: 4 })!.endpoint.address;

  /** Each client fetches once per source port; returns what the backend logged, by request path. */
  const round = async (tag: string, portsPerClient: number) => {
    for (const client of CLIENTS) {
      for (let p = 0; p < portsPerClient; p++) {
        net.client.run('curl', '-sS', '--max-time', '5', '--interface', client, `http://${VIP}/${tag}/${client}/${p}`);
      }
    }
    return eventually(() => {
      const lines = nginx.accessLog().filter((l) => l.includes(`GET /${tag}/`));
      return lines.length === CLIENTS.length * portsPerClient ? lines : undefined;
    }, 5000, `all ${tag} requests in the access log`);
  };
  const check = (t: { equal: (a: unknown, b: unknown, m: string) => void }, lines: string[]) => {
    let matches = 0;
    for (const line of lines) {
      const [remote, , , path, , server] = line.split(' ');
      const client = path.split('/')[2];
      if (remote === client && server === predicted(client)) matches++;
    }
    t.equal(matches, lines.length, `${matches}/${lines.length} flows kept the client's address and reached maglev's backend`);
  };

  t.test('both relays carry flows; every flow lands where maglev predicts', async (t) => {
    check(t, await round('before', 3));
    // relay batches its log lines: wait for all 120 to be written.
    const carried = await eventually(() => {
      const counts = relayProcs.map((p) => relayLogs(p, 'connection closed').length);
      return counts[0] + counts[1] === CLIENTS.length * 3 ? counts : undefined;
    }, 3000, 'one log line per flow');
    t.ok(carried.every((n) => n > 0), `flows carried per relay: ${carried.join(', ')}`);
    t.ok(new Set(CLIENTS.map(predicted)).size === BACKENDS.length, 'the clients spread over all four backends');
  });

  t.test('relay1 withdrawn from the route: its flows move to relay2, same backends', async (t) => {
    net.router.ip('route', 'replace', `${VIP}/32`, 'via', '203.0.113.6');
    await relayProcs[0].stop();
    const before = relayLogs(relayProcs[1], 'connection closed').length;
    check(t, await round('after', 1));
    await eventually(() => relayLogs(relayProcs[1], 'connection closed').length - before === CLIENTS.length || undefined,
      3000, 'relay2 carried all of them');
    t.pass('relay2 carried all of them');
  });
});
