// Torture, backends: one of two backends is killed with SIGKILL under TCP
// and UDP load and started again. relay marks it down (active checks for TCP,
// passive reports for UDP), keeps serving through the other, marks it up once
// it is back and sends it clients again, with the clients' own addresses; its
// fds come back to where they were.
import t from 'tap';
import {
  tcpLab, canRunLab, SKIP_REASON, ADDR, formatEndpoint, udpEcho, udpSend, udpSeen, events,
} from './lab-fixture';
import {
  SCALE, startRelay, relayPid, snapshot, settleFds, runAbuse, abusiveBackend, servesNormalClient, relayLines, sleep,
  RSS_SLACK_KIB,
} from '../torture/harness';

const FD_SLACK = 3;

t.test('torture: a backend killed and restarted under load', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'tbke');
  let victim = await abusiveBackend(topo, 7700);
  const survivor = await abusiveBackend(topo, 7701);
  let udpVictim = await udpEcho(topo, 7700, [ADDR.backend4]);
  const udpSurvivor = await udpEcho(topo, 7701, [ADDR.backend4]);
  const victimName = formatEndpoint(ADDR.backend4, 7700);

  const proc = await startRelay(topo, ['--proto', 'tcp,udp', '--listen', '0.0.0.0:7702',
    '--backend', victimName, '--backend', formatEndpoint(ADDR.backend4, 7701),
    '--health-interval', '200ms', '--health-timeout', '200ms', '--health-rise', '2', '--health-fall', '2', '--session-timeout', '1s']);
  const pid = relayPid(proc);
  const target = `${ADDR.relayClientSide4}:7702`;
  await servesNormalClient(topo, target, victim);
  await servesNormalClient(topo, target, survivor);
  await sleep(1200); // the warm-up's sessions expire
  const base = await snapshot(proc);
  const healthLines = (msg: string) => relayLines(proc, msg).filter((l) => l.backend === victimName);

  const loadMs = 8000 * SCALE;
  const load = Promise.all([
    runAbuse(topo.lab, topo.client, 'tcp-load', ['--target', target, '--duration', String(loadMs), '--parallel', '10',
      '--timeout', '2000'], 'load-result', loadMs + 30_000),
    runAbuse(topo.lab, topo.client, 'udp-steady', ['--target', target, '--local-port', '43000', '--every', '20',
      '--duration', String(loadMs)], 'steady-result', loadMs + 30_000),
  ]);
  const rounds = SCALE;
  for (let round = 0; round < rounds; round++) {
    await sleep(1000);
    await victim.stop('SIGKILL');
    await udpVictim.stop('SIGKILL');
    // UDP: datagrams to the dead port bring ICMP port unreachable, a passive failure.
    for (let i = 0; i < 3; i++) await udpSend(topo, target, ['--local-port', String(43100 + round * 10 + i), '--timeout', '300']);
    await waitFor(() => healthLines('backend down').filter((l) => l.proto === 'tcp').length > round, 5000);
    await sleep(1000); // serving through the survivor alone
    victim = await abusiveBackend(topo, 7700);
    udpVictim = await udpEcho(topo, 7700, [ADDR.backend4]);
    await waitFor(() => healthLines('backend up').filter((l) => l.proto === 'tcp').length > round, 10_000);
  }
  const [tcpLoad, steady] = await load;
  t.comment(`tcp load ${JSON.stringify(tcpLoad)}; udp ${JSON.stringify(steady)}; health lines: ` +
    JSON.stringify(relayLines(proc).filter((l) => /^backend (up|down)$/.test(String(l.msg))).map((l) => `${l.proto} ${l.msg}: ${l.reason}`)));
  t.equal(proc.child.exitCode, null, 'relay is still running');
  t.equal(healthLines('backend down').filter((l) => l.proto === 'tcp').length, rounds, 'TCP: marked down once per kill');
  t.equal(healthLines('backend up').filter((l) => l.proto === 'tcp').length, rounds, 'TCP: marked up again once back');
  t.ok(healthLines('backend down').some((l) => l.proto === 'udp'), 'UDP: marked down by the refused datagrams');
  t.ok(Number(tcpLoad.ok) > Number(tcpLoad.failed) * 5, `TCP kept being served: ${tcpLoad.ok} ok, ${tcpLoad.failed} failed`);
  t.ok(Number(steady.answered) >= Number(steady.sent) * 0.5, `UDP kept being answered: ${steady.answered} of ${steady.sent}`);

  // Once back, the restarted backend gets clients again, with their own address.
  const victimAccepts = () => events(victim).filter((e) => e.event === 'accept' && e.remote === ADDR.client4).length;
  const before = victimAccepts();
  for (let i = 0; i < 4 && victimAccepts() === before; i++) {
    const served = await servesNormalClient(topo, target, i % 2 === 0 ? victim : survivor);
    t.ok(served.ok, `client ${i + 1} served`);
  }
  t.ok(victimAccepts() > before, 'the restarted backend accepts clients again, from their own address');
  // UDP: wait for the passive retry (or a fresh session) to reach it.
  const udpBefore = udpSeen(udpVictim).length;
  const deadline = Date.now() + 15_000;
  let port = 43500;
  while (udpSeen(udpVictim).length === udpBefore && Date.now() < deadline) {
    await udpSend(topo, target, ['--local-port', String(port++), '--timeout', '300']);
  }
  t.ok(udpSeen(udpVictim).slice(udpBefore).some((s) => s.remote === ADDR.client4), 'and UDP clients too (passive mark recovered)');
  void udpSurvivor;

  await sleep(1200); // sessions expire
  const fds = await settleFds(pid, base.fds, FD_SLACK);
  const after = await snapshot(proc);
  t.comment(`relay fds: ${base.fds} before, ${fds} after; RSS ${base.rssKiB} -> ${after.rssKiB} KiB`);
  t.ok(fds <= base.fds + FD_SLACK, `fds back: ${fds} (before ${base.fds})`);
  t.ok(after.rssKiB <= base.rssKiB + RSS_SLACK_KIB, `RSS ${after.rssKiB} KiB, baseline ${base.rssKiB} KiB`);
  await proc.stop();
});

async function waitFor(fn: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!fn() && Date.now() < deadline) await sleep(50);
  return fn();
}

