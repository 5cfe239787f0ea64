// Several backends: health checks take a dead backend out and bring it back,
// a refused connect is retried on another backend, and with every backend
// down clients are refused at once.
import t from 'tap';
import * as path from 'node:path';
import {
  tcpLab, relay, toolServer, clientSession, canRunLab, SKIP_REASON, ADDR, formatEndpoint, accepts, eventually, relayLogs,
} from './lab-fixture';
import { waitForListener } from '../../src/lab/netns';
import { relayPid, fdCount, settleFds } from '../torture/harness';

const b = (port: number) => formatEndpoint(ADDR.backend4, port);

t.test('balancing and health', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'bal');

  t.test('a killed backend is marked down within interval x fall, gets nothing new, and comes back after rise', async (t) => {
    let a = await toolServer(topo, 'echo', 7600, [ADDR.backend4]);
    const other = await toolServer(topo, 'echo', 7601, [ADDR.backend4]);
    const proc = await relay(topo, ['--listen', '0.0.0.0:7610', '--backend', b(7600), '--backend', b(7601),
      '--health-interval', '300ms', '--health-fall', '2', '--health-rise', '2', '--health-timeout', '200ms']);
    await a.stop('SIGKILL');
    const killedAt = Date.now();
    const down = await eventually(() => relayLogs(proc, 'backend down')[0], 3000, 'backend down');
    const tookMs = Date.now() - killedAt;
    t.equal(down.backend, b(7600));
    // Worst case: the kill lands just after a check, then `fall` more checks, each up to its timeout.
    t.ok(tookMs <= 300 * (2 + 1) + 200 + 500, `marked down ${tookMs} ms after the kill (interval 300 ms x fall 2)`);
    const before = accepts(other).filter((x) => x.remote === ADDR.client4).length;
    for (let i = 0; i < 6; i++) {
      const out = await clientSession(topo, `${ADDR.relayClientSide4}:7610`, ['--send', `n${i}`, '--end']);
      t.equal(out.received, `n${i}`, `client ${i} answered`);
    }
    t.equal(accepts(other).filter((x) => x.remote === ADDR.client4).length - before, 6, 'all six went to the live backend');

    a = await toolServer(topo, 'echo', 7600, [ADDR.backend4]);
    const up = await eventually(() => relayLogs(proc, 'backend up')[0], 3000, 'backend up');
    t.equal(up.backend, b(7600));
    for (let i = 0; i < 4; i++) await clientSession(topo, `${ADDR.relayClientSide4}:7610`, ['--send', 'x', '--end']);
    t.ok(accepts(a).some((x) => x.remote === ADDR.client4), 'the recovered backend gets clients again');
  });

  await toolServer(topo, 'echo', 7621, [ADDR.backend4]);
  for (const [i, balance] of (['roundrobin', 'leastconn', 'maglev'] as const).entries()) {
    t.test(`${balance}: a refused connect is retried once on another backend, unseen by the client`, async (t) => {
      // Nothing listens on 7620; health checks off, and fall high enough that
      // it stays up: only the retry can save a client sent there.
      const port = 7622 + i;
      const proc = await relay(topo, ['--listen', `0.0.0.0:${port}`, '--backend', b(7620), '--backend', b(7621),
        '--balance', balance, '--health-fall', '100']);
      for (let n = 0; n < 4; n++) {
        const out = await clientSession(topo, `${ADDR.relayClientSide4}:${port}`, ['--send', `r${n}`, '--end']);
        t.equal(out.received, `r${n}`, `client ${n} answered`);
      }
      const retry = await eventually(() => relayLogs(proc, 'backend connect failed: trying another backend')[0]);
      t.equal(retry.failedBackend, b(7620));
      t.equal(retry.backend, b(7621), 'the line names the backend actually used');
      t.equal(retry.code, 'ECONNREFUSED');
    });
  }

  t.test('reject: a retry never goes to a backend of the other family; the lines name the backend tried', async (t) => {
    // 7620 refuses; the only other backend is IPv6, which --on-family-mismatch reject would refuse for this IPv4 client.
    const six = await toolServer(topo, 'echo', 7640, [ADDR.backend6]);
    const proc = await relay(topo, ['--listen', '0.0.0.0:7641', '--backend', b(7620),
      '--backend', formatEndpoint(ADDR.backend6, 7640), '--health-fall', '100']);
    const pid = relayPid(proc);
    const fdsBefore = fdCount(pid);
    const out = await clientSession(topo, `${ADDR.relayClientSide4}:7641`, ['--send', 'x']);
    t.equal(out.received, '', 'the client is turned away');
    const line = await eventually(() => relayLogs(proc, 'backend connect failed: client closed')[0], 3000, 'the closing line');
    t.equal(line.backend, b(7620), 'the closing line names the backend that refused');
    t.equal(line.reason, 'backend refused');
    t.same(relayLogs(proc, 'backend connect failed: trying another backend'), [], 'no retry across families');
    t.notOk(relayLogs(proc).some((l) => String(l.msg).includes('families differ')), 'no family-mismatch line');
    t.same(accepts(six), [], 'the IPv6 backend saw nothing');
    t.equal(await settleFds(pid, fdsBefore, 0), fdsBefore, 'relay\'s fds are back where they were');
    await proc.stop('SIGTERM');
    const stopped = relayLogs(proc, 'relay stopped')[0];
    t.match(stopped, { tcp: { rejectedFamilyMismatch: 0, retried: 0 } }, 'counted as neither a mismatch nor a retry');
  });

  t.test('every backend down: clients refused at once, logged and counted', async (t) => {
    const proc = await relay(topo, ['--listen', '0.0.0.0:7632', '--backend', b(7630), '--backend', b(7631),
      '--health-interval', '200ms', '--health-fall', '1']);
    await eventually(() => relayLogs(proc, 'backend down').length === 2 || undefined, 3000, 'both down');
    const out = await clientSession(topo, `${ADDR.relayClientSide4}:7632`, ['--send', 'x']);
    t.ok(out.closedAfterMs >= 0 && out.closedAfterMs < 500, `refused in ${out.closedAfterMs} ms`);
    t.equal(out.error, 'ECONNRESET');
    const line = await eventually(() => relayLogs(proc, 'no backend is up: refusing client')[0]);
    t.equal(line.rejected, 1);
    t.match(line, { proto: 'tcp', listen: '0.0.0.0:7632' }, 'the line names the listener');
  });

  t.test('UDP health probe against a real DNS server', async (t) => {
    const dnsmasq = topo.lab.spawn(topo.backend, ['dnsmasq', '--keep-in-foreground', '--conf-file=/dev/null', '--no-resolv',
      '--no-hosts', '--bind-interfaces', `--listen-address=${ADDR.backend4}`, '--except-interface=lo', '--port=5353',
      '--user=root', `--pid-file=${path.join(topo.lab.dir, 'dnsmasq-h.pid')}`, '--address=/relay.test/203.0.113.7']);
    await waitForListener(topo.backend, 'udp', 5353);
    // A DNS query for relay.test A (id 0x1234, recursion desired).
    const probe = '123401000001000000000000' + '0572656c617904746573740000010001';
    const proc = await relay(topo, ['--proto', 'udp', '--listen', '0.0.0.0:7653', '--backend', b(5353), '--backend', b(5354),
      '--health-interval', '200ms', '--health-fall', '2', '--health-rise', '1', '--health-udp-probe', probe]);
    const down = await eventually(() => relayLogs(proc, 'backend down')[0], 3000, 'the backend without DNS goes down');
    t.equal(down.backend, b(5354));
    t.equal(relayLogs(proc, 'backend down').length, 1, 'the real DNS server stays up');
    const answer = topo.client.run('dig', `@${ADDR.relayClientSide4}`, '-p', '7653', 'relay.test', 'A', '+short', '+time=2', '+tries=1');
    t.equal(answer.trim(), '203.0.113.7', 'queries go to the live DNS server');
    await dnsmasq.stop('SIGKILL');
    const second = await eventually(() => relayLogs(proc, 'backend down')[1], 3000, 'dnsmasq killed: down');
    t.equal(second.backend, b(5353));
  });
});
