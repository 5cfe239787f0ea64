// `relay --config FILE` with two services, and live reload: what a reload
// keeps (listeners, open TCP connections byte-exact, UDP sessions on their
// port and backend, health state), what it changes (new connections and
// sessions follow the new backends), and what it refuses (a bad file changes
// nothing; a key that needs a restart is named). Asserted on what the backends saw.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import t from 'tap';
import {
  tcpLab, toolServer, heldConnection, udpEcho, udpSend, udpSeen, accepts, canRunLab, SKIP_REASON, ADDR, eventually, relayLogs, relayLogsSince,
  type Topology, type SpawnedProcess,
} from './lab-fixture';
import { cliPath } from '../../src/lab/topology';
import { relayPid, fdCount, settleFds } from '../torture/harness';

const B = ADDR.backend4;
const WEB_PORT = 7301;
const DNS_PORT = 7353;
// Backends: two TCP echo servers and two UDP echo servers, told apart by port.
const TCP_A = 7401;
const TCP_B = 7402;
const UDP_A = 7451;
const UDP_B = 7452;

interface Services {
  webBackends: number[];
  dnsBackends: number[];
  extra?: string;
  webListen?: string;
}

function configText(s: Services, pidFile: string): string {
  return `log-level = "info"
pid-file = "${pidFile}"

[[service]]
name = "web"
proto = "tcp"
listen = ["${ADDR.relayClientSide4}:${WEB_PORT}"${s.webListen ? `, "${s.webListen}"` : ''}]
backend = [${s.webBackends.map((p) => `"${B}:${p}"`).join(', ')}]
health-interval = "0s"
health-fall = 1
drain-timeout = "20s"
${s.extra ?? ''}

[[service]]
name = "dns"
proto = ["udp"]
listen = ["${ADDR.relayClientSide4}:${DNS_PORT}"]
backend = [${s.dnsBackends.map((p) => `"${B}:${p}"`).join(', ')}]
health-interval = "0s"
drain-timeout = "20s"
session-timeout = "30s"
`;
}

async function startFromFile(topo: Topology, file: string): Promise<SpawnedProcess> {
  const proc = topo.lab.spawn(topo.relay, [process.execPath, cliPath(), '--config', file]);
  await proc.waitFor(/"msg":"relay started"/, 10_000).catch((err: Error) => {
    throw new Error(`relay did not start: ${proc.stderr().trim() || proc.stdout().trim() || err.message}`);
  });
  return proc;
}

/** One connection through the web service: send text, end, return what came back. */
function echoOnce(topo: Topology, text: string): string {
  return topo.client.run('node', '-e',
    `const s=require('net').connect(${WEB_PORT},'${ADDR.relayClientSide4}',()=>s.end('${text}'));s.on('data',d=>process.stdout.write(d));`);
}

/** n connections through the web service, 8 at a time; prints started, then done with counts. */
function connectLoop(topo: Topology, n: number): SpawnedProcess {
  const script = `
const net = require('net');
let started = 0, ok = 0, failed = 0;
const say = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const one = () => {
  if (started >= ${n}) return;
  started++;
  const s = net.connect(${WEB_PORT}, '${ADDR.relayClientSide4}', () => s.end('ping'));
  let got = '';
  s.setTimeout(5000, () => s.destroy(new Error('timeout')));
  s.on('data', (d) => { got += d; });
  s.on('error', () => {});
  s.on('close', () => { if (got === 'ping') ok++; else failed++; if (ok + failed === ${n}) say({ event: 'done', ok, failed }); else setTimeout(one, 3); });
};
say({ event: 'started' });
for (let i = 0; i < 8; i++) one();
setTimeout(() => process.exit(1), 20000);
`;
  return topo.lab.spawn(topo.client, [process.execPath, '-e', script]);
}

function reloadWith(proc: SpawnedProcess, file: string, text: string): void {
  fs.writeFileSync(file, text);
  process.kill(proc.child.pid!, 'SIGHUP');
}

async function reloaded(proc: SpawnedProcess, count: number, msg = 'configuration reloaded'): Promise<Record<string, unknown>> {
  return eventually(() => relayLogs(proc, msg)[count - 1], 5000, `${msg} #${count}`);
}

