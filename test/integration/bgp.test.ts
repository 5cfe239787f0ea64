// Scale-out on a real routing daemon: three relay hosts each run BIRD 2 with
// the configuration and announce script from docs/examples/ (addresses filled
// in, nothing else changed) and announce the VIP (/32 and /128) to a router
// running BIRD, which installs one ECMP route with an L4 hash. Flows spread
// over the hosts and reach maglev's backend; a relay stopped the documented
// way (withdraw, hold, SIGTERM) is out of the route before it drains, with no
// refused connection; a relay killed outright is withdrawn within the bound.
import t from 'tap';
import type { Test } from 'tap';
import * as fs from 'node:fs';
import { Lab, Namespace, SpawnedProcess } from '../../src/lab/netns';
import { applyRelayRoutes, startRelay } from '../../src/lab/topology';
import { startNginxHttp, NginxBackend } from '../../src/lab/peers';
import { Bird, nextHops, relayVipEnv, relayVipScript, renderExample, startBird } from '../../src/lab/bgp';
import { createBalancer, parseBackend } from '../../src/balance';
import { formatEndpoint } from '../../src/addr';
import { relayPid, fdCount, settleFds } from '../torture/harness';
import { canRunLab, SKIP_REASON, eventually, relayLogs } from './lab-fixture';

const VIP4 = '203.0.113.100';
const VIP6 = '2001:db8:64::100';
const HOSTS = 3;
const BACKENDS4 = ['198.51.100.20', '198.51.100.21', '198.51.100.22', '198.51.100.23'];
const BACKENDS6 = ['2001:db8:51:ff::20', '2001:db8:51:ff::21', '2001:db8:51:ff::22', '2001:db8:51:ff::23'];
const CLIENTS4 = Array.from({ length: 40 }, (_, i) => `192.0.2.${10 + i}`);
const CLIENTS6 = Array.from({ length: 20 }, (_, i) => `2001:db8:2::${(0x10 + i).toString(16)}`);
// relay-vip.sh's defaults: checks every second, holds 2 s after withdrawing.
// The documented bound for a relay that dies: one interval plus two seconds
// (birdc and the BGP update take milliseconds; the rest is slack for a loaded host).
const KILL_BOUND_MS = 3000;

/** The router's and host i's addresses on their link (i from 0). */
const routerSide = (i: number) => ({ v4: `203.0.113.${4 * i + 1}`, v6: `2001:db8:113:${i + 1}::1` });
const hostSide = (i: number) => ({ v4: `203.0.113.${4 * i + 2}`, v6: `2001:db8:113:${i + 1}::2` });

interface Host { ns: Namespace; bird: Bird; relay: SpawnedProcess; watcher: SpawnedProcess; env: NodeJS.ProcessEnv }

