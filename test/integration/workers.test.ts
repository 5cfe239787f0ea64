// --workers 2: both workers serve (each owns its listening sockets in a
// SO_REUSEPORT group); one UDP client port stays one session; a killed worker
// comes back while the other serves; a reload keeps a TCP connection; SIGTERM
// drains every worker and exits 0. Asserted on what the backends saw.
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import {
  tcpLab, toolServer, udpEcho, udpSend, udpSeen, accepts, heldConnection, canRunLab, SKIP_REASON, ADDR, eventually,
  relayLogs, relayLogsSince, echoMany, UDP_ENGINE, type Topology,
} from './lab-fixture';
import { cliPath } from '../../src/lab/topology';

const B = ADDR.backend4;
const PORT = 7500;
const BACKEND_PORT = 7501;
/** A second service whose backend gets active checks, and nothing else. */
const CHECKED_PORT = 7510;
const CHECKED_BACKEND_PORT = 7511;
const CHECK_INTERVAL_MS = 250;

/** The pids that hold a listening socket on port (ss -p), for tcp or udp. */
function listeningPids(topo: Topology, proto: 'tcp' | 'udp', port: number): number[] {
  const out = topo.relay.tryRun('ss', proto === 'tcp' ? '-Hltnp' : '-Hlunp', `sport = :${port}`).stdout;
  return [...new Set([...out.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1])))].sort();
}

function echoOnce(topo: Topology, text: string): string {
  return topo.client.run('node', '-e',
    `const s=require('net').connect(${PORT},'${ADDR.relayClientSide4}',()=>s.end('${text}'));s.on('data',d=>process.stdout.write(d));`);
}

