// Torture, TCP: abusive clients and backends in parallel (FIN then RST from
// either side, RST at once, RST mid-transfer, slow and never-reading peers),
// and relay under a low open-file limit. After each case relay is up, serves
// a normal client whose real address the backend sees, and holds the fds it
// held before (and no runaway RSS). TORTURE=long multiplies the counts.
import t from 'tap';
import { tcpLab, canRunLab, SKIP_REASON, ADDR, formatEndpoint, relayLogs } from './lab-fixture';
import {
  SCALE, startRelay, relayPid, snapshot, settleFds, runAbuse, abusiveBackend, servesNormalClient, RSS_SLACK_KIB,
  sleep,
} from '../torture/harness';

/** fds relay may hold over its baseline once the abuse is over: libuv opens a few lazily. */
const FD_SLACK = 3;

t.test('torture: abusive TCP peers', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'ttcp');
  const backend = await abusiveBackend(topo, 7400);
  const v4 = `${ADDR.relayClientSide4}:7401`;
  const v6 = `[${ADDR.relayClientSide6}]:7402`;

  t.test('1,500 abusive connections (FIN meets RST, resets, slow readers) leave relay\'s fds where they were', async (t) => {
    const proc = await startRelay(topo, ['--listen', '0.0.0.0:7401', '--backend', formatEndpoint(ADDR.backend4, 7400),
      '--listen', '[::]:7402', '--backend', formatEndpoint(ADDR.backend6, 7400), '--log-level', 'warn']);
    const pid = relayPid(proc);
    // Warm up first (libuv's lazily opened fds, V8's heap), then take the baseline.
    // Echo only: the warm-up must not leak into the baseline itself.
    await runAbuse(topo.lab, topo.client, 'tcp-mix', ['--target', v4, '--conns', '300', '--parallel', '50', '--kinds', 'echo'],
      'mix-result', 60_000);
    await sleep(500); // the warm-up's last connections close
    const base = await snapshot(proc);

    const total = 1500 * SCALE;
    const started = Date.now();
    // The known leak is a reset meeting a FIN relay is still passing on
    // (1 to 20 in 100 such connections before the fix, varying with load): 80% of the load is that
    // pattern (the backend resets, or the client does), over both families;
    // the rest is the whole mix, slow and never-reading peers included.
    const leakKinds = 'fin/backend-reset,big-fin/backend-reset,fin-then-reset/echo';
    const mix = (target: string, conns: number, parallel: number, kinds?: string) => runAbuse(topo.lab, topo.client, 'tcp-mix',
      ['--target', target, '--conns', String(conns), '--parallel', String(parallel), '--timeout', '3000',
        ...(kinds ? ['--kinds', kinds] : [])], 'mix-result', 300_000);
    const results = await Promise.all([
      mix(v4, total * 0.4, 50, leakKinds),
      mix(v6, total * 0.4, 50, leakKinds),
      mix(v4, total * 0.2, 30),
    ]);
    const connected = results.reduce((n, r) => n + Object.values(r.byKind as Record<string, { connected: number }>)
      .reduce((m, k) => m + k.connected, 0), 0);
    t.comment(`${total} abusive connections in ${Date.now() - started} ms, ${connected} connected`);
    t.ok(connected >= total * 0.95, `nearly all connected (${connected} of ${total})`);
    if (proc.child.exitCode !== null) {
      t.fail(`relay exited (${proc.child.exitCode}): ${proc.stderr().slice(0, 800)} ${relayLogs(proc).filter((l) => Number(l.level) >= 50).map((l) => JSON.stringify(l)).join(' ').slice(0, 800)}`);
      return;
    }

    const fds = await settleFds(pid, base.fds, FD_SLACK);
    const after = await snapshot(proc);
    t.comment(`relay fds: ${base.fds} before, ${fds} after; RSS ${base.rssKiB} KiB before, ${after.rssKiB} KiB after`);
    t.equal(proc.child.exitCode, null, 'relay is still running');
    t.ok(fds <= base.fds + FD_SLACK, `relay's fds are back: ${fds} after, ${base.fds} before (${fds - base.fds} not given back)`);
    t.ok(after.rssKiB <= base.rssKiB + RSS_SLACK_KIB, `RSS ${after.rssKiB} KiB, baseline ${base.rssKiB} KiB`);
    if (after.stats) {
      const tcp = after.stats.tcp as Record<string, number>;
      t.equal(tcp.open, 0, 'relay says no connection is open');
      t.equal(typeof after.stats.fds, 'number', 'the stats line counts fds');
    }
    const served = await servesNormalClient(topo, v4, backend);
    t.ok(served.ok, `a normal client is served afterwards: ${JSON.stringify(served.client)}`);
    t.ok(served.backendSawClient, "the backend saw the client's own address and port");
    t.same(relayLogs(proc).filter((l) => Number(l.level) >= 50), [], 'no error lines');
    await proc.stop();
  });

  t.test('600 concurrent clients through relay at a 256 open-file limit: it stays up and serves after', async (t) => {
    // setpriv drops CAP_SYS_RESOURCE, without which relay (as root) could
    // raise its hard limit again; prlimit sets 256. Both exec in place.
    const proc = await startRelay(topo, ['--listen', '0.0.0.0:7411', '--backend', formatEndpoint(ADDR.backend4, 7400),
      '--log-level', 'warn'], { wrap: ['prlimit', '--nofile=256:256', 'setpriv', '--bounding-set', '-sys_resource'] });
    const pid = relayPid(proc);
    t.match(require('node:fs').readFileSync(`/proc/${pid}/limits`, 'utf8'), /Max open files\s+256\s+256/, 'relay runs at 256 fds');
    await servesNormalClient(topo, `${ADDR.relayClientSide4}:7411`, backend);
    const base = await snapshot(proc);
    const rounds = SCALE;
    for (let round = 0; round < rounds; round++) {
      const held = await runAbuse(topo.lab, topo.client, 'hold', ['--target', `${ADDR.relayClientSide4}:7411`,
        '--conns', '600', '--hold', '1500', '--timeout', '4000'], 'hold-result', 60_000);
      t.comment(`round ${round + 1}: ${JSON.stringify(held)}`);
      t.ok(Number(held.echoed) > 50, `some clients were served (${held.echoed} of 600)`);
      t.ok(Number(held.echoed) < 600, `not all could be (${held.echoed} of 600 at 256 fds): the limit was really hit`);
      t.equal(proc.child.exitCode, null, 'relay is still running');
    }
    const fds = await settleFds(pid, base.fds, FD_SLACK);
    const after = await snapshot(proc);
    t.comment(`relay fds: ${base.fds} before, ${fds} after; RSS ${base.rssKiB} -> ${after.rssKiB} KiB`);
    t.ok(fds <= base.fds + FD_SLACK, `fds back to ${fds} (before ${base.fds})`);
    t.ok(after.rssKiB <= base.rssKiB + RSS_SLACK_KIB, `RSS ${after.rssKiB} KiB, baseline ${base.rssKiB} KiB`);
    await sleep(100);
    const served = await servesNormalClient(topo, `${ADDR.relayClientSide4}:7411`, backend);
    t.ok(served.ok && served.backendSawClient, `a normal client is served normally afterwards: ${JSON.stringify(served.client)}`);
    await proc.stop();
  });
});