function buildNetwork(lab: Lab) {
  const client = lab.addNamespace('client');
  const router = lab.addNamespace('router');
  const hosts = Array.from({ length: HOSTS }, (_, i) => lab.addNamespace(`host${i + 1}`));
  const backend = lab.addNamespace('backend');

  lab.link(client, 'eth0', router, 'eth-client');
  client.ip('addr', 'add', '192.0.2.2/24', 'dev', 'eth0');
  for (const a of CLIENTS4) client.ip('addr', 'add', `${a}/24`, 'dev', 'eth0');
  for (const a of CLIENTS6) client.ip('-6', 'addr', 'add', `${a}/64`, 'dev', 'eth0', 'nodad');
  client.ip('route', 'add', 'default', 'via', '192.0.2.1');
  client.ip('-6', 'route', 'add', 'default', 'via', '2001:db8:2::1');
  router.ip('addr', 'add', '192.0.2.1/24', 'dev', 'eth-client');
  router.ip('-6', 'addr', 'add', '2001:db8:2::1/64', 'dev', 'eth-client', 'nodad');
  router.run('sysctl', '-qw', 'net.ipv4.ip_forward=1');
  router.run('sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1');
  // Hash on the 5-tuple, in the router's namespace only.
  router.run('sysctl', '-qw', 'net.ipv4.fib_multipath_hash_policy=1');
  router.run('sysctl', '-qw', 'net.ipv6.fib_multipath_hash_policy=1');

  const nft: string[] = [];
  hosts.forEach((host, i) => {
    const n = i + 1;
    lab.link(router, `eth-h${n}`, host, 'eth-router');
    router.ip('addr', 'add', `${routerSide(i).v4}/30`, 'dev', `eth-h${n}`);
    router.ip('-6', 'addr', 'add', `${routerSide(i).v6}/64`, 'dev', `eth-h${n}`, 'nodad');
    host.ip('addr', 'add', `${hostSide(i).v4}/30`, 'dev', 'eth-router');
    host.ip('-6', 'addr', 'add', `${hostSide(i).v6}/64`, 'dev', 'eth-router', 'nodad');
    host.ip('addr', 'add', `${VIP4}/32`, 'dev', 'lo');
    host.ip('-6', 'addr', 'add', `${VIP6}/128`, 'dev', 'lo', 'nodad');
    host.ip('route', 'add', 'default', 'via', routerSide(i).v4);
    host.ip('-6', 'route', 'add', 'default', 'via', routerSide(i).v6);

    const [back4, backend4] = [`198.51.100.${4 * i + 1}`, `198.51.100.${4 * i + 2}`];
    const [back6, backend6] = [`2001:db8:51:${n}::1`, `2001:db8:51:${n}::2`];
    lab.link(host, 'eth-backend', backend, `eth-h${n}`);
    host.ip('addr', 'add', `${back4}/30`, 'dev', 'eth-backend');
    host.ip('-6', 'addr', 'add', `${back6}/64`, 'dev', 'eth-backend', 'nodad');
    backend.ip('addr', 'add', `${backend4}/30`, 'dev', `eth-h${n}`);
    backend.ip('-6', 'addr', 'add', `${backend6}/64`, 'dev', `eth-h${n}`, 'nodad');
    host.ip('route', 'add', '198.51.100.16/28', 'via', backend4);
    host.ip('-6', 'route', 'add', '2001:db8:51:ff::/64', 'via', backend6);
    // The backend's return path (scale-out.md): connection mark by arrival interface, a table per mark.
    for (const [family, via] of [['-4', back4], ['-6', back6]] as const) {
      backend.ip(family, 'rule', 'add', 'fwmark', String(n), 'lookup', String(100 + n));
      backend.ip(family, 'route', 'add', 'default', 'via', via, 'table', String(100 + n));
    }
    nft.push(`iifname "eth-h${n}" ct mark set ${n};`);
    applyRelayRoutes(host);
  });
  for (const a of BACKENDS4) backend.ip('addr', 'add', `${a}/32`, 'dev', 'lo');
  for (const a of BACKENDS6) backend.ip('-6', 'addr', 'add', `${a}/128`, 'dev', 'lo', 'nodad');
  backend.ip('route', 'add', 'default', 'via', '198.51.100.1');
  backend.ip('-6', 'route', 'add', 'default', 'via', '2001:db8:51:1::1');
  backend.run('nft', [
    'table inet connmark {',
    `  chain in { type filter hook prerouting priority mangle; ${nft.join(' ')} }`,
    '  chain out { type route hook output priority mangle; meta mark set ct mark; }',
    '}',
  ].join('\n'));
  return { client, router, hosts, backend };
}

const ADDRESSES = { VIP4, VIP6, ROUTER4: '192.0.2.1', HOSTS4: '203.0.113.0/26', HOSTS6: '2001:db8:113::/56' };

