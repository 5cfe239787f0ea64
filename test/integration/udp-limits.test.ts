// The UDP session table under its limits: eviction, idle expiry, the
// responses limit, ICMP refused, a client port already in use, and a flood of
// flows through a small table with relay's fd count watched from /proc.
import t from 'tap';
import * as fs from 'node:fs';
import {
  tcpLab, relay, canRunLab, SKIP_REASON, ADDR, formatEndpoint, udpEcho, udpSend, udpSeen, udpToolsPath, eventually,
  relayLogs, events, UDP_ENGINE,
} from './lab-fixture';

/** UDP sockets relay holds that are connected to the backend (its sessions). */
function upstreamSockets(topo: Parameters<typeof udpSend>[0], backendPort: number): number {
  return topo.relay.run('ss', '-Hun', 'state', 'connected', `dport = :${backendPort}`).split('\n').filter(Boolean).length;
}

t.test('UDP session limits', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'udpl');
  const echo = await udpEcho(topo, 5400, [ADDR.backend4]);

  t.test('eviction at --max-sessions closes the least recent session', async (t) => {
    const proc = await relay(topo, ['--proto', 'udp', '--listen', '0.0.0.0:5401', '--backend', formatEndpoint(ADDR.backend4, 5400),
      '--max-sessions', '2']);
    for (const port of [41001, 41002, 41003]) {
      const out = await udpSend(topo, `${ADDR.relayClientSide4}:5401`, ['--local-port', String(port)]);
      t.equal(out.replies.length, 1, `client port ${port} answered`);
    }
    const evicted = await eventually(() => relayLogs(proc, 'session ended (table full: least recently used evicted)')[0]);
    t.equal(evicted.client, `${ADDR.client4}:41001`);
    // The raw engine holds no socket per session: none to count.
    t.equal(upstreamSockets(topo, 5400), UDP_ENGINE === 'raw' ? 0 : 2, 'two upstream sockets left (socket engine)');
  });

  t.test('idle sessions expire and their sockets close', async (t) => {
    const proc = await relay(topo, ['--proto', 'udp', '--listen', '0.0.0.0:5402', '--backend', formatEndpoint(ADDR.backend4, 5400),
      '--session-timeout', '500ms']);
    const before = upstreamSockets(topo, 5400);
    const out = await udpSend(topo, `${ADDR.relayClientSide4}:5402`, ['--local-port', '41010']);
    t.equal(out.replies.length, 1);
    const ended = await eventually(() => relayLogs(proc, 'session ended')[0], 3000, 'idle end');
    t.equal(ended.reason, 'idle');
    t.equal(ended.datagramsFromClient, 1);
    t.equal(ended.datagramsToClient, 1);
    t.ok(Number(ended.durationMs) >= 450 && Number(ended.durationMs) < 2000, `ended after ${ended.durationMs} ms`);
    t.equal(upstreamSockets(topo, 5400), before, 'its upstream socket is closed');
  });

  t.test('replies alone keep a session alive past --session-timeout', async (t) => {
    // The backend answers once, then 8 more times 200 ms apart: 1.6 s of
    // replies through a session whose client went quiet after 1 datagram.
    const pusher = topo.lab.spawn(topo.backend, [process.execPath, udpToolsPath(), 'echo',
      '--listen', formatEndpoint(ADDR.backend4, 5408), '--push', '8', '--push-every', '200']);
    await pusher.waitFor(/"event":"listening"/);
    const proc = await relay(topo, ['--proto', 'udp', '--listen', '0.0.0.0:5409', '--backend', formatEndpoint(ADDR.backend4, 5408),
      '--session-timeout', '500ms']);
    const out = await udpSend(topo, `${ADDR.relayClientSide4}:5409`, ['--local-port', '41015', '--replies', '9', '--timeout', '4000']);
    t.equal(out.replies.length, 9, 'every reply reached the client');
    t.ok(out.replies.every((r) => r.from === `${ADDR.relayClientSide4}:5409`), 'all from the address the client sent to');
    const ended = await eventually(() => relayLogs(proc, 'session ended')[0], 3000, 'idle end');
    t.equal(ended.reason, 'idle');
    t.equal(ended.datagramsToClient, 9);
    t.ok(Number(ended.durationMs) >= 1600 + 450, `the session lived ${ended.durationMs} ms: until 500 ms after the last reply`);
  });

  t.test('--udp-responses 1 ends a session after its reply', async (t) => {
    const proc = await relay(topo, ['--proto', 'udp', '--listen', '0.0.0.0:5403', '--backend', formatEndpoint(ADDR.backend4, 5400),
      '--udp-responses', '1']);
    const before = upstreamSockets(topo, 5400);
    const out = await udpSend(topo, `${ADDR.relayClientSide4}:5403`, ['--local-port', '41020']);
    t.equal(out.replies.length, 1);
    const ended = await eventually(() => relayLogs(proc, 'session ended')[0], 3000, 'responses end');
    t.equal(ended.reason, 'responses');
    t.equal(upstreamSockets(topo, 5400), before, 'closed at once, not at the idle timeout');
  });

  t.test('ICMP port unreachable from the backend ends the session; relay stays up', async (t) => {
    const proc = await relay(topo, ['--proto', 'udp', '--listen', '0.0.0.0:5404', '--backend', formatEndpoint(ADDR.backend4, 5499)]);
    const out = await udpSend(topo, `${ADDR.relayClientSide4}:5404`, ['--local-port', '41030', '--timeout', '1000']);
    t.equal(out.replies.length, 0);
    const ended = await eventually(() => relayLogs(proc, 'session ended')[0], 3000, 'refused end');
    t.equal(ended.reason, 'refused');
    const again = await udpSend(topo, `${ADDR.relayClientSide4}:5404`, ['--local-port', '41031', '--timeout', '1000']);
    t.equal(again.sent, 1);
    await eventually(() => relayLogs(proc, 'session ended')[1], 3000, 'second refused end');
    t.equal(proc.child.exitCode, null, 'relay is still running');
  });

  t.test('no route to the backend ends the session with its error; relay stays up', async (t) => {
    const proc = await relay(topo, ['--proto', 'udp', '--listen', '0.0.0.0:5408', '--backend', '203.0.113.50:53']);
    topo.relay.ip('route', 'add', 'unreachable', '203.0.113.0/24');
    await udpSend(topo, `${ADDR.relayClientSide4}:5408`, ['--local-port', '41050', '--timeout', '500']);
    const ended = await eventually(() => relayLogs(proc, 'session ended')[0], 3000, 'error end');
    t.equal(ended.reason, 'error');
    t.equal(ended.code, 'EHOSTUNREACH');
    t.equal(proc.child.exitCode, null, 'relay is still running');
  });

  t.test('--udp-responses counts per request: two queries in flight on one port both get answers', async (t) => {
    await relay(topo, ['--proto', 'udp', '--listen', '0.0.0.0:5411', '--backend', formatEndpoint(ADDR.backend4, 5400),
      '--udp-responses', '1']);
    // Two datagrams from one socket, 5 ms apart: the second is sent before the first reply returns.
    const out = await udpSend(topo, `${ADDR.relayClientSide4}:5411`, ['--local-port', '41060', '--sizes', '10,20']);
    t.same(out.replies.map((r) => r.bytes), [10, 20]);
  });

  t.test("a client port in use on the relay host: another port, address kept (the raw engine keeps both)", async (t) => {
    const proc = await relay(topo, ['--proto', 'udp', '--listen', '0.0.0.0:5405', '--backend', formatEndpoint(ADDR.backend4, 5400)]);
    const holder = topo.lab.spawn(topo.relay, [process.execPath, '-e',
      `const s=require(${JSON.stringify(require.resolve('../../dist/src/sys/index.js'))});` +
      `s.openTransparentFd({transport:'udp',address:'${ADDR.client4}',port:41040});` +
      `console.log('held');setTimeout(()=>{},60000)`]);
    await holder.waitFor(/held/);
    const out = await udpSend(topo, `${ADDR.relayClientSide4}:5405`, ['--local-port', '41040']);
    t.equal(out.replies.length, 1, 'still answered');
    const seen = udpSeen(echo).at(-1);
    t.equal(seen?.remote, ADDR.client4, "the client's address is kept");
    if (UDP_ENGINE === 'raw') {
      // No bind to collide: the raw engine sends from the port, and tproxy takes the replies before any local socket.
      t.equal(seen?.port, 41040, 'raw engine: the port is kept too');
    } else {
      t.not(seen?.port, 41040, 'from another port');
      await eventually(() => relayLogs(proc).find((l) => String(l.msg).includes('port is in use')), 3000, 'fallback logged');
    }
    await holder.stop();
  });

  t.test('a burst of 2,000 new clients at once is queued, not dropped', async (t) => {
    await relay(topo, ['--proto', 'udp', '--listen', '0.0.0.0:5407', '--backend', formatEndpoint(ADDR.backend4, 5400),
      '--log-level', 'warn']);
    const client = topo.lab.spawn(topo.client, [process.execPath, udpToolsPath(), 'flows',
      '--target', `${ADDR.relayClientSide4}:5407`, '--flows', '2000', '--batch', '2000', '--timeout', '5000']);
    await client.waitFor(/"event":"flows-result"/, 30_000);
    t.equal(events(client).find((e) => e.event === 'flows-result')?.answered, 2000);
  });

  t.test('a session evicted by a client in the same batch still sends its datagram on', async (t) => {
    // 40 new clients at once through a table of 2: relay reads them in batches
    // and sends to the backend at the end of each, by when most of their
    // sessions have been evicted. Their replies are lost with their sockets,
    // but each datagram must reach the backend.
    await relay(topo, ['--proto', 'udp', '--listen', '0.0.0.0:5410', '--backend', formatEndpoint(ADDR.backend4, 5400),
      '--max-sessions', '2', '--log-level', 'warn']);
    const before = udpSeen(echo).length;
    const client = topo.lab.spawn(topo.client, [process.execPath, udpToolsPath(), 'flows',
      '--target', `${ADDR.relayClientSide4}:5410`, '--flows', '40', '--batch', '40', '--timeout', '1000']);
    await client.waitFor(/"event":"flows-result"/, 30_000);
    const seen = await eventually(() => {
      const now = udpSeen(echo).slice(before);
      return now.length >= 40 ? now : undefined;
    }, 3000, '40 datagrams at the backend');
    t.equal(new Set(seen.map((s) => s.port)).size, 40, 'one datagram from each of the 40 client ports');
    t.ok(seen.every((s) => s.remote === ADDR.client4), "all from the client's address");
  });

  t.test('10,000 flows through a table of 1,000: all answered, fds bounded', async (t) => {
    const proc = await relay(topo, ['--proto', 'udp', '--listen', '0.0.0.0:5406', '--backend', formatEndpoint(ADDR.backend4, 5400),
      '--max-sessions', '1000', '--log-level', 'warn']);
    const fdDir = `/proc/${proc.child.pid}/fd`;
    const baseline = fs.readdirSync(fdDir).length;
    let maxFds = baseline;
    const sampler = setInterval(() => {
      try { maxFds = Math.max(maxFds, fs.readdirSync(fdDir).length); } catch { /* exited */ }
    }, 20);
    const client = topo.lab.spawn(topo.client, [process.execPath, udpToolsPath(), 'flows',
      '--target', `${ADDR.relayClientSide4}:5406`, '--flows', '10000', '--batch', '200', '--timeout', '3000']);
    await client.waitFor(/"event":"flows-result"/, 120_000);
    clearInterval(sampler);
    const result = events(client).find((e) => e.event === 'flows-result')!;
    t.equal(result.answered, 10000, 'every flow was answered');
    // A small constant over the table: a new session's socket opens just before
    // the oldest is evicted, and libuv opens a few fds of its own lazily.
    t.ok(maxFds <= baseline + 1000 + 8, `relay's fds peaked at ${maxFds} (baseline ${baseline}, table 1000)`);
    t.equal(proc.child.exitCode, null, 'relay is still running');
    t.same(relayLogs(proc).filter((l) => Number(l.level) >= 50), [], 'no errors logged');
    const evictionLines = relayLogs(proc).filter((l) => String(l.msg).includes('evicted')).length;
    t.equal(evictionLines, 0, 'evictions are info lines, silent at warn');
  });
});
