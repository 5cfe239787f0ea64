// The admin listener in a namespace lab: /metrics counts exactly what the
// clients sent (connections, sessions, bytes, datagrams), drain and enable
// steer new connections while open ones finish, and off loopback a POST
// needs the token.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  tcpLab, relay, toolServer, clientSession, canRunLab, SKIP_REASON, ADDR, formatEndpoint, accepts, eventually, relayLogs,
  udpEcho, udpSend, udpSeen, httpRequest, metricSamples, metricTotal,
} from './lab-fixture';
import type { Namespace, Topology, SpawnedProcess } from './lab-fixture';
import { waitForListener } from '../../src/lab/netns';
import { relayPid, fdCount, settleFds } from '../torture/harness';
import { cliPath, startRelay } from '../../src/lab/topology';

const b = (port: number) => formatEndpoint(ADDR.backend4, port);

const request = httpRequest;
const samples = metricSamples;
const total = metricTotal;

/** The first such sample's value, or undefined when there is none. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  return samples(text, name, labels)[0];
}

/** relay with an admin listener on port: started, and the admin listener up (it opens after the data path's). */
async function relayWithAdmin(topo: Topology, args: string[], port: number): Promise<SpawnedProcess> {
  const proc = await relay(topo, args);
  await waitForListener(topo.relay, 'tcp', port);
  return proc;
}

