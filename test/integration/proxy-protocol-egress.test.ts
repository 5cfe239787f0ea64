// PROXY protocol out (send-proxy): nginx with `proxy_protocol on` logs the
// client relay names in its header, with relay connecting from the client's
// address (upstream-source client) or from its own (upstream-source relay),
// over IPv4 and IPv6; a front's client passes through relay into the header.
import t from 'tap';
import {
  tcpLab, relay, canRunLab, SKIP_REASON, ADDR, formatEndpoint, eventually, clientSession, relayLogs,
} from './lab-fixture';
import { startNginxHttp } from '../../src/lab/peers';
import { relayPid, fdCount, settleFds } from '../torture/harness';
import { writeProxyHeader } from '../../src/proxy-protocol';

t.test('nginx with proxy_protocol on logs the client relay names', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'ppeg');
  const nginx = await startNginxHttp(topo.lab, topo.backend, [ADDR.backend4, ADDR.backend6], 81, { proxyProtocol: true });
  const backends = ['--backend', formatEndpoint(ADDR.backend4, 81), '--backend', formatEndpoint(ADDR.backend6, 81)];
  /** [$remote_addr, $proxy_protocol_addr] of the request for path. */
  const seen = async (path: string) => {
    const line = await eventually(() => nginx.accessLog().find((l) => l.includes(`GET ${path} `)), 5000, `${path} in the access log`);
    const fields = line.split(' ');
    return [fields[0], fields[6]]; // "$request" is three fields
  };
  const curl = (url: string) => topo.client.run('curl', '-sS', '--max-time', '5', url);

  const cases = [
    { source: 'client', version: 'v2', port: 8100, expect: (c: string) => [c, c] },
    { source: 'client', version: 'v1', port: 8101, expect: (c: string) => [c, c] },
    { source: 'relay', version: 'v2', port: 8102, expect: (c: string, own: string) => [own, c] },
    { source: 'relay', version: 'v1', port: 8103, expect: (c: string, own: string) => [own, c] },
  ];
  for (const c of cases) {
    const proc = await relay(topo, ['--listen', `0.0.0.0:${c.port}`, '--listen', `[::]:${c.port}`, '--send-proxy', c.version,
      '--upstream-source', c.source, ...backends]);
    const pid = relayPid(proc);
    const fdsBefore = fdCount(pid);
    const name = `send-proxy ${c.version}, upstream-source ${c.source}`;
    t.equal(curl(`http://${ADDR.relayClientSide4}:${c.port}/${c.version}-${c.source}-4`), 'hello from the backend\n', `${name}: IPv4 reply`);
    t.same(await seen(`/${c.version}-${c.source}-4`), c.expect(ADDR.client4, ADDR.relayBackendSide4), `${name}: IPv4 addresses`);
    t.equal(curl(`http://[${ADDR.relayClientSide6}]:${c.port}/${c.version}-${c.source}-6`), 'hello from the backend\n', `${name}: IPv6 reply`);
    t.same(await seen(`/${c.version}-${c.source}-6`), c.expect(ADDR.client6, ADDR.relayBackendSide6), `${name}: IPv6 addresses`);
    t.equal(await settleFds(pid, fdsBefore, 0), fdsBefore, `${name}: relay's fds are back`);
    await proc.stop('SIGTERM');
  }

  // A family mismatch under masquerade: the socket is relay's (IPv6), the header keeps the client (IPv4).
  const mismatch = await relay(topo, ['--listen', '0.0.0.0:8104', '--send-proxy', 'v2', '--on-family-mismatch', 'masquerade',
    '--backend', formatEndpoint(ADDR.backend6, 81)]);
  t.equal(curl(`http://${ADDR.relayClientSide4}:8104/mismatch`), 'hello from the backend\n');
  // The header is in the client's family, whatever the backend's: TCP4 192.0.2.2 -> the address it reached.
  t.same(await seen('/mismatch'), [ADDR.relayBackendSide6, ADDR.client4], "mismatch: relay's socket, the client in the header");
  await mismatch.stop('SIGTERM');

  // In and out: a front names 203.0.113.20, relay passes the name on.
  const through = await relay(topo, ['--listen', '0.0.0.0:8105', '--proxy-protocol', 'v2', '--proxy-from', `${ADDR.client4}/32`,
    '--send-proxy', 'v1', '--upstream-source', 'relay', ...backends]);
  const header = writeProxyHeader('v2', 'stream', { address: '203.0.113.20', port: 40020 }, { address: ADDR.relayClientSide4, port: 8105 });
  const out = await clientSession(topo, formatEndpoint(ADDR.relayClientSide4, 8105),
    ['--send-hex', header.toString('hex'), '--send', 'GET /through HTTP/1.0\r\n\r\n']);
  t.match(out.received, /hello from the backend/, 'the front\'s client got the reply');
  t.same(await seen('/through'), [ADDR.relayBackendSide4, '203.0.113.20'], "the front's client is in relay's header");
  await through.stop('SIGTERM');
  t.match(relayLogs(through, 'relay stopped')[0], { tcp: { proxyHeaders: 1 } });
});