async function startHost(lab: Lab, ns: Namespace, i: number, relayArgs: string[]): Promise<Host> {
  const config = renderExample('bird-relay-host.conf', {
    ...ADDRESSES, LOCAL4: hostSide(i).v4, LOCAL6: hostSide(i).v6, ROUTER4: routerSide(i).v4, ROUTER6: routerSide(i).v6,
  });
  const bird = await startBird(lab, ns, `host${i + 1}`, config);
  const relay = await startRelay(lab, ns, relayArgs);
  // Hosts 1 and 2 follow relay's /healthz (the way the docs set up); host 3,
  // the fallback for a relay without an admin API: its listening socket.
  const env = relayVipEnv(lab, bird, 80, i < 2 ? `http://${ADMIN}/healthz` : '');
  const watcher = lab.spawn(ns, [relayVipScript(), 'watch'], env);
  return { ns, bird, relay, watcher, env };
}

/** relay's admin address on every host (each in its own namespace), as in docs/scale-out.md. */
const ADMIN = '127.0.0.1:9901';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('relay hosts announced over BGP by BIRD, withdrawn before they drain', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const lab = new Lab(`rtbgp${process.pid % 100000}`);
  t.teardown(() => lab.teardown());
  const net = buildNetwork(lab);
  const nginx: NginxBackend = await startNginxHttp(lab, net.backend, [...BACKENDS4, ...BACKENDS6], 7000);
  await startBird(lab, net.router, 'router', renderExample('bird-router.conf', ADDRESSES));
  // --idle-timeout: when host1 leaves, plain ECMP also moves some flows
  // between the hosts that stay (docs/scale-out.md). A connection moved off
  // host2 mid-close leaves host2's relay a socket whose client now talks to
  // host3 (CI saw 2 fds held past the 15 s settle). The idle timeout reaps
  // it, so the fd checks can still demand the exact baseline.
  const relayArgs = ['--listen', `${VIP4}:80`, '--listen', formatEndpoint(VIP6, 80), '--balance', 'maglev',
    '--health-interval', '0', '--drain-timeout', '5s', '--idle-timeout', '3s', '--admin', ADMIN,
    ...[...BACKENDS4, ...BACKENDS6].flatMap((a) => ['--backend', formatEndpoint(a, 7000)])];
  const hosts = await Promise.all(net.hosts.map((ns, i) => startHost(lab, ns, i, relayArgs)));
  /** The router's routes when exactly these hosts (indexes) announce. */
  const via = (...indexes: number[]) => ({ v4: indexes.map((i) => hostSide(i).v4).sort(), v6: indexes.map((i) => hostSide(i).v6).sort() });
  const hops = () => ({ v4: nextHops(net.router, `${VIP4}/32`), v6: nextHops(net.router, `${VIP6}/128`) });
  const started = Date.now();
  await eventually(() => {
    const h = hops();
    return JSON.stringify(h) === JSON.stringify(via(0, 1, 2)) || undefined;
  }, 15_000, 'the router\'s ECMP routes over all three hosts');
  t.pass(`the router installed both ECMP routes over ${HOSTS} hosts ${Date.now() - started} ms after the relays listened`);

  // Every relay's fds, before any client connected: they must come back there.
  const fdsBefore = hosts.map((h) => fdCount(relayPid(h.relay)));
  const checkFds = async (t: Test, i: number) => {
    const pid = relayPid(hosts[i].relay);
    t.equal(await settleFds(pid, fdsBefore[i], 0), fdsBefore[i], `relay on host${i + 1}: its fds are back where they were`);
  };
  const predictor = createBalancer('maglev', [...BACKENDS4, ...BACKENDS6].map((a) => parseBackend(formatEndpoint(a, 7000))));
  const predicted = (client: string) => predictor.pick({ address: client, family: client.includes(':') ? 6 : 4 })!.endpoint.address;
  const url = (client: string, path: string) => `http://${client.includes(':') ? `[${VIP6}]` : VIP4}/${path}`;
  const carried = () => hosts.map((h) => relayLogs(h.relay, 'connection closed').length);
  /** carried() once relay's batched log lines (from earlier connections too) stop coming: unchanged for 300 ms. */
  const settledCarried = async () => {
    let last = carried();
    for (let i = 0; i < 20; i++) {
      await sleep(300);
      const now = carried();
      if (now.join() === last.join()) return now;
      last = now;
    }
    throw new Error('relay log lines still coming after 6 s');
  };

  /** Each client fetches once per source port; checks what nginx logged; returns the flows each relay carried. */
  const round = async (t: Test, tag: string, clients: string[], portsPerClient: number) => {
    const before = await settledCarried();
    for (const client of clients) {
      for (let p = 0; p < portsPerClient; p++) {
        net.client.run('curl', '-sS', '--max-time', '5', '--interface', client, url(client, `${tag}/${client}/${p}`));
      }
    }
    const total = clients.length * portsPerClient;
    const lines = await eventually(() => {
      const found = nginx.accessLog().filter((l) => l.includes(`GET /${tag}/`));
      return found.length === total ? found : undefined;
    }, 5000, `all ${tag} requests in the access log`);
    const matches = lines.filter((line) => {
      const [remote, , , path, , server] = line.split(' ');
      const client = path.split('/')[2];
      return remote === client && server === predicted(client);
    }).length;
    t.equal(matches, total, `${tag}: ${matches}/${total} flows kept the client's address and reached maglev's backend`);
    // relay batches its log lines: wait until every flow has its line.
    return eventually(() => {
      const delta = carried().map((n, i) => n - before[i]);
      return delta.reduce((a, b) => a + b, 0) === total ? delta : undefined;
    }, 3000, `one relay log line per ${tag} flow`);
  };

  t.test('flows from many client ports spread over the three hosts, IPv4 and IPv6', async (t) => {
    const spread4 = await round(t, 'v4', CLIENTS4, 3);
    t.ok(spread4.every((n) => n > 0), `IPv4 flows carried per host: ${spread4.join(', ')}`);
    const spread6 = await round(t, 'v6', CLIENTS6, 3);
    t.ok(spread6.every((n) => n > 0), `IPv6 flows carried per host: ${spread6.join(', ')}`);
  });

  t.test('stopped as documented (withdraw, hold, SIGTERM): out of the route before it drains, nothing refused', async (t) => {
    const [host1] = hosts;
    const load = backgroundLoad(lab, net.client, url);
    await sleep(500);
    const withdrawStart = Date.now();
    const withdraw = lab.spawn(host1.ns, [relayVipScript(), 'withdraw'], host1.env);
    const converged = await eventually(() => {
      const h = hops();
      return !h.v4.includes(hostSide(0).v4) && !h.v6.includes(hostSide(0).v6) ? Date.now() : undefined;
    }, 5000, 'host1 out of the router\'s routes');
    t.pass(`the router took host1 out ${converged - withdrawStart} ms after the withdrawal began (IPv4 and IPv6)`);
    await withdraw.exited(10_000);
    const held = Date.now() - withdrawStart;
    t.same(hops(), via(1, 2), `the routes still exclude host1 after the hold-down (${held} ms), when relay gets SIGTERM`);
    t.equal(await host1.relay.stop('SIGTERM'), 0, 'relay on host1 drained and exited 0');
    await sleep(1500); // the watcher sees relay gone: it must not announce again
    t.same(hops(), via(1, 2), 'host1 stays withdrawn after relay stopped');
    const results = await load.finish();
    const after = results.filter((r) => r.at > converged);
    t.ok(after.length > 20, `${after.length} connections opened after the router converged`);
    t.same(after.filter((r) => r.code !== '200'), [], 'none of them refused or failed');
    const during = results.filter((r) => r.at <= converged);
    t.comment(`during the withdrawal: ${during.filter((r) => r.code !== '200').length} of ${during.length} connections failed`);
    const moved4 = await round(t, 'after-term-v4', CLIENTS4, 1);
    t.equal(moved4[0], 0, `host1's IPv4 flows went to the others: ${moved4.join(', ')}`);
    const moved6 = await round(t, 'after-term-v6', CLIENTS6, 1);
    t.equal(moved6[0], 0, `host1's IPv6 flows went to the others: ${moved6.join(', ')}`);
    await checkFds(t, 1);
  });

  t.test('a hung relay (SIGSTOP) is withdrawn by its /healthz, and announced again once it answers', async (t) => {
    const host2 = hosts[1];
    const pid = relayPid(host2.relay);
    const stoppedAt = Date.now();
    process.kill(pid, 'SIGSTOP');
    try {
      const withdrawnAt = await eventually(() => {
        const h = hops();
        return !h.v4.includes(hostSide(1).v4) && !h.v6.includes(hostSide(1).v6) ? Date.now() : undefined;
      }, 10_000, 'host2 out of the router\'s routes while its relay is stopped');
      t.ok(withdrawnAt - stoppedAt <= KILL_BOUND_MS, `host2 withdrawn ${withdrawnAt - stoppedAt} ms after SIGSTOP (bound ${KILL_BOUND_MS} ms), though it kept its socket`);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await eventually(() => {
      const h = hops();
      return JSON.stringify(h) === JSON.stringify(via(1, 2)) || undefined;
    }, 10_000, 'host2 back in the router\'s routes once its relay runs again');
    t.pass('host2 announced again once /healthz answered');
  });

  t.test('a relay killed outright (SIGKILL) is withdrawn within the bound', async (t) => {
    const host2 = hosts[1];
    const killedAt = Date.now();
    await host2.relay.stop('SIGKILL');
    const withdrawnAt = await eventually(() => {
      const h = hops();
      return !h.v4.includes(hostSide(1).v4) && !h.v6.includes(hostSide(1).v6) ? Date.now() : undefined;
    }, 10_000, 'host2 out of the router\'s routes');
    t.ok(withdrawnAt - killedAt <= KILL_BOUND_MS, `host2 withdrawn ${withdrawnAt - killedAt} ms after SIGKILL (bound ${KILL_BOUND_MS} ms)`);
    t.same(hops(), via(2), 'only host3 is left in the routes');
    const left4 = await round(t, 'after-kill-v4', CLIENTS4, 1);
    t.equal(left4[2], CLIENTS4.length, 'host3 carried every IPv4 flow');
    const left6 = await round(t, 'after-kill-v6', CLIENTS6, 1);
    t.equal(left6[2], CLIENTS6.length, 'host3 carried every IPv6 flow');
    await checkFds(t, 2);
  });
});