t.test('a configuration file with two services, reloaded live', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'cfg');
  const tcpA = await toolServer(topo, 'echo', TCP_A, [B]);
  const tcpB = await toolServer(topo, 'echo', TCP_B, [B]);
  const udpA = await udpEcho(topo, UDP_A, [B]);
  const udpB = await udpEcho(topo, UDP_B, [B]);
  const file = path.join(topo.lab.dir, 'relay.toml');
  const pidFile = path.join(topo.lab.dir, 'relay.pid');
  fs.writeFileSync(file, configText({ webBackends: [TCP_A], dnsBackends: [UDP_A] }, pidFile));
  const relay = await startFromFile(topo, file);
  const pid = relayPid(relay);
  t.equal(fs.readFileSync(pidFile, 'utf8').trim(), String(pid), 'relay wrote its pid file');
  const started = relayLogs(relay, 'service started').map((l) => l.service);
  t.same(started, ['web', 'dns'], 'one start line per service');

  // Both services serve, each with the client's own address.
  const udp1 = await udpSend(topo, `${ADDR.relayClientSide4}:${DNS_PORT}`, ['--local-port', '40001', '--sizes', '50']);
  t.equal(udp1.replies.length, 1, 'dns: the client got its reply');
  t.same(udpSeen(udpA).map((s) => [s.remote, s.port]), [[ADDR.client4, 40001]], "dns: backend A saw the client's address and port");

  const long = heldConnection(topo, `${ADDR.relayClientSide4}:${WEB_PORT}`);
  await long.waitFor(/"event":"echoed"/, 5000);
  t.same(accepts(tcpA).map((a) => a.remote), [ADDR.client4], "web: backend A saw the client's address");
  const fdsBefore = fdCount(pid);

  await t.test('a reload swaps the backends: open connections and sessions stay, new ones go to the new backend', async (t) => {
    reloadWith(relay, file, configText({ webBackends: [TCP_B], dnsBackends: [UDP_B] }, pidFile));
    const line = await reloaded(relay, 1);
    t.same(line.servicesChanged, ['web', 'dns']);
    t.same((line.changes as Record<string, { backendsRemoved: string[]; draining: number }>).web.backendsRemoved, [`${B}:${TCP_A}`]);
    t.equal((line.changes as Record<string, { draining: number }>).web.draining, 1, 'web: the open connection drains');

    // The connection opened before the reload keeps moving bytes, byte-exact.
    process.kill(long.child.pid!, 'SIGUSR2');
    const echoed = await eventually(() => long.stdout().split('\n').filter((l) => l.includes('"echoed"'))[1], 5000, 'second echo');
    t.same(JSON.parse(echoed), { event: 'echoed', bytes: 200000, exact: true }, 'the old connection moved 200,000 bytes exactly');
    t.equal(accepts(tcpA).length, 1, 'it stayed on backend A');

    // A new connection goes to the new backend.
    const fresh = topo.client.run('node', '-e', `const s=require('net').connect(${WEB_PORT},'${ADDR.relayClientSide4}',()=>s.end('x'));s.on('data',d=>process.stdout.write(d));`);
    t.equal(fresh, 'x', 'a new connection is served');
    const atB = await eventually(() => (accepts(tcpB).length >= 1 ? accepts(tcpB) : undefined), 5000, 'an accept at backend B');
    t.same(atB.map((a) => a.remote), [ADDR.client4], "it reached backend B, with the client's address");

    // The UDP session keeps its port and backend; a new client port goes to B.
    const again = await udpSend(topo, `${ADDR.relayClientSide4}:${DNS_PORT}`, ['--local-port', '40001', '--sizes', '60']);
    t.equal(again.replies.length, 1);
    t.same(udpSeen(udpA).map((s) => [s.port, s.bytes]), [[40001, 50], [40001, 60]], 'the session stayed on backend A, on its port');
    const other = await udpSend(topo, `${ADDR.relayClientSide4}:${DNS_PORT}`, ['--local-port', '40002', '--sizes', '70']);
    t.equal(other.replies.length, 1);
    t.same(udpSeen(udpB).map((s) => [s.remote, s.port]), [[ADDR.client4, 40002]], 'a new session went to backend B');
  });

  await t.test('a bad file changes nothing', async (t) => {
    reloadWith(relay, file, 'this is = = not toml\n');
    const failed = await eventually(() => relayLogs(relay, 'reload failed: configuration unchanged, still serving')[0], 5000, 'reload failed');
    t.match(String(failed.err), new RegExp(`${file}:1: `), 'the error names the file and line');
    const fresh = topo.client.run('node', '-e', `const s=require('net').connect(${WEB_PORT},'${ADDR.relayClientSide4}',()=>s.end('y'));s.on('data',d=>process.stdout.write(d));`);
    t.equal(fresh, 'y', 'still serving');
    await eventually(() => accepts(tcpB).length >= 2, 5000, 'a second accept at backend B');
    t.equal(accepts(tcpA).length, 1, 'with the configuration it had: backend B only');
  });

  await t.test('a key that needs a restart is named; the rest applies', async (t) => {
    reloadWith(relay, file, configText({ webBackends: [TCP_B], dnsBackends: [UDP_B], webListen: `${ADDR.relayClientSide4}:${WEB_PORT + 1}`,
      extra: 'connect-timeout = "2s"' }, pidFile));
    const warn = await reloaded(relay, 1, 'reload: these keys need a restart; the rest is applied');
    t.same(warn.web, ['listen']);
    const line = await reloaded(relay, 2);
    t.same((line.changes as Record<string, { keys: string[] }>).web.keys, ['connect-timeout']);
    t.equal(topo.relay.tryRun('ss', '-Hltn', `sport = :${WEB_PORT + 1}`).stdout.trim(), '', 'the new listen address is not opened');
  });

  await t.test('relay reload validates and signals through the pid file', async (t) => {
    fs.writeFileSync(file, configText({ webBackends: [TCP_B], dnsBackends: [UDP_B] }, pidFile));
    const out = topo.relay.run(process.execPath, cliPath(), 'reload', '--config', file);
    t.match(out, new RegExp(`pid ${pid}`));
    await reloaded(relay, 3);
    fs.writeFileSync(file, 'log-level = "loud"\n[[service]]\nname = "x"\n');
    const bad = spawnSync('ip', ['netns', 'exec', topo.relay.name, process.execPath, cliPath(), 'reload', '--config', file],
      { encoding: 'utf8', timeout: 20_000 });
    t.equal(bad.status, 2, 'an invalid file is refused with exit 2, and nothing is sent');
    t.match(bad.stderr, /log-level/);
    await new Promise((r) => setTimeout(r, 300));
    t.equal(relayLogs(relay, 'configuration reloaded').length, 3, 'no reload happened');
  });

  await t.test('health survives a reload: a backend down stays down', async (t) => {
    const down = 7409; // nothing listens there
    const both = (extra = '') => configText({ webBackends: [down, TCP_B], dnsBackends: [UDP_B], extra }, pidFile);
    reloadWith(relay, file, both());
    await reloaded(relay, 4);
    t.equal(echoOnce(topo, 'h'), 'h', 'served, by the retry');
    await eventually(() => relayLogs(relay, 'backend down').find((l) => l.backend === `${B}:${down}`), 5000, 'backend down');
    const retriesSince = (since: number) => relayLogsSince(relay, 'backend connect failed: trying another backend', since).length;
    const reloadStarted = Date.now();
    reloadWith(relay, file, both('connect-timeout = "3s"'));
    await reloaded(relay, 5);
    const closedBefore = relayLogs(relay, 'connection closed').length;
    for (let i = 0; i < 4; i++) t.equal(echoOnce(topo, `h${i}`), `h${i}`);
    // The runs above block this process: wait for relay's lines about them.
    await eventually(() => relayLogs(relay, 'connection closed').length >= closedBefore + 4, 5000, 'four more connection lines');
    t.ok(retriesSince(0) >= 1, 'the first connection tried it, and was retried');
    t.equal(retriesSince(reloadStarted), 0, 'no new connection tried the down backend after the reload');
    t.notOk(relayLogs(relay, 'backend up').some((l) => l.backend === `${B}:${down}`), 'it was not marked up');
  });

  await t.test('a reload while clients connect in a loop refuses none', async (t) => {
    const loop = connectLoop(topo, 400);
    await loop.waitFor(/"event":"started"/, 5000);
    for (let i = 0; i < 3; i++) {
      reloadWith(relay, file, configText({ webBackends: i % 2 ? [TCP_B] : [TCP_A, TCP_B], dnsBackends: [UDP_B] }, pidFile));
      await reloaded(relay, 6 + i);
    }
    await loop.waitFor(/"event":"done"/, 20_000);
    const done = JSON.parse(loop.stdout().split('\n').find((l) => l.includes('"done"'))!);
    t.equal(done.failed, 0, `no connection failed (${done.ok} served while relay reloaded 3 times)`);
    t.equal(done.ok, 400);
  });

  await t.test('connections on a removed backend end after drain-timeout', async (t) => {
    reloadWith(relay, file, configText({ webBackends: [TCP_A], dnsBackends: [UDP_B], extra: 'drain-timeout = "1s"' }, pidFile)
      .replace('drain-timeout = "20s"\ndrain', 'drain'));
    await reloaded(relay, 9);
    const held = heldConnection(topo, `${ADDR.relayClientSide4}:${WEB_PORT}`);
    await held.waitFor(/"event":"echoed"/, 5000);
    reloadWith(relay, file, configText({ webBackends: [TCP_B], dnsBackends: [UDP_B], extra: 'drain-timeout = "1s"' }, pidFile)
      .replace('drain-timeout = "20s"\ndrain', 'drain'));
    const startedAt = Date.now();
    await reloaded(relay, 10);
    const closed = await eventually(() => relayLogs(relay, 'connection closed').find((l) => l.reason === 'backend removed'), 5000, 'backend removed');
    t.equal(closed.backend, `${B}:${TCP_A}`);
    t.ok(Date.now() - startedAt >= 900, 'not before drain-timeout');
    await held.waitFor(/"event":"closed"/, 5000);
  });

  await t.test('doctor checks every service of the file', async (t) => {
    const run = spawnSync('ip', ['netns', 'exec', topo.relay.name, process.execPath, cliPath(), 'doctor', '--config', file],
      { encoding: 'utf8', timeout: 30_000 });
    t.match(run.stdout, /^service "web":\n/m, 'a heading per service');
    t.match(run.stdout, /^service "dns":\n/m);
    t.match(run.stdout, new RegExp(`OK\\s+listen tcp ${ADDR.relayClientSide4}:${WEB_PORT}: in use by relay itself`),
      "web's listener is recognised as the running relay's");
    t.match(run.stdout, new RegExp(`OK\\s+end to end tcp ${B}:${TCP_B} .*came back through relay`), "web's backend passes end to end");
    t.equal(run.status, 0, run.stdout);
  });

  await long.stop('SIGTERM');
  // The long connection and the UDP sessions were open at fdsBefore: once they
  // are gone relay holds fewer, never more.
  const settled = await settleFds(pid, fdsBefore - 3, 0);
  t.ok(settled <= fdsBefore, `relay's fds are back (${settled}, before ${fdsBefore} with a connection and a session open)`);
});

t.test('relay --config runs the example of docs/configuration.md as written', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'cfx');
  const doc = fs.readFileSync(path.join(__dirname, '..', '..', 'docs', 'configuration.md'), 'utf8');
  const example = /```toml\n([\s\S]*?)```/.exec(doc)![1];
  const file = path.join(topo.lab.dir, 'relay.toml');
  // Only the pid file moves into the lab: /run/relay is the host's.
  fs.writeFileSync(file, example.replace('pid-file = "/run/relay/relay.pid"', `pid-file = "${path.join(topo.lab.dir, 'relay.pid')}"`));
  const relay = await startFromFile(topo, file);
  t.same(relayLogs(relay, 'relay started')[0].services, ['dns', 'smtp', 'game']);
  for (const [flags, port] of [['-Hlun', 53], ['-Hltn', 53], ['-Hltn', 25], ['-Hlun', 27015]] as const) {
    t.not(topo.relay.tryRun('ss', flags, `sport = :${port}`).stdout.trim(), '', `listening: ${flags === '-Hltn' ? 'tcp' : 'udp'} ${port}`);
  }
  t.equal(await relay.stop('SIGTERM'), 0, 'and stops cleanly');
});
