// relay doctor on PROXY protocol services: it names the trusted fronts (and
// warns about a proxy-from that trusts everyone), and an upstream-source relay
// service passes with no return path at all, its probes carrying the header
// the backend expects. While relay serves, doctor also sends a header through
// relay's own listener from an address of the host inside proxy-from, naming
// the probe source: the backend must see that address.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import {
  tcpLab, canRunLab, SKIP_REASON, ADDR, formatEndpoint, udpToolsPath, relay, toolServer, accepts, eventually, udpEcho, udpSeen,
} from './lab-fixture';
import { relayPid, fdCount, settleFds } from '../torture/harness';
import { DEFAULT_PROBE_SOURCES } from '../../src/config';
import { startNginxHttp } from '../../src/lab/peers';
import { IN_NAMESPACE_ENV, waitForListener } from '../../src/lab/netns';
import { cliPath } from '../../src/lab/topology';

t.test('relay doctor and PROXY protocol', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'ppdo');
  // No return path: relay's routes are removed, so only upstream-source relay can work.
  topo.relay.run(process.execPath, cliPath(), 'routes', 'remove');
  await startNginxHttp(topo.lab, topo.backend, [ADDR.backend4, ADDR.backend6], 81, { proxyProtocol: true });
  topo.lab.spawn(topo.backend, [process.execPath, udpToolsPath(), 'echo', '--proxy-v2',
    '--listen', formatEndpoint(ADDR.backend4, 81), '--listen', formatEndpoint(ADDR.backend6, 81)]);
  await waitForListener(topo.backend, 'udp', 81);
  const doctor = (flags: string[]) => {
    const r = spawnSync('ip', ['netns', 'exec', topo.relay.name, ...IN_NAMESPACE_ENV, process.execPath, cliPath(), 'doctor',
      '--listen', '0.0.0.0:5353', '--backend', formatEndpoint(ADDR.backend4, 81), '--backend', formatEndpoint(ADDR.backend6, 81),
      '--probe-timeout', '1s', ...flags], { encoding: 'utf8', timeout: 30_000 });
    return { status: r.status, out: r.stdout, lines: r.stdout.split('\n') };
  };

  const relaySource = doctor(['--proto', 'tcp,udp', '--send-proxy', 'v2', '--upstream-source', 'relay',
    '--health-udp-probe', '70726f6265', '--proxy-protocol', 'v2', '--proxy-from', '192.0.2.0/24']);
  t.equal(relaySource.status, 0, `upstream-source relay passes without a return path:\n${relaySource.out}`);
  t.ok(relaySource.lines.some((l) => /^OK .*upstream-source relay.*need no return path/.test(l)), 'it says why no return path is needed');
  t.ok(relaySource.lines.some((l) => /^OK .*PROXY protocol v2 in: proxy-from.*192\.0\.2\.0\/24/.test(l)), 'it names the trusted fronts');
  // The UDP backend answers only a datagram whose v2 header it could read: the probe sent one.
  t.equal(relaySource.lines.filter((l) => /^OK .*end to end (tcp|udp) .* from relay's own address/.test(l)).length, 4,
    'four end-to-end probes from relay\'s own address (TCP and UDP, each backend), with a header');
  t.notOk(relaySource.lines.some((l) => /return path from/.test(l)), 'no return-path checks');

  const everyone = doctor(['--upstream-source', 'relay', '--proxy-protocol', 'v1', '--proxy-from', '0.0.0.0/0']);
  t.ok(everyone.lines.some((l) => /^WARN .*proxy-from.*0\.0\.0\.0\/0 trusts every sender/.test(l)), `a /0 is a WARN:\n${everyone.out}`);

  const transparent = doctor(['--send-proxy', 'v1']);
  t.equal(transparent.status, 1, 'upstream-source client without a return path fails');
  t.ok(transparent.lines.some((l) => /^OK .*send-proxy v1.*upstream-source relay would not/.test(l)), 'it points at upstream-source relay');
});