t.test('admin API and metrics', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'adm');
  const metricsOf = (port: number) => {
    const got = request(topo.relay, 'GET', `http://127.0.0.1:${port}/metrics`);
    if (got.status !== 200) throw new Error(`/metrics answered ${got.status}`);
    return got.body;
  };

  t.test('/metrics: N connections and sessions make the counters grow by exactly N; bytes and datagrams match', async (t) => {
    const one = await toolServer(topo, 'echo', 7700, [ADDR.backend4]);
    const two = await toolServer(topo, 'echo', 7701, [ADDR.backend4]);
    const udp = await udpEcho(topo, 7702, [ADDR.backend4]);
    const proc = await relayWithAdmin(topo, ['--proto', 'tcp', '--listen', '0.0.0.0:7710', '--backend', b(7700), '--backend', b(7701),
      '--admin', '127.0.0.1:9901'], 9901);
    const udpProc = await relayWithAdmin(topo, ['--proto', 'udp', '--listen', '0.0.0.0:7711', '--backend', b(7702),
      '--admin', '127.0.0.1:9902'], 9902);
    const pid = relayPid(proc);
    const fdsBefore = fdCount(pid);
    const before = metricsOf(9901);
    const N = 7;
    let sent = 0;
    for (let i = 0; i < N; i++) {
      const text = `metrics-${i}-${'x'.repeat(i * 100)}`;
      const out = await clientSession(topo, `${ADDR.relayClientSide4}:7710`, ['--send', text, '--end']);
      t.equal(out.received, text, `client ${i} answered`);
      sent += Buffer.byteLength(text);
    }
    t.equal(await settleFds(pid, fdsBefore, 0), fdsBefore, "relay's fds are back where they were");
    const after = await eventually(() => {
      const text = metricsOf(9901);
      return sample(text, 'relay_tcp_connections_closed_total', { service: 'default', reason: 'done' }) ===
        (sample(before, 'relay_tcp_connections_closed_total', { service: 'default', reason: 'done' }) ?? 0) + N ? text : undefined;
    }, 5000, 'the closes counted');
    const grew = (name: string, labels: Record<string, string> = {}) => total(after, name, labels) - total(before, name, labels);
    t.equal(grew('relay_tcp_connections_accepted_total', { service: 'default' }), N, 'accepted grew by N');
    t.equal(grew('relay_backend_opened_total', { service: 'default', proto: 'tcp' }), N, 'opened over the backends grew by N');
    for (const [server, port] of [[one, 7700], [two, 7701]] as const) {
      const seen = accepts(server).filter((a) => a.remote === ADDR.client4).length;
      t.equal(sample(after, 'relay_backend_opened_total', { proto: 'tcp', backend: b(port) }), seen,
        `${b(port)}: opened equals what the backend accepted (${seen})`);
    }
    t.equal(grew('relay_backend_bytes_total', { proto: 'tcp', direction: 'from_client' }), sent, `bytes from clients: ${sent}`);
    t.equal(grew('relay_backend_bytes_total', { proto: 'tcp', direction: 'to_client' }), sent, 'bytes to clients: the echo');
    t.equal(sample(after, 'relay_tcp_connections_open', { service: 'default' }), 0, 'none open');
    t.equal(grew('relay_backend_connect_duration_seconds_count', { proto: 'tcp' }), N, 'N connect times observed');
    t.equal(sample(after, 'relay_backend_up', { backend: b(7700) }), 1, 'health state exported');
    for (const name of ['process_open_fds', 'process_max_fds', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes',
      'nodejs_eventloop_lag_seconds', 'relay_log_lines_dropped_total']) {
      t.ok(sample(after, name) !== undefined, `${name} is there`);
    }

    const sizes = [10, 200, 1000];
    const sessions = 3;
    for (let i = 0; i < sessions; i++) {
      const result = await udpSend(topo, `${ADDR.relayClientSide4}:7711`, ['--sizes', sizes.join(',')]);
      t.equal(result.replies.length, sizes.length, `session ${i}: every datagram answered`);
    }
    const seenBytes = udpSeen(udp).filter((d) => d.remote === ADDR.client4).reduce((n, d) => n + d.bytes, 0);
    const u = metricsOf(9902);
    t.equal(sample(u, 'relay_udp_sessions_opened_total', { service: 'default' }), sessions, 'sessions opened: exactly 3');
    t.equal(sample(u, 'relay_backend_datagrams_total', { backend: b(7702), direction: 'from_client' }), sessions * sizes.length,
      'datagrams from clients');
    t.equal(sample(u, 'relay_backend_datagrams_total', { backend: b(7702), direction: 'to_client' }), sessions * sizes.length,
      'datagrams to clients');
    t.equal(sample(u, 'relay_backend_bytes_total', { backend: b(7702), direction: 'from_client' }), seenBytes,
      `bytes from clients equal what the backend saw (${seenBytes})`);
    t.equal(sample(u, 'relay_udp_sessions_open', { service: 'default' }), sessions, 'the sessions are open (session-timeout 30s)');
    await proc.stop('SIGTERM');
    await udpProc.stop('SIGTERM');
  });

  t.test('drain and enable: a drained backend gets no new connection, an open one finishes', async (t) => {
    const one = await toolServer(topo, 'echo', 7720, [ADDR.backend4]);
    const two = await toolServer(topo, 'echo', 7721, [ADDR.backend4]);
    const proc = await relayWithAdmin(topo, ['--listen', '0.0.0.0:7730', '--backend', b(7720), '--backend', b(7721),
      '--admin', '127.0.0.1:9903'], 9903);
    const pid = relayPid(proc);
    const fdsBefore = fdCount(pid);
    const api = (p: string, method = 'POST') => request(topo.relay, method, `http://127.0.0.1:9903${p}`);
    // Round robin sends the first client to 7720: held open across the drain.
    const held = clientSession(topo, `${ADDR.relayClientSide4}:7730`, ['--send', 'held'], 2500);
    await eventually(() => accepts(one).some((a) => a.remote === ADDR.client4), 3000, 'the held connection on 7720');
    const drained = api(`/backends/default/${b(7720)}/drain`);
    t.equal(drained.status, 200, 'drain answered 200');
    const status = JSON.parse(api('/status', 'GET').body);
    const backends = status.services[0].tcp.backends;
    t.match(backends.find((x: { backend: string }) => x.backend === b(7720)), { state: 'drained', open: 1, weight: 1 },
      '/status: drained, its connection still open');
    t.equal(sample(request(topo.relay, 'GET', 'http://127.0.0.1:9903/metrics').body, 'relay_backend_drained', { backend: b(7720) }), 1);
    const oneBefore = accepts(one).length;
    const twoBefore = accepts(two).length;
    for (let i = 0; i < 6; i++) {
      const out = await clientSession(topo, `${ADDR.relayClientSide4}:7730`, ['--send', `d${i}`, '--end']);
      t.equal(out.received, `d${i}`);
    }
    t.equal(accepts(one).length, oneBefore, 'the drained backend got no new connection');
    t.equal(accepts(two).length - twoBefore, 6, 'all six went to the other');
    const heldOut = await held;
    t.equal(heldOut.received, 'held', 'the open connection on the drained backend went on being served');
    t.equal(api(`/backends/default/${b(7720)}/enable`).status, 200, 'enable answered 200');
    for (let i = 0; i < 4; i++) await clientSession(topo, `${ADDR.relayClientSide4}:7730`, ['--send', 'e', '--end']);
    t.ok(accepts(one).length > oneBefore, 'enabled: it gets clients again');
    t.equal(api('/backends/default/198.51.100.99:1/drain').status, 404, 'an unknown backend: 404');
    t.equal(api(`/backends/nope/${b(7720)}/drain`).status, 404, 'an unknown service: 404');
    t.equal(api(`/backends/default/${b(7720)}/drain`, 'GET').status, 405, 'GET on a POST endpoint: 405');
    t.equal(api('/healthz', 'GET').body.trim(), 'ok', '/healthz: ok');
    t.equal(await settleFds(pid, fdsBefore, 0), fdsBefore, "relay's fds are back where they were");
    await proc.stop('SIGTERM');
  });

  t.test('a reload ends a drain; services are found by their name', async (t) => {
    await toolServer(topo, 'echo', 7750, [ADDR.backend4]);
    await toolServer(topo, 'echo', 7751, [ADDR.backend4]);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-admin-'));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'relay.toml');
    fs.writeFileSync(file, `admin = "127.0.0.1:9907"\npid-file = "${path.join(dir, 'relay.pid')}"\n\n[[service]]\nname = "web"\n` +
      `listen = ["${ADDR.relayClientSide4}:7752"]\nbackend = ["${b(7750)}", "${b(7751)}"]\nhealth-interval = "0s"\n`);
    const proc = await startRelay(topo.lab, topo.relay, ['--config', file]);
    await waitForListener(topo.relay, 'tcp', 9907);
    const state = () => JSON.parse(request(topo.relay, 'GET', 'http://127.0.0.1:9907/status').body)
      .services[0].tcp.backends.find((x: { backend: string }) => x.backend === b(7750)).state;
    t.equal(request(topo.relay, 'POST', `http://127.0.0.1:9907/backends/web/${b(7750)}/drain`).status, 200);
    t.equal(state(), 'drained');
    process.kill(relayPid(proc), 'SIGHUP');
    const reloaded = await eventually(() => relayLogs(proc, 'configuration reloaded')[0], 5000, 'the reload line');
    t.match(reloaded, { changes: { web: { undrained: [b(7750)] } } }, 'the reload line names the backend put back');
    t.equal(state(), 'up', 'back in rotation after the reload');
    await proc.stop('SIGTERM');
  });

  t.test('a unix socket: /healthz and a drain through it; a stale socket file is replaced', async (t) => {
    await toolServer(topo, 'echo', 7760, [ADDR.backend4]);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-admin-'));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const socket = path.join(dir, 'admin.sock');
    for (let start = 0; start < 2; start++) {
      // The second start finds the first one's socket file (SIGKILL leaves it): it must not fail with EADDRINUSE.
      const proc = await relay(topo, ['--listen', '0.0.0.0:7761', '--backend', b(7760), '--admin', socket]);
      await eventually(() => fs.existsSync(socket) || undefined, 5000, 'the admin socket');
      const health = await eventually(() => {
        const out = topo.relay.tryRun('curl', '-s', '--unix-socket', socket, 'http://relay/healthz');
        return out.ok && out.stdout.trim() === 'ok' ? out.stdout : undefined;
      }, 5000, '/healthz over the socket');
      t.equal(health.trim(), 'ok', `start ${start + 1}: /healthz over the unix socket`);
      const drained = topo.relay.run('curl', '-s', '--unix-socket', socket, '-X', 'POST', `http://relay/backends/default/${b(7760)}/drain`);
      t.match(JSON.parse(drained), { drained: true }, 'a POST over the socket needs no token');
      await proc.stop('SIGKILL');
    }
  });

  t.test('off loopback: refused without admin-allow-remote; with it, POST needs the token (401)', async (t) => {
    await toolServer(topo, 'echo', 7740, [ADDR.backend4]);
    const refused = topo.relay.tryRun(process.execPath, cliPath(), '--listen', '0.0.0.0:7741',
      '--backend', b(7740), '--admin', `${ADDR.relayClientSide4}:9904`);
    t.notOk(refused.ok, 'relay does not start');
    t.match(refused.stderr, /--admin 192\.0\.2\.1:9904 is not a loopback address/, 'and says why');

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-admin-'));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const tokenFile = path.join(dir, 'token');
    const token = 'k3y-0123456789abcdef-secret';
    fs.writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    const proc = await relayWithAdmin(topo, ['--listen', '0.0.0.0:7742', '--backend', b(7740),
      '--admin', `${ADDR.relayClientSide4}:9905`, '--admin-allow-remote', '--admin-token-file', tokenFile], 9905);
    const url = (p: string) => `http://${ADDR.relayClientSide4}:9905${p}`;
    t.equal(request(topo.client, 'GET', url('/metrics')).status, 200, 'GET /metrics from the client side: 200');
    const drain = url(`/backends/default/${b(7740)}/drain`);
    t.equal(request(topo.client, 'POST', drain).status, 401, 'POST without a token: 401');
    t.equal(request(topo.client, 'POST', drain, ['Authorization: Bearer wrong-token-0123456789']).status, 401,
      'POST with a wrong token: 401');
    const status = JSON.parse(request(topo.client, 'GET', url('/status')).body);
    t.equal(status.services[0].tcp.backends[0].state, 'up', 'the refused POSTs changed nothing');
    t.equal(request(topo.client, 'POST', drain, [`Authorization: Bearer ${token}`]).status, 200, 'POST with the token: 200');
    const logged = await eventually(() => relayLogs(proc, 'backend drained: no new connections or sessions until enabled or a reload')[0],
      3000, 'the drain line');
    t.match(logged, { service: 'default', backend: b(7740) }, 'the drain is logged');
    await proc.stop('SIGTERM');

    const open = await relayWithAdmin(topo, ['--listen', '0.0.0.0:7743', '--backend', b(7740),
      '--admin', `${ADDR.relayClientSide4}:9906`, '--admin-allow-remote'], 9906);
    t.equal(request(topo.client, 'POST', `http://${ADDR.relayClientSide4}:9906/backends/default/${b(7740)}/drain`).status, 401,
      'no token file off loopback: every POST is refused');
    await open.stop('SIGTERM');
  });
});