t.test('relay --workers 2', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'wkr');
  const tcpBackend = await toolServer(topo, 'echo', BACKEND_PORT, [B]);
  const udpBackend = await udpEcho(topo, BACKEND_PORT, [B]);
  const checkedBackend = await toolServer(topo, 'echo', CHECKED_BACKEND_PORT, [B]);
  const file = path.join(topo.lab.dir, 'relay.toml');
  const config = (extra = '') => `workers = 2
${UDP_ENGINE === 'raw' ? 'udp-engine = "raw"' : ''}
pid-file = "${path.join(topo.lab.dir, 'relay.pid')}"

[[service]]
name = "echo"
proto = ["tcp", "udp"]
listen = ["${ADDR.relayClientSide4}:${PORT}"]
backend = ["${B}:${BACKEND_PORT}"]
health-interval = "0s"
${extra}

[[service]]
name = "checked"
proto = "tcp"
listen = ["${ADDR.relayClientSide4}:${CHECKED_PORT}"]
backend = ["${B}:${CHECKED_BACKEND_PORT}"]
health-interval = "${CHECK_INTERVAL_MS}ms"
`;
  fs.writeFileSync(file, config());
  const relay = topo.lab.spawn(topo.relay, [process.execPath, cliPath(), '--config', file]);
  await relay.waitFor(/"msg":"relay started"/, 20_000);
  const primary = relay.child.pid!;
  const started = relayLogs(relay, 'relay started')[0];
  const pids = (started.pids as number[]).sort();
  t.equal(pids.length, 2, 'the primary names two workers');
  await eventually(() => relayLogs(relay, 'worker started').length === 2, 5000, 'a start line from each worker');

  await t.test('both workers own listening sockets; the primary none', async (t) => {
    t.same(listeningPids(topo, 'tcp', PORT), pids, 'TCP: one socket per worker');
    t.same(listeningPids(topo, 'udp', PORT), pids, 'UDP: one socket per worker');
    t.notOk(listeningPids(topo, 'tcp', PORT).includes(primary), 'the primary does not touch the data path');
  });

  await t.test('connections spread over both workers, each with the client address', async (t) => {
    for (let i = 0; i < 40; i++) t.equal(echoOnce(topo, `c${i}`), `c${i}`);
    await eventually(() => accepts(tcpBackend).length >= 40, 5000, '40 accepts');
    t.ok(accepts(tcpBackend).every((a) => a.remote === ADDR.client4), "the backend saw the client's address every time");
    const byWorker = new Set(relayLogs(relay, 'connection closed').map((l) => l.worker));
    t.same([...byWorker].sort(), [0, 1], 'both workers served connections');
  });

  await t.test("one UDP client port: its 50 datagrams are one session, from the client's port", async (t) => {
    const sent = await udpSend(topo, `${ADDR.relayClientSide4}:${PORT}`, ['--local-port', '40100', '--sizes', Array(50).fill(20).join(',')]);
    t.equal(sent.replies.length, 50, 'all 50 answered');
    const seen = udpSeen(udpBackend).filter((s) => s.remote === ADDR.client4);
    t.equal(seen.length, 50);
    t.same([...new Set(seen.map((s) => s.port))], [40100], 'every datagram reached the backend from the client port: one session');
  });

  await t.test('a worker killed outright comes back; the other serves meanwhile', async (t) => {
    const victim = pids[0];
    const survivor = pids[1];
    // The primary is held stopped while the worker is dead, so "meanwhile"
    // does not hang on the restart's 0.5 s backoff racing the clients.
    process.kill(primary, 'SIGSTOP');
    const acceptsBefore = accepts(tcpBackend).length;
    const killedAt = Date.now();
    try {
      process.kill(victim, 'SIGKILL');
      await eventually(() => {
        const p = listeningPids(topo, 'tcp', PORT);
        return p.length === 1 && p[0] === survivor;
      }, 5000, "the dead worker's listening socket gone");
      t.equal(echoMany(topo, `${ADDR.relayClientSide4}:${PORT}`, 'k', 20), 20, 'all 20 new clients served while the worker is down');
      t.same(listeningPids(topo, 'tcp', PORT), [survivor], 'and no worker was started in the meantime');
    } finally {
      process.kill(primary, 'SIGCONT');
    }
    const served = await eventually(() => {
      const seen = accepts(tcpBackend).slice(acceptsBefore);
      return seen.length >= 20 ? seen : undefined;
    }, 5000, 'the backend to log the 20 accepts');
    t.equal(served.length, 20, 'the backend accepted the 20');
    t.ok(served.every((a) => a.remote === ADDR.client4), "each from the client's address");
    const survivorIndex = relayLogs(relay, 'worker started').find((l) => l.pid === survivor)?.worker;
    const closed = await eventually(() => {
      const lines = relayLogsSince(relay, 'connection closed', killedAt);
      return lines.length >= 20 ? lines : undefined;
    }, 5000, "the 20 connections' closing lines");
    t.same([...new Set(closed.map((l) => l.worker))], [survivorIndex], 'all by the surviving worker');
    const exited = await eventually(() => relayLogs(relay, 'worker exited: restarting it')[0], 5000, 'the exit line');
    t.equal(exited.pid, victim);
    t.equal(exited.signal, 'SIGKILL');
    await eventually(() => relayLogs(relay, 'worker restarted')[0], 5000, 'the restart');
    const now = await eventually(() => {
      const p = listeningPids(topo, 'tcp', PORT);
      return p.length === 2 && !p.includes(victim) ? p : undefined;
    }, 10_000, 'two workers listening again');
    t.ok(now.includes(survivor), 'the other worker was untouched');
    for (let i = 0; i < 10; i++) t.equal(echoOnce(topo, `r${i}`), `r${i}`, 'served once both are back');
  });

  await t.test('a reload reaches every worker and keeps a TCP connection', async (t) => {
    const held = heldConnection(topo, `${ADDR.relayClientSide4}:${PORT}`);
    await held.waitFor(/"event":"echoed"/, 5000);
    const before = relayLogs(relay, 'configuration reloaded').length;
    fs.writeFileSync(file, config('connect-timeout = "3s"'));
    process.kill(primary, 'SIGHUP');
    await eventually(() => relayLogs(relay, 'configuration reloaded').length >= before + 2, 5000, 'both workers reloaded');
    process.kill(held.child.pid!, 'SIGUSR2');
    const second = await eventually(() => held.stdout().split('\n').filter((l) => l.includes('"echoed"'))[1], 5000, 'second echo');
    t.same(JSON.parse(second), { event: 'echoed', bytes: 200000, exact: true }, 'the connection moved 200,000 bytes exactly across the reload');
    await held.stop('SIGTERM');
  });

  await t.test('a reload with workers: a bad file changes nothing; a new workers count is named once, as needing a restart', async (t) => {
    const serving = listeningPids(topo, 'tcp', PORT);
    const failedBefore = relayLogs(relay, 'reload failed: configuration unchanged, still serving').length;
    // Two workers cannot share one session: the split refuses it, in every worker, and each keeps its config.
    fs.writeFileSync(file, config('max-sessions = 1'));
    process.kill(primary, 'SIGHUP');
    const failed = await eventually(() => {
      const lines = relayLogs(relay, 'reload failed: configuration unchanged, still serving').slice(failedBefore);
      return lines.length >= 2 ? lines : undefined;
    }, 5000, 'both workers refused the file');
    t.match(String(failed[0].err), /max-sessions 1 is below the 2 workers/);
    t.equal(echoOnce(topo, 'still'), 'still', 'still served');
    const warnBefore = relayLogs(relay, 'reload: these keys need a restart; the rest is applied').length;
    const reloadsBefore = relayLogs(relay, 'configuration reloaded').length;
    fs.writeFileSync(file, config('connect-timeout = "3s"').replace('workers = 2', 'workers = 3'));
    process.kill(primary, 'SIGHUP');
    await eventually(() => relayLogs(relay, 'configuration reloaded').length >= reloadsBefore + 2, 5000, 'both workers reloaded');
    const warned = relayLogs(relay, 'reload: these keys need a restart; the rest is applied').slice(warnBefore);
    t.equal(warned.length, 1, 'one warning for the relay, not one per worker');
    t.same(warned[0]?.global, ['workers']);
    t.same(listeningPids(topo, 'tcp', PORT), serving, 'still the same two workers');
    fs.writeFileSync(file, config('connect-timeout = "3s"'));
  });

  await t.test('a worker restarted while the file is broken runs what the relay runs', async (t) => {
    // An edit not yet reloaded (here, a broken one) must not reach a restarted worker: it gets the last valid text.
    fs.writeFileSync(file, '[[service]\nbroken = ');
    const victim = listeningPids(topo, 'tcp', PORT)[0];
    const exitsBefore = relayLogs(relay, 'worker exited: restarting it').length;
    process.kill(victim, 'SIGKILL');
    const now = await eventually(() => {
      const pidsNow = listeningPids(topo, 'tcp', PORT);
      return pidsNow.length === 2 && !pidsNow.includes(victim) ? pidsNow : undefined;
    }, 10_000, 'the worker back and listening');
    t.equal(now.length, 2, 'two workers listen again');
    t.equal(echoOnce(topo, 'restarted'), 'restarted', 'served');
    await new Promise((r) => setTimeout(r, 1000)); // a worker that could not start would have exited by now
    t.equal(relayLogs(relay, 'worker exited: restarting it').length, exitsBefore + 1, 'one exit, the SIGKILL: the new worker stayed up');
    fs.writeFileSync(file, config('connect-timeout = "3s"'));
  });

  await t.test('a backend that fails is marked down once, for every worker', async (t) => {
    const dead = 7509; // nothing listens there
    const before = relayLogs(relay, 'configuration reloaded').length;
    fs.writeFileSync(file, config('health-fall = 1').replace(`backend = ["${B}:${BACKEND_PORT}"]`,
      `backend = ["${B}:${BACKEND_PORT}", "${B}:${dead}"]`));
    process.kill(primary, 'SIGHUP');
    await eventually(() => relayLogs(relay, 'configuration reloaded').length >= before + 2, 5000, 'both workers reloaded');
    // One client process for all connections: the whole case stays well inside
    // the 10 s after which a backend marked down by traffic alone is tried again.
    t.equal(echoMany(topo, `${ADDR.relayClientSide4}:${PORT}`, 'd', 20), 20, 'all served (by the retry when the dead one was tried)');
    const down = await eventually(() => {
      const lines = relayLogs(relay, 'backend down').filter((l) => l.backend === `${B}:${dead}`);
      return lines.length > 0 ? lines : undefined;
    }, 5000, 'backend down');
    await new Promise((r) => setTimeout(r, 100));
    // By the time a line was logged: a retry of the first round can reach stdout after this point.
    const secondRound = Date.now();
    const retriesSince = (since: number) => relayLogsSince(relay, 'backend connect failed: trying another backend', since).length;
    const closedBefore = relayLogs(relay, 'connection closed').length;
    t.equal(echoMany(topo, `${ADDR.relayClientSide4}:${PORT}`, 'e', 20), 20);
    // The runs above block this process: wait for the workers' lines about them.
    await eventually(() => relayLogs(relay, 'connection closed').length >= closedBefore + 20, 5000, 'twenty more connection lines');
    t.equal(relayLogs(relay, 'backend down').filter((l) => l.backend === `${B}:${dead}`).length, 1, 'one backend down line for the relay');
    t.equal(down[0].worker, 0, 'from the leader, worker 0');
    t.ok(retriesSince(0) >= 1, 'the first round tried it, and was retried on the other backend');
    t.equal(retriesSince(secondRound), 0, 'afterwards no worker tries it: they all know it is down');
  });

  await t.test('active checks run once per backend for the relay, not once per worker', async (t) => {
    const checks = () => accepts(checkedBackend).filter((a) => a.remote === ADDR.relayBackendSide4).length;
    const from = checks();
    const windowMs = 3000;
    await new Promise((r) => setTimeout(r, windowMs));
    const made = checks() - from;
    const oneChecker = windowMs / CHECK_INTERVAL_MS; // 12; two workers checking would make 24
    t.ok(made >= oneChecker / 2 && made <= oneChecker * 1.5, `${made} checks in ${windowMs} ms: one checker's ${oneChecker}, not two`);
  });

  await t.test('SIGTERM drains every worker: an open connection still works, then the primary exits 0', async (t) => {
    const workers = listeningPids(topo, 'tcp', PORT);
    const held = heldConnection(topo, `${ADDR.relayClientSide4}:${PORT}`);
    await held.waitFor(/"event":"echoed"/, 5000);
    process.kill(primary, 'SIGTERM');
    await eventually(() => relayLogs(relay, 'stopping: draining every worker')[0], 5000, "the primary's drain line");
    process.kill(held.child.pid!, 'SIGUSR2');
    const second = await eventually(() => held.stdout().split('\n').filter((l) => l.includes('"echoed"'))[1], 5000, 'second echo');
    t.same(JSON.parse(second), { event: 'echoed', bytes: 200000, exact: true }, 'the open connection moved 100,000 more bytes during the drain');
    const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch { return false; } };
    t.ok(workers.some(alive), 'the worker holding it still runs (one with nothing open may be gone already)');
    const closedAt = Date.now();
    await held.stop('SIGTERM');
    t.equal(await relay.exited(10_000), 0, 'the primary exits 0');
    t.ok(Date.now() - closedAt < 5000, `once the last connection closed (${Date.now() - closedAt} ms)`);
    t.same(listeningPids(topo, 'tcp', PORT), [], 'nothing listens any more');
    for (const pid of workers) t.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, `worker ${pid} is gone`);
    t.ok(relayLogs(relay, 'relay stopped').some((l) => l.role === 'primary'), "the primary's stop line");
  });
});
