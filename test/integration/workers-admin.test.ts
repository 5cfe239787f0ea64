// --workers 2 --admin: the primary's /metrics counts exactly what the
// clients opened, as the sum of what each worker says it served; a drain
// through the API keeps new connections off the backend whichever worker
// takes them (a worker restarted after the drain too), an open one finishes,
// and enable brings the backend back; a reload ends a drain everywhere;
// limits are split as documented; a backend that dies is one health
// transition in the summed metrics.
// Asserted on what the backends saw and on each worker's own stats line.
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import {
  tcpLab, toolServer, clientSession, canRunLab, SKIP_REASON, ADDR, formatEndpoint, accepts, eventually, relayLogs,
  echoMany, httpRequest, metricTotal, type Topology,
} from './lab-fixture';
import { waitForListener } from '../../src/lab/netns';
import { cliPath } from '../../src/lab/topology';
import { fdCount, settleFds } from '../torture/harness';

const PORT = 7800;
const ONE = 7801;
const TWO = 7802;
const ADMIN = 9950;
const b = (port: number) => formatEndpoint(ADDR.backend4, port);
const target = `${ADDR.relayClientSide4}:${PORT}`;

function listeningPids(topo: Topology): number[] {
  const out = topo.relay.tryRun('ss', '-Hltnp', `sport = :${PORT}`).stdout;
  return [...new Set([...out.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1])))].sort();
}

