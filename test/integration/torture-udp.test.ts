// Torture, UDP: floods from thousands of client ports and from hundreds of
// spoofed source addresses through a table of 64 sessions, while a normal
// client keeps talking. relay must stay up, keep answering the normal client,
// hold no more than its table's worth of sockets, and give them all back.
import t from 'tap';
import {
  tcpLab, canRunLab, SKIP_REASON, ADDR, formatEndpoint, udpEcho, udpSend, udpSeen, udpToolsPath, events,
} from './lab-fixture';
import { SCALE, startRelay, relayPid, snapshot, settleFds, runAbuse, fdCount, sleep, RSS_SLACK_KIB, relayLines } from '../torture/harness';

const FD_SLACK = 3;
const MAX_SESSIONS = 64;
/** Spoofed clients: documentation addresses the client namespace owns through an AnyIP `local` route. */
const SPOOF_NET = '203.0.113.0/24';
const SPOOF_RANGE = '203.0.113.1-203.0.113.200';
/** Spoofed sources for the round after the flood: sessions of their own, none evicted. */
const QUIET_SPOOF_RANGE = '203.0.113.201-203.0.113.220';

t.test('torture: UDP floods through a small session table', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'tudp');
  // Every address in SPOOF_NET is the client's own (sockets bind to any of
  // them); relay sends replies for it back to the client. Inside the lab only.
  topo.client.ip('route', 'add', 'local', SPOOF_NET, 'dev', 'lo');
  topo.relay.ip('route', 'add', SPOOF_NET, 'via', ADDR.client4);
  const echo = await udpEcho(topo, 7600, [ADDR.backend4]);

  t.test(`floods from thousands of ports and 200 spoofed addresses, --max-sessions ${MAX_SESSIONS}`, async (t) => {
    const proc = await startRelay(topo, ['--proto', 'udp', '--listen', '0.0.0.0:7601', '--backend', formatEndpoint(ADDR.backend4, 7600),
      '--max-sessions', String(MAX_SESSIONS), '--session-timeout', '2s', '--log-level', 'warn']);
    const pid = relayPid(proc);
    const target = `${ADDR.relayClientSide4}:7601`;
    const warm = await udpSend(topo, target, ['--local-port', '42001']);
    t.equal(warm.replies.length, 1, 'answered before the flood');
    const base = { fds: fdCount(pid) - 1, rssKiB: (await snapshot(proc)).rssKiB }; // less the warm-up's session
    let peak = 0;
    const sampler = setInterval(() => { try { peak = Math.max(peak, fdCount(pid)); } catch { /* exited */ } }, 20);

    const seenBefore = udpSeen(echo).length;
    const floodMs = 6000 * SCALE;
    const [steady, ports, spoofed] = await Promise.all([
      runAbuse(topo.lab, topo.client, 'udp-steady', ['--target', target, '--local-port', '42000', '--every', '20',
        '--duration', String(floodMs)], 'steady-result', floodMs + 30_000),
      (async () => {
        const flood = topo.lab.spawn(topo.client, [process.execPath, udpToolsPath(), 'flows', '--target', target,
          '--flows', String(5000 * SCALE), '--batch', '500', '--timeout', '300']);
        await flood.waitFor(/"event":"flows-result"/, floodMs + 60_000);
        return events(flood).find((e) => e.event === 'flows-result')!;
      })(),
      runAbuse(topo.lab, topo.client, 'udp-spoof', ['--target', target, '--sources', SPOOF_RANGE, '--ports', String(10 * SCALE),
        '--batch', '400', '--timeout', '300'], 'spoof-result', floodMs + 60_000),
    ]);
    clearInterval(sampler);
    t.comment(`steady ${JSON.stringify(steady)}; ports ${JSON.stringify(ports)}; spoofed ${JSON.stringify(spoofed)}; ` +
      `fds peaked at ${peak} (base ${base.fds})`);
    t.equal(proc.child.exitCode, null, 'relay is still running');
    // The normal client's session is evicted again and again by the flood;
    // each datagram opens it anew, so most still get their answer.
    t.ok(Number(steady.answered) >= Number(steady.sent) * 0.5,
      `the normal client kept getting answers: ${steady.answered} of ${steady.sent}`);
    t.ok(Number(spoofed.bindFailed) === 0, 'every spoofed source could be bound in the client namespace');
    const seen = udpSeen(echo).slice(seenBefore);
    const spoofedSeen = new Set(seen.filter((s) => s.remote.startsWith('203.0.113.')).map((s) => s.remote));
    t.ok(spoofedSeen.size >= 190, `the backend saw the spoofed clients' own addresses (${spoofedSeen.size} of 200)`);
    // During the flood a spoofed flow's session is often evicted before its reply comes (CI has seen 0 of 2000
    // with the raw engine on a loaded machine): reported above; the quiet round below is the check.
    t.ok(peak <= base.fds + MAX_SESSIONS + 8, `relay's fds peaked at ${peak}: base ${base.fds} + a table of ${MAX_SESSIONS}`);

    const fds = await settleFds(pid, base.fds, FD_SLACK, 15_000);
    const after = await snapshot(proc);
    t.comment(`relay fds: ${base.fds} before, ${fds} after the sessions expired; RSS ${base.rssKiB} -> ${after.rssKiB} KiB`);
    t.ok(fds <= base.fds + FD_SLACK, `every session's socket was given back: ${fds} fds, ${base.fds} before`);
    t.ok(after.rssKiB <= base.rssKiB + RSS_SLACK_KIB, `RSS ${after.rssKiB} KiB, baseline ${base.rssKiB} KiB`);
    if (after.stats) t.equal((after.stats.udp as Record<string, number>).sessions, 0, 'relay says no session is open');

    // Replies reach spoofed clients, the table no longer flooded: 20 sources, one flow each.
    const quiet = await runAbuse(topo.lab, topo.client, 'udp-spoof', ['--target', target, '--sources', QUIET_SPOOF_RANGE,
      '--ports', '1', '--batch', '20', '--timeout', '1000'], 'spoof-result', 30_000);
    t.ok(Number(quiet.answered) >= Number(quiet.flows) - 1,
      `replies found their way back to spoofed clients after the flood: ${quiet.answered} of ${quiet.flows}`);
    const normal = await udpSend(topo, target, ['--local-port', '42002']);
    t.equal(normal.replies.length, 1, 'a normal client is answered afterwards');
    t.same(udpSeen(echo).at(-1), { remote: ADDR.client4, port: 42002, bytes: 32 }, "the backend saw its address and port");
    t.same(relayLines(proc).filter((l) => Number(l.level) >= 50), [], 'no error lines');
    await proc.stop();
  });
});
