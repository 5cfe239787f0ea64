// UDP follows the same --on-family-mismatch rule as TCP, and a flood of
// evictions costs a few log lines, not one per session.
import t from 'tap';
import {
  tcpLab, relay, canRunLab, SKIP_REASON, ADDR, formatEndpoint, udpEcho, udpSend, udpSeen, udpToolsPath, eventually,
  relayLogs, events,
} from './lab-fixture';

t.test('UDP family mismatch and eviction logging', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'udpm');
  const echo = await udpEcho(topo, 5500, [ADDR.backend4]);

  t.test('reject: an IPv6 client gets nothing and the backend sees nothing', async (t) => {
    const proc = await relay(topo, ['--proto', 'udp', '--listen', '[::]:5501', '--backend', formatEndpoint(ADDR.backend4, 5500)]);
    const before = udpSeen(echo).length;
    const out = await udpSend(topo, `[${ADDR.relayClientSide6}]:5501`, ['--local-port', '42001', '--timeout', '800']);
    t.equal(out.replies.length, 0);
    t.equal(udpSeen(echo).length, before, 'the backend received nothing');
    const warn = await eventually(() => relayLogs(proc).find((l) => String(l.msg).includes('families differ')), 3000, 'warning');
    t.equal(warn.client, `[${ADDR.client6}]:42001`);
  });

  t.test("masquerade: relayed from relay's own address", async (t) => {
    await relay(topo, ['--proto', 'udp', '--listen', '[::]:5502', '--backend', formatEndpoint(ADDR.backend4, 5500),
      '--on-family-mismatch', 'masquerade']);
    const out = await udpSend(topo, `[${ADDR.relayClientSide6}]:5502`, ['--local-port', '42002']);
    t.equal(out.replies.length, 1, 'answered');
    t.equal(out.replies[0].from, `${ADDR.relayClientSide6}:5502`);
    t.equal(udpSeen(echo).at(-1)?.remote, ADDR.relayBackendSide4);
  });

  t.test('a flood of evictions is logged in a few lines', async (t) => {
    const proc = await relay(topo, ['--proto', 'udp', '--listen', '0.0.0.0:5503', '--backend', formatEndpoint(ADDR.backend4, 5500),
      '--max-sessions', '100']);
    const client = topo.lab.spawn(topo.client, [process.execPath, udpToolsPath(), 'flows',
      '--target', `${ADDR.relayClientSide4}:5503`, '--flows', '2000', '--batch', '50', '--timeout', '3000']);
    await client.waitFor(/"event":"flows-result"/, 60_000);
    t.equal(events(client).find((e) => e.event === 'flows-result')?.answered, 2000);
    const lines = await eventually(() => {
      const found = relayLogs(proc).filter((l) => String(l.msg).includes('evicted'));
      return found.length > 0 ? found : undefined;
    }, 3000, 'eviction lines');
    t.equal(lines.length, 5, 'five lines in the first 10 s window');
    t.equal(relayLogs(proc, 'session ended').length, 0, 'no per-session lines for evictions');
    // The window's summary line comes when the window ends, 10 s after the first line.
    const summary = await eventually(() => relayLogs(proc).find((l) => Number(l.suppressed) > 0), 12_000, 'summary line');
    proc.child.kill('SIGTERM');
    await proc.exited(5000);
    const stats = relayLogs(proc, 'relay stopped')[0]?.udp as { sessionsEnded: { evicted: number } };
    t.ok(stats.sessionsEnded.evicted >= 1800, `${stats.sessionsEnded.evicted} evictions`);
    t.equal(Number(summary.suppressed) + 5, stats.sessionsEnded.evicted, 'five lines plus the summary count every eviction');
  });
});
