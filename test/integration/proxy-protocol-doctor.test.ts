// relay doctor on PROXY protocol services: it names the trusted fronts (and
// warns about a proxy-from that trusts everyone), and an upstream-source relay
// service passes with no return path at all, its probes carrying the header
// the backend expects.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { tcpLab, canRunLab, SKIP_REASON, ADDR, formatEndpoint, udpToolsPath } from './lab-fixture';
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