t.test('relay --workers 2 --admin', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'wadm');
  const one = await toolServer(topo, 'echo', ONE, [ADDR.backend4]);
  const two = await toolServer(topo, 'echo', TWO, [ADDR.backend4]);
  const file = path.join(topo.lab.dir, 'relay.toml');
  fs.writeFileSync(file, `workers = 2
admin = "127.0.0.1:${ADMIN}"

[[service]]
name = "web"
proto = "tcp"
listen = ["${target}"]
backend = ["${b(ONE)}", "${b(TWO)}"]
health-interval = "0s"
max-conns = 101
`);
  const relay = topo.lab.spawn(topo.relay, [process.execPath, cliPath(), '--config', file]);
  await relay.waitFor(/"msg":"relay started"/, 20_000);
  await waitForListener(topo.relay, 'tcp', ADMIN);
  const primary = relay.child.pid!;
  const api = (p: string, method = 'GET') => httpRequest(topo.relay, method, `http://127.0.0.1:${ADMIN}${p}`);
  const metrics = () => {
    const got = api('/metrics');
    if (got.status !== 200) throw new Error(`/metrics answered ${got.status}`);
    return got.body;
  };
  const accepted = () => metricTotal(metrics(), 'relay_tcp_connections_accepted_total', { service: 'web' });
  const fromClient = (server: typeof one) => accepts(server).filter((a) => a.remote === ADDR.client4).length;

  await t.test('the primary holds the admin listener; limits are split', async (t) => {
    t.match(relayLogs(relay, 'relay started')[0], { role: 'primary', admin: `127.0.0.1:${ADMIN}` });
    const started = await eventually(() => {
      const lines = relayLogs(relay, 'service started').filter((l) => l.service === 'web');
      return lines.length === 2 ? lines : undefined;
    }, 5000, "each worker's service start line");
    t.same(started.map((l) => [l.worker, l.maxConns]).sort(), [[0, 51], [1, 50]],
      'max-conns 101 over 2 workers: 51 and 50, the relay\'s 101 exactly');
    const health = api('/healthz');
    t.equal(health.status, 200);
    t.equal(health.body, 'ok: 2 of 2 workers serving\n');
  });

  await t.test('N connections: the summed counter grows by N, the sum of what each worker served', async (t) => {
    const workers = listeningPids(topo);
    t.equal(workers.length, 2);
    const before = accepted(); // first: a worker loads prom-client at its first scrape
    const fdsBefore = workers.map(fdCount);
    const openedBefore = metricTotal(metrics(), 'relay_backend_opened_total', { service: 'web' });
    const seenBefore = fromClient(one) + fromClient(two);
    const statsLines = relayLogs(relay, 'relay stats').length;
    const n = 40;
    t.equal(echoMany(topo, target, 'n', n), n, `${n} connections echoed`);
    await eventually(() => fromClient(one) + fromClient(two) >= seenBefore + n, 5000, `${n} accepts at the backends`);
    t.equal(fromClient(one) + fromClient(two), seenBefore + n, `the backends saw exactly ${n} more connections from the client`);
    const text = metrics();
    t.equal(metricTotal(text, 'relay_tcp_connections_accepted_total', { service: 'web' }), before + n, `accepted_total grew by ${n}`);
    t.equal(metricTotal(text, 'relay_backend_opened_total', { service: 'web' }), openedBefore + n, `backend_opened_total grew by ${n}`);
    t.same([0, 1].map((w) => metricTotal(text, 'relay_worker_reporting', { worker: String(w) })), [1, 1], 'both workers answered');
    // Each worker's own count, from its SIGUSR2 stats line (the primary passes the signal on).
    process.kill(primary, 'SIGUSR2');
    const lines = await eventually(() => {
      const all = relayLogs(relay, 'relay stats').slice(statsLines);
      return all.length === 2 ? all : undefined;
    }, 5000, 'a stats line from each worker');
    const own = lines.map((l) => (l.services as { web: { tcp: { accepted: number } } }).web.tcp.accepted);
    t.ok(own.every((a) => a > 0), `both workers served (${own.join(' + ')})`);
    t.equal(own[0] + own[1], before + n, "the relay's sum is the sum of the workers' own");
    for (const [i, pid] of workers.entries()) {
      const settled = await settleFds(pid, fdsBefore[i], 0);
      // Fewer is no leak: an fd open for a moment when the baseline was read (CI on Node 26: 25, then 24).
      t.ok(settled <= fdsBefore[i], `worker ${pid}'s fds are back where they were, or below (${settled}, before ${fdsBefore[i]})`);
    }
  });

  await t.test('drain reaches every worker: no new connection on the drained backend, an open one finishes; enable', async (t) => {
    const workers = listeningPids(topo);
    const fdsBefore = workers.map(fdCount);
    const [oneBefore, twoBefore] = [fromClient(one), fromClient(two)];
    const held = clientSession(topo, target, ['--send', 'held'], 6000);
    const heldOn = await eventually(() => (fromClient(one) > oneBefore ? ONE : fromClient(two) > twoBefore ? TWO : undefined),
      3000, 'the held connection at a backend');
    const [drainedServer, otherServer] = heldOn === ONE ? [one, two] : [two, one];
    const drain = api(`/backends/web/${b(heldOn)}/drain`, 'POST');
    t.equal(drain.status, 200, 'drain answered 200');
    t.match(JSON.parse(drain.body), { drained: true, workers: 2 }, 'acknowledged by both workers');
    const status = JSON.parse(api('/status').body);
    t.match(status.services[0].tcp.backends.find((x: { backend: string }) => x.backend === b(heldOn)), { state: 'drained', open: 1 },
      '/status: drained, its connection still open');
    t.same(status.perWorker.map((w: { services: { tcp: { backends: { backend: string; state: string }[] } }[] }) =>
      w.services[0].tcp.backends.find((x) => x.backend === b(heldOn))?.state), ['drained', 'drained'], 'drained in each worker');
    t.equal(metricTotal(metrics(), 'relay_backend_drained', { backend: b(heldOn) }), 1, 'one drained state, not one per worker');
    const [drainedCount, otherCount] = [fromClient(drainedServer), fromClient(otherServer)];
    const closedBefore = relayLogs(relay, 'connection closed').length;
    t.equal(echoMany(topo, target, 'd', 20), 20, 'all 20 served');
    await eventually(() => fromClient(otherServer) >= otherCount + 20, 5000, '20 accepts on the other backend');
    t.equal(fromClient(drainedServer), drainedCount, 'the drained backend got no new connection');
    await eventually(() => relayLogs(relay, 'connection closed').length >= closedBefore + 20, 5000, '20 close lines');
    const byWorker = new Set(relayLogs(relay, 'connection closed').slice(closedBefore).map((l) => l.worker));
    t.same([...byWorker].sort(), [0, 1], 'both workers took some of them');
    t.equal((await held).received, 'held', 'the open connection on the drained backend went on being served');

    t.equal(api(`/backends/web/${b(heldOn)}/enable`, 'POST').status, 200, 'enable answered 200');
    const again = fromClient(drainedServer);
    t.equal(echoMany(topo, target, 'e', 8), 8);
    await eventually(() => fromClient(drainedServer) > again || undefined, 5000, 'the enabled backend gets clients again');
    t.equal(api('/backends/web/198.51.100.99:1/drain', 'POST').status, 404, 'an unknown backend: 404');
    t.equal(api(`/backends/nope/${b(ONE)}/drain`, 'POST').status, 404, 'an unknown service: 404');
    for (const [i, pid] of workers.entries()) {
      const settled = await settleFds(pid, fdsBefore[i], 0);
      // Fewer is no leak: an fd open for a moment when the baseline was read (CI on Node 26: 25, then 24).
      t.ok(settled <= fdsBefore[i], `worker ${pid}'s fds are back where they were, or below (${settled}, before ${fdsBefore[i]})`);
    }
  });

  await t.test('a worker restarted after a drain keeps the backend out; the summed counters do not go back', async (t) => {
    t.equal(api(`/backends/web/${b(ONE)}/drain`, 'POST').status, 200);
    const before = accepted(); // the scrape the killed worker's counters are kept from
    const workers = listeningPids(topo);
    const victim = workers[1];
    process.kill(victim, 'SIGKILL');
    await eventually(() => {
      const now = listeningPids(topo);
      return now.length === 2 && !now.includes(victim) ? now : undefined;
    }, 10_000, 'the worker restarted and listening');
    await eventually(() => api('/healthz').body === 'ok: 2 of 2 workers serving\n' || undefined, 5000, 'both serving');
    t.equal(accepted(), before, "the restarted worker's predecessor still counts: the sum did not drop");
    const oneCount = fromClient(one);
    const twoCount = fromClient(two);
    const closedBefore = relayLogs(relay, 'connection closed').length;
    t.equal(echoMany(topo, target, 'r', 20), 20);
    await eventually(() => fromClient(two) >= twoCount + 20, 5000, '20 accepts on the backend left');
    t.equal(fromClient(one), oneCount, 'no worker, the new one included, sent a client to the drained backend');
    await eventually(() => relayLogs(relay, 'connection closed').length >= closedBefore + 20, 5000, '20 close lines');
    t.ok(relayLogs(relay, 'connection closed').slice(closedBefore).some((l) => l.worker === 1), 'the restarted worker served some');
    t.equal(accepted(), before + 20, 'accepted_total: the old figure plus the 20 new');
    t.equal(metricTotal(metrics(), 'relay_worker_restarts_total', { worker: '1' }), 1, 'the restart is counted');
    t.equal(api(`/backends/web/${b(ONE)}/enable`, 'POST').status, 200);
  });

  await t.test('a reload ends a drain in every worker, and a worker restarted after it does not get the drain back', async (t) => {
    const stateIn = () => JSON.parse(api('/status').body).perWorker
      .map((w: { services?: { tcp: { backends: { backend: string; state: string }[] } }[] }) =>
        w.services?.[0].tcp.backends.find((x) => x.backend === b(ONE))?.state);
    t.equal(api(`/backends/web/${b(ONE)}/drain`, 'POST').status, 200);
    t.same(stateIn(), ['drained', 'drained']);
    const reloads = relayLogs(relay, 'configuration reloaded').length;
    process.kill(primary, 'SIGHUP');
    await eventually(() => relayLogs(relay, 'configuration reloaded').length >= reloads + 2 || undefined, 5000, 'both workers reloaded');
    t.same(stateIn(), ['up', 'up'], 'the reload put it back in both');
    const victim = listeningPids(topo)[0];
    process.kill(victim, 'SIGKILL');
    await eventually(() => {
      const now = listeningPids(topo);
      return now.length === 2 && !now.includes(victim) ? now : undefined;
    }, 10_000, 'the worker restarted and listening');
    await eventually(() => api('/healthz').body === 'ok: 2 of 2 workers serving\n' || undefined, 5000, 'both serving');
    t.same(stateIn(), ['up', 'up'], 'the restarted worker did not get the ended drain');
  });

  await t.test('a backend that dies is one transition down in the summed metrics, not one per worker', async (t) => {
    const transitions = (to: string) => metricTotal(metrics(), 'relay_backend_health_transitions_total',
      { service: 'web', backend: b(TWO), to });
    const downBefore = transitions('down');
    two.child.kill('SIGKILL');
    await two.exited;
    // Both workers get clients (both served in the test above); some pick the dead backend and retry the other.
    t.equal(echoMany(topo, target, 'k', 30), 30, 'all served, by the retry when the dead one was tried');
    await eventually(() => relayLogs(relay, 'backend down').find((l) => l.backend === b(TWO)), 5000, 'backend down');
    const applied = await eventually(() => {
      const state = JSON.parse(api('/status').body).perWorker
        .map((w: { services?: { tcp: { backends: { backend: string; state: string }[] } }[] }) =>
          w.services?.[0].tcp.backends.find((x) => x.backend === b(TWO))?.state);
      return state.every((x: string) => x === 'down') ? state : undefined;
    }, 5000, 'both workers applied it');
    t.same(applied, ['down', 'down'], 'down in every worker');
    t.equal(transitions('down'), downBefore + 1, 'counted once, by the leader that decided it');
  });

  await t.test('SIGTERM: every worker drains, the primary exits 0', async (t) => {
    t.equal(await relay.stop('SIGTERM'), 0, 'the primary exits 0');
    t.same(listeningPids(topo), [], 'nothing listens any more');
  });
});
