// Torture, faults: SIGHUP, a throw inside one connection or session (the
// RELAY_TEST_FAULTS hook), a throw outside any, and durations at both ends
// of what is valid. Each case checks what relay logged, that it is still up
// (or exited as it must), that it serves a normal client whose real address
// the backend sees, and that its fds came back.
import t from 'tap';
import * as fs from 'node:fs';
import {
  tcpLab, canRunLab, SKIP_REASON, ADDR, formatEndpoint, udpEcho, udpSend, udpSeen, clientSession, eventually,
} from './lab-fixture';
import {
  SCALE, startRelay, relayPid, snapshot, settleFds, runAbuse, abusiveBackend, servesNormalClient, relayLines, sleep,
  fdCount, RSS_SLACK_KIB,
} from '../torture/harness';
import { udpToolsPath } from '../../src/lab/peers';

const FD_SLACK = 3;

t.test('torture: faults, signals and durations', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'tflt');
  const backend = await abusiveBackend(topo, 7500);
  const udpBackend = await udpEcho(topo, 7500, [ADDR.backend4]);
  const backendArgs = ['--backend', formatEndpoint(ADDR.backend4, 7500)];

  t.test('SIGHUP: relay logs a warning and keeps serving', async (t) => {
    const proc = await startRelay(topo, ['--listen', '0.0.0.0:7501', ...backendArgs]);
    const pid = relayPid(proc);
    await servesNormalClient(topo, `${ADDR.relayClientSide4}:7501`, backend);
    const before = fdCount(pid);
    for (let i = 0; i < 3; i++) {
      if (proc.child.exitCode !== null) break;
      try { process.kill(pid, 'SIGHUP'); } catch { break; } // gone: the HUP ended it
      await sleep(300);
    }
    t.equal(proc.child.exitCode, null, `relay is still running after 3 SIGHUPs (exit: ${proc.child.exitCode})`);
    const sighupLines = () => relayLines(proc).filter((l) => String(l.msg).startsWith('SIGHUP'));
    // relay writes its log every 200 ms: the third line may still be on its way.
    await eventually(() => sighupLines().length >= 3 || undefined, 3000, 'a line for each SIGHUP').catch(() => undefined);
    const warns = sighupLines();
    t.equal(warns.length, 3, 'one line per SIGHUP, msg starting SIGHUP');
    t.ok(warns.every((l) => l.level === 40), 'at warn level');
    if (proc.child.exitCode === null) {
      const served = await servesNormalClient(topo, `${ADDR.relayClientSide4}:7501`, backend);
      t.ok(served.ok && served.backendSawClient, 'serves a normal client, the backend sees its address');
      t.ok(await settleFds(pid, before, FD_SLACK, 5000) <= before + FD_SLACK, 'fds unchanged');
      await proc.stop();
    }
  });

  t.test('a throw inside one TCP connection or UDP session closes only it', async (t) => {
    const env = { RELAY_TEST_FAULTS: 'tcp-connection:41501,udp-session:41502' };
    const proc = await startRelay(topo, ['--proto', 'tcp,udp', '--listen', '0.0.0.0:7502', ...backendArgs], { env });
    const pid = relayPid(proc);
    t.ok(fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(`RELAY_TEST_FAULTS=${env.RELAY_TEST_FAULTS}`),
      "the env reached relay through ip netns exec and env -u NODE_OPTIONS");
    await servesNormalClient(topo, `${ADDR.relayClientSide4}:7502`, backend);
    const base = await snapshot(proc);

    // TCP: the faulty client, with well-behaved ones around it.
    const [faulty, ...others] = await Promise.all([
      runAbuse(topo.lab, topo.client, 'hello', ['--target', `${ADDR.relayClientSide4}:7502`, '--local-port', '41501',
        '--timeout', '3000'], 'hello-result', 10_000),
      ...Array.from({ length: 5 }, () => runAbuse(topo.lab, topo.client, 'hello', ['--target', `${ADDR.relayClientSide4}:7502`,
        '--timeout', '3000'], 'hello-result', 10_000)),
    ]);
    t.equal(faulty.ok, false, 'the faulty connection got no echo');
    t.not(faulty.error, 'timeout', `its connection ended rather than hung (${JSON.stringify(faulty)})`);
    t.ok(others.every((o) => o.ok), 'the other clients at the same time were served');
    t.equal(proc.child.exitCode, null, 'relay is still running');
    const tcpLine = await waitForLine(proc, 'internal error: connection closed');
    t.equal(tcpLine?.level, 50, 'logged at error level');
    t.equal(tcpLine?.client, `${ADDR.client4}:41501`, 'with the client');
    t.equal(tcpLine?.backend, formatEndpoint(ADDR.backend4, 7500), 'and the backend');
    t.match(String(JSON.stringify(tcpLine?.err)), /injected fault[\s\S]*\bat /, 'and the error with its stack');

    // UDP: the faulty client's session ends at the backend's first reply.
    const seenBefore = udpSeen(udpBackend).length;
    const faultyUdp = await udpSend(topo, `${ADDR.relayClientSide4}:7502`, ['--local-port', '41502', '--timeout', '1500']);
    t.equal(faultyUdp.replies.length, 0, 'the faulty session\'s reply is not delivered');
    t.ok(udpSeen(udpBackend).slice(seenBefore).some((s) => s.remote === ADDR.client4 && s.port === 41502),
      'its datagram reached the backend from the client\'s address and port');
    const udpLine = await waitForLine(proc, 'internal error: session closed');
    t.equal(udpLine?.level, 50);
    t.equal(udpLine?.client, `${ADDR.client4}:41502`);
    t.match(String(JSON.stringify(udpLine?.err)), /injected fault[\s\S]*\bat /);
    const goodUdp = await udpSend(topo, `${ADDR.relayClientSide4}:7502`, ['--local-port', '41503']);
    t.equal(goodUdp.replies.length, 1, 'another UDP client is answered');

    const served = await servesNormalClient(topo, `${ADDR.relayClientSide4}:7502`, backend);
    t.ok(served.ok && served.backendSawClient, 'a normal TCP client is served afterwards, its address seen by the backend');
    const fds = await settleFds(pid, base.fds, FD_SLACK);
    t.ok(fds <= base.fds + FD_SLACK, `fds back: ${fds} (before ${base.fds})`);

    const code = await proc.stop('SIGTERM');
    const stopped = relayLines(proc, 'relay stopped')[0];
    t.comment(`relay exited ${code} after the contained faults`);
    t.equal((stopped?.tcp as Record<string, number> | undefined)?.internalErrors, 1, 'tcp stats: internalErrors 1');
    t.equal((stopped?.udp as Record<string, number> | undefined)?.internalErrors, 1, 'udp stats: internalErrors 1');
  });

  t.test('a throw outside any connection: one fatal line, a non-zero exit, no stack on stderr', async (t) => {
    const proc = await startRelay(topo, ['--listen', '0.0.0.0:7503', ...backendArgs],
      { env: { RELAY_TEST_FAULTS: 'tcp-listener:41504' } });
    const hello = await runAbuse(topo.lab, topo.client, 'hello', ['--target', `${ADDR.relayClientSide4}:7503`, '--local-port', '41504',
      '--timeout', '2000'], 'hello-result', 10_000);
    const code = await proc.exited(10_000).catch(() => 'still running');
    t.not(code, 'still running', `relay exited (the client saw ${JSON.stringify(hello)}; relay logged ${proc.stdout().slice(-600)})`);
    t.not(code, 0, `with a non-zero status (${code})`);
    const fatal = relayLines(proc).filter((l) => Number(l.level) >= 60);
    t.equal(fatal.length, 1, 'exactly one fatal line');
    t.match(String(fatal[0]?.msg), /^internal error outside any connection/);
    t.notMatch(proc.stderr(), /^\s+at /m, `no stack trace on stderr: ${proc.stderr().slice(0, 300)}`);
    t.equal(proc.stdout().split('\n').filter(Boolean).every((l) => l.startsWith('{')), true, 'stdout is JSON lines only');
  });

  t.test('durations: a 24h idle timeout does not fire at once, 1000h is refused; 1 ms timeouts under load leave no leak', async (t) => {
    // Past 2^31-1 ms (about 596h) Node's setTimeout fires after 1 ms: such a
    // value is refused at start, never taken as "at once".
    const tooLong = await startRelay(topo, ['--listen', '0.0.0.0:7504', ...backendArgs, '--idle-timeout', '1000h'],
      { timeoutMs: 5000 }).catch((err: Error) => err);
    t.ok(tooLong instanceof Error, '--idle-timeout 1000h is refused at start');
    t.match((tooLong as Error).message, /--idle-timeout 1000h is out of range: 0 \(off\) to 2147483647ms/, 'with the range');
    const proc = await startRelay(topo, ['--listen', '0.0.0.0:7504', ...backendArgs, '--idle-timeout', '24h']);
    const out = await clientSession(topo, `${ADDR.relayClientSide4}:7504`, ['--send', 'ehi'], 1500);
    t.equal(out.received, 'hi', '--idle-timeout 24h: echoed');
    t.equal(out.closedAfterMs, -1, '--idle-timeout 24h: an idle connection is still open after 1.5 s');
    t.notMatch(proc.stderr(), /TimeoutOverflowWarning/, '--idle-timeout 24h: no timer overflow');
    await proc.stop();

    // --connect-timeout 1ms under load.
    const tcp = await startRelay(topo, ['--listen', '0.0.0.0:7505', ...backendArgs, '--connect-timeout', '1ms', '--log-level', 'warn']);
    const tcpPid = relayPid(tcp);
    await servesNormalClient(topo, `${ADDR.relayClientSide4}:7505`, backend, 10);
    const tcpBase = await snapshot(tcp);
    const mix = await runAbuse(topo.lab, topo.client, 'tcp-mix', ['--target', `${ADDR.relayClientSide4}:7505`,
      '--conns', String(1000 * SCALE), '--parallel', '100', '--timeout', '3000'], 'mix-result', 120_000);
    t.comment(`--connect-timeout 1ms: ${JSON.stringify(mix.byKind).slice(0, 200)}...`);
    const tcpFds = await settleFds(tcpPid, tcpBase.fds, FD_SLACK);
    t.equal(tcp.child.exitCode, null, 'relay (--connect-timeout 1ms) is up');
    t.ok(tcpFds <= tcpBase.fds + FD_SLACK, `--connect-timeout 1ms: fds ${tcpFds}, before ${tcpBase.fds}`);
    // The failed connects mark the backend down (passive health); with no
    // active checks relay tries it again 10 s later. Wait for that, bounded.
    const health = () => relayLines(tcp).filter((l) => l.msg === 'backend up' || l.msg === 'backend down').at(-1);
    const deadline = Date.now() + 15_000;
    await sleep(300); // relay writes its log every 200 ms: a last 'backend down' may be on its way
    while (health()?.msg === 'backend down' && Date.now() < deadline) await sleep(100);
    t.comment(`health after the 1 ms load: ${health()?.msg ?? 'never marked'}`);
    const tcpServed = await servesNormalClient(topo, `${ADDR.relayClientSide4}:7505`, backend, 10);
    t.ok(tcpServed.ok && tcpServed.backendSawClient, 'a normal client is served (a few tries: 1 ms is short)');
    const after = await snapshot(tcp);
    t.ok(after.rssKiB <= tcpBase.rssKiB + RSS_SLACK_KIB, `RSS ${after.rssKiB} KiB (before ${tcpBase.rssKiB})`);
    await tcp.stop();

    // --session-timeout 1ms under a UDP load.
    const udp = await startRelay(topo, ['--proto', 'udp', '--listen', '0.0.0.0:7506', ...backendArgs, '--session-timeout', '1ms',
      '--log-level', 'warn']);
    const udpPid = relayPid(udp);
    const udpBase = await snapshot(udp);
    const flood = topo.lab.spawn(topo.client, [process.execPath, udpToolsPath(), 'flows', '--target',
      `${ADDR.relayClientSide4}:7506`, '--flows', String(3000 * SCALE), '--batch', '300', '--timeout', '500']);
    await flood.waitFor(/"event":"flows-result"/, 120_000);
    await sleep(200); // the sweeper closes what expired
    const udpFds = await settleFds(udpPid, udpBase.fds, FD_SLACK);
    t.equal(udp.child.exitCode, null, 'relay (--session-timeout 1ms) is up');
    t.ok(udpFds <= udpBase.fds + FD_SLACK, `--session-timeout 1ms: fds ${udpFds}, before ${udpBase.fds}`);
    let answered = 0;
    for (let i = 0; i < 10 && answered === 0; i++) {
      answered = (await udpSend(topo, `${ADDR.relayClientSide4}:7506`, ['--timeout', '500'])).replies.length;
    }
    t.ok(answered > 0, 'a normal UDP client is answered (a few tries: a reply after 1 ms finds its session gone)');
    t.equal(udpSeen(udpBackend).at(-1)?.remote, ADDR.client4, "the backend saw the client's address");
    await udp.stop();
  });
});

async function waitForLine(proc: Parameters<typeof relayLines>[0], msg: string): Promise<Record<string, unknown> | undefined> {
  const deadline = Date.now() + 3000;
  while (Date.now() < deadline) {
    const line = relayLines(proc, msg)[0];
    if (line) return line;
    await sleep(50);
  }
  return undefined;
}