interface LoadResult { at: number; code: string }

/**
 * New connections, one after another, from alternating IPv4 and IPv6 clients,
 * until finish() (at most 600 of them): each one's start time and HTTP status
 * ("000" when it failed: refused, reset or timed out).
 */
function backgroundLoad(lab: Lab, client: Namespace, url: (client: string, path: string) => string) {
  const targets = [...CLIENTS4.slice(0, 10), ...CLIENTS6.slice(0, 10)];
  const script = `i=0; while [ $i -lt 600 ] && [ ! -e "$STOP" ]; do
    for c in ${targets.join(' ')}; do
      case $c in *:*) u="${url('::1', 'load')}";; *) u="${url('192.0.2.1', 'load')}";; esac
      t=$(date +%s%3N); code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --interface $c "$u/$c/$i"); echo "$t $code"
      i=$((i+1))
    done
  done`;
  const stop = `${lab.dir}/load-stop`;
  const proc = lab.spawn(client, ['sh', '-c', script], { STOP: stop });
  return {
    async finish(): Promise<LoadResult[]> {
      fs.writeFileSync(stop, '');
      await proc.exited(30_000);
      return proc.stdout().trim().split('\n').map((l) => { const [at, code] = l.split(' '); return { at: Number(at), code }; });
    },
  };
}
