// Bounded resources and the connection lifecycle: max-conns, idle timeout,
// many concurrent byte-exact transfers, and draining on SIGTERM.
import t from 'tap';
import {
  tcpLab, relay, toolServer, clientSession, canRunLab, SKIP_REASON, ADDR, formatEndpoint, accepts, eventually, relayLogs, events,
} from './lab-fixture';
import { toolsPath } from '../../src/lab/peers';

t.test('limits and lifecycle', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'lim');
  const echo = await toolServer(topo, 'echo', 7200);
  const silent = await toolServer(topo, 'silent', 7201);

  t.test('200 concurrent connections, 1 MiB each way, byte-exact', async (t) => {
    const relayProc = await relay(topo, ['--listen', '0.0.0.0:7210', '--backend', formatEndpoint(ADDR.backend4, 7200),
      '--log-level', 'warn']);
    const before = accepts(echo).length;
    const client = topo.lab.spawn(topo.client, [process.execPath, toolsPath(), 'bulk',
      '--target', `${ADDR.relayClientSide4}:7210`, '--conns', '200', '--bytes', String(1 << 20), '--timeout', '90000']);
    await client.waitFor(/"event":"bulk"/, 100_000);
    const result = events(client).find((e) => e.event === 'bulk')!;
    t.same(result, { event: 'bulk', conns: 200, exact: 200, mismatched: 0, failed: 0, errors: [] },
      'every connection echoed back the same 1 MiB (sha256)');
    const seen = accepts(echo).slice(before);
    t.equal(seen.length, 200);
    t.ok(seen.every((a) => a.remote === ADDR.client4), "the backend saw the client's address on all 200");
    t.same(relayLogs(relayProc).filter((l) => Number(l.level) >= 40), [], 'relay logged no warning or error');
  });

  t.test('--max-conns: clients past the limit are closed at once', async (t) => {
    const relayProc = await relay(topo, ['--listen', '0.0.0.0:7211', '--backend', formatEndpoint(ADDR.backend4, 7201),
      '--max-conns', '2']);
    const holders = [0, 1].map(() => topo.lab.spawn(topo.client, [process.execPath, toolsPath(), 'session',
      '--target', `${ADDR.relayClientSide4}:7211`, '--send', 'hold', '--timeout', '4000']));
    const before = accepts(silent).length;
    await eventually(() => accepts(silent).length >= before + 2 || undefined, 5000, 'two held connections');
    const out = await clientSession(topo, `${ADDR.relayClientSide4}:7211`, ['--send', 'x'], 3000);
    t.ok(out.closedAfterMs >= 0 && out.closedAfterMs < 1000, `third client closed in ${out.closedAfterMs} ms`);
    t.equal(accepts(silent).length, before + 2, 'the backend never saw the third client');
    const warn = await eventually(() => relayLogs(relayProc, 'max-conns reached: closing new client')[0]);
    t.equal(warn.rejected, 1);
    for (const h of holders) await h.stop();
  });

  t.test('--idle-timeout closes a quiet connection and says so', async (t) => {
    const relayProc = await relay(topo, ['--listen', '[::]:7212', '--backend', formatEndpoint(ADDR.backend6, 7201),
      '--idle-timeout', '700ms']);
    const out = await clientSession(topo, `[${ADDR.relayClientSide6}]:7212`, ['--send', 'x'], 5000);
    t.ok(out.closedAfterMs >= 600 && out.closedAfterMs < 2500, `closed after ${out.closedAfterMs} ms (idle 700 ms)`);
    const closed = await eventually(() => relayLogs(relayProc, 'connection closed')[0]);
    t.equal(closed.reason, 'idle timeout');
    t.equal(closed.bytesFromClient, 1);
  });

  t.test('SIGTERM: stop accepting, drain open connections, exit 0', async (t) => {
    const relayProc = await relay(topo, ['--listen', '0.0.0.0:7213', '--backend', formatEndpoint(ADDR.backend4, 7201),
      '--drain-timeout', '1500ms']);
    const held = topo.lab.spawn(topo.client, [process.execPath, toolsPath(), 'session',
      '--target', `${ADDR.relayClientSide4}:7213`, '--send', 'hold', '--timeout', '8000']);
    const before = accepts(silent).length;
    await eventually(() => accepts(silent).length > before || undefined, 5000, 'held connection');
    const started = Date.now();
    relayProc.child.kill('SIGTERM');
    await eventually(() => relayLogs(relayProc, 'stopping: draining connections')[0]);
    const late = await clientSession(topo, `${ADDR.relayClientSide4}:7213`, [], 2000);
    t.notOk(late.connected, 'a new client is refused while draining');
    const code = await relayProc.exited(6000);
    const waited = Date.now() - started;
    t.equal(code, 0, 'exit status 0');
    t.ok(waited >= 1200 && waited < 4000, `waited ${waited} ms for the open connection (drain timeout 1500 ms)`);
    const closed = relayLogs(relayProc, 'connection closed')[0];
    t.equal(closed?.reason, 'shutdown');
    await held.stop();
  });

  t.test('a second SIGTERM ends the drain at once', async (t) => {
    const relayProc = await relay(topo, ['--listen', '0.0.0.0:7214', '--backend', formatEndpoint(ADDR.backend4, 7201),
      '--drain-timeout', '30s']);
    const held = topo.lab.spawn(topo.client, [process.execPath, toolsPath(), 'session',
      '--target', `${ADDR.relayClientSide4}:7214`, '--send', 'hold', '--timeout', '8000']);
    const before = accepts(silent).length;
    await eventually(() => accepts(silent).length > before || undefined, 5000, 'held connection');
    relayProc.child.kill('SIGTERM');
    await eventually(() => relayLogs(relayProc, 'stopping: draining connections')[0]);
    const started = Date.now();
    relayProc.child.kill('SIGTERM');
    t.equal(await relayProc.exited(5000), 0, 'exit status 0');
    t.ok(Date.now() - started < 2000, `exited ${Date.now() - started} ms after the second signal`);
    t.ok(relayLogs(relayProc, 'second signal: closing open connections now')[0]);
    t.equal(relayLogs(relayProc, 'connection closed')[0]?.reason, 'shutdown');
    await held.stop();
  });
});