t.test('relay doctor sends a PROXY header through the running relay', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'ppdf');
  const backend = await toolServer(topo, 'echo', 82, [ADDR.backend4]);
  const listen = (port: number) => formatEndpoint(ADDR.relayClientSide4, port);
  // 192.0.2.0/24 holds relay's own client-side address, so doctor can send from there.
  const service = (port: number, from = '192.0.2.0/24') => ['--proto', 'tcp', '--listen', listen(port),
    '--backend', formatEndpoint(ADDR.backend4, 82), '--proxy-protocol', 'v2', '--proxy-from', from];
  const doctor = (port: number, from?: string) => {
    const r = spawnSync('ip', ['netns', 'exec', topo.relay.name, ...IN_NAMESPACE_ENV, process.execPath, cliPath(), 'doctor',
      ...service(port, from), '--probe-timeout', '1s'], { encoding: 'utf8', timeout: 30_000 });
    return { status: r.status, out: r.stdout, lines: r.stdout.split('\n') };
  };
  const probe = DEFAULT_PROBE_SOURCES[4];

  const idle = doctor(5460);
  t.ok(idle.lines.some((l) => /^OK .*through relay tcp .*5460 .*not checked: relay is not running/.test(l)),
    `without relay running, it says what it could not check:\n${idle.out}`);

  const proc = await relay(topo, service(5461));
  const pid = relayPid(proc);
  const fdsBefore = fdCount(pid);
  const acceptsBefore = accepts(backend).length;
  const served = doctor(5461);
  t.equal(served.status, 0, `doctor passes:\n${served.out}`);
  t.ok(served.lines.some((l) => new RegExp(`^OK .*through relay tcp ${listen(5461)} .*from ${ADDR.relayClientSide4}, ` +
    `a v2 header naming ${probe}: relay took the header`).test(l)), 'the probe went through relay\'s listener from an address inside proxy-from');
  const seen = await eventually(() => {
    const now = accepts(backend).slice(acceptsBefore);
    return now.length >= 2 ? now : undefined;
  }, 5000, 'the backend accepts the end-to-end probe and the one through relay');
  t.same(seen.map((a) => a.remote), [probe, probe], 'the backend saw the header\'s client twice: the direct probe, then through relay');
  t.equal(await settleFds(pid, fdsBefore, 0), fdsBefore, 'relay is back to its fds');

  // The running relay trusts one other front only: the header is refused, and doctor says so.
  await relay(topo, service(5462, `${ADDR.client4}/32`));
  const refused = doctor(5462);
  t.equal(refused.status, 1, 'a running relay that refuses the header fails the check');
  // Closed at once, or reset when the header had already arrived unread (a race the kernel decides): both name the refusal.
  t.ok(refused.lines.some((l) => /^FAIL .*through relay tcp .*5462 .*relay (closed it before a byte came back|reset the connection): it refused the header/.test(l)),
    `it says relay closed the connection:\n${refused.out}`);

  const outside = doctor(5461, '203.0.113.0/24');
  t.ok(outside.lines.some((l) => /^OK .*through relay tcp .*5461 .*not checked: no address of this host is inside proxy-from/.test(l)),
    `with no local address inside proxy-from, it says so:\n${outside.out}`);
});

t.test('relay doctor sends a datagram with a PROXY v2 header through the running relay', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'ppdu');
  const echo = await udpEcho(topo, 83, [ADDR.backend4]);
  const listen = formatEndpoint(ADDR.relayClientSide4, 5470);
  const service = ['--proto', 'udp', '--listen', listen, '--backend', formatEndpoint(ADDR.backend4, 83),
    '--proxy-protocol', 'v2', '--proxy-from', '192.0.2.0/24', '--health-udp-probe', '70726f6265'];
  const doctor = (extra: string[] = []) => {
    const r = spawnSync('ip', ['netns', 'exec', topo.relay.name, ...IN_NAMESPACE_ENV, process.execPath, cliPath(), 'doctor',
      ...service, ...extra, '--probe-timeout', '1s'], { encoding: 'utf8', timeout: 30_000 });
    return { status: r.status, out: r.stdout, lines: r.stdout.split('\n') };
  };
  const probe = DEFAULT_PROBE_SOURCES[4];
  const idle = doctor();
  t.ok(idle.lines.some((l) => /^OK .*through relay udp .*5470 .*not checked: relay is not running/.test(l)), `idle:\n${idle.out}`);

  const proc = await relay(topo, [...service, '--session-timeout', '1s']);
  const pid = relayPid(proc);
  const fdsBefore = fdCount(pid);
  const seenBefore = udpSeen(echo).length;
  const served = doctor();
  t.equal(served.status, 0, `doctor passes:\n${served.out}`);
  t.ok(served.lines.some((l) => new RegExp(`^OK .*through relay udp ${listen} .*from ${ADDR.relayClientSide4}, ` +
    `a v2 header naming ${probe}: relay took the header and the backend's reply came back`).test(l)), 'the datagram went through relay');
  const seen = await eventually(() => {
    const now = udpSeen(echo).slice(seenBefore);
    return now.length >= 2 ? now : undefined;
  }, 5000, 'the direct probe and the one through relay');
  t.same(seen.map((s) => s.remote), [probe, probe], "the backend saw the header's client both times");
  t.equal(seen[1].bytes, 5, 'the payload alone: the header stayed with relay');
  t.equal(await settleFds(pid, fdsBefore, 0), fdsBefore, "relay's fds are back where they were once the probe's session timed out");
  await proc.stop('SIGTERM');

  const noProbe = spawnSync('ip', ['netns', 'exec', topo.relay.name, ...IN_NAMESPACE_ENV, process.execPath, cliPath(), 'doctor',
    ...service.slice(0, -2), '--probe-timeout', '1s'], { encoding: 'utf8', timeout: 30_000 });
  t.ok(noProbe.stdout.split('\n').some((l) => /^OK .*through relay udp .*not checked: give --health-udp-probe/.test(l)),
    `without a probe payload it says what it needs:\n${noProbe.stdout}`);
});
