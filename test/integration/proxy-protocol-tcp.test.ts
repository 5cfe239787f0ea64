// PROXY protocol in, over TCP: HAProxy in front (send-proxy-v2 and send-proxy,
// over IPv4 and IPv6) names clients that relay then connects from, so nginx on
// the backend logs the client and not the front; LOCAL health checks come from
// relay's own address; and fronts that send no valid header, too slowly, or
// from outside proxy-from are closed without a byte reaching a backend.
import t from 'tap';
import {
  tcpLab, relay, canRunLab, SKIP_REASON, ADDR, formatEndpoint, eventually, toolServer, clientSession, relayLogs, accepts,
  httpRequest, metricTotal,
} from './lab-fixture';
import { startNginxHttp, startHaproxy } from '../../src/lab/peers';
import { relayPid, fdCount, settleFds } from '../torture/harness';
import { writeProxyHeader } from '../../src/proxy-protocol';

/** The scripted fronts' relay serves /metrics here, in its own namespace. */
const ADMIN_PORT = 9961;

/** Clients behind the front: addresses on the client namespace's loopback, reached by the backend only through relay. */
const CLIENT4 = '203.0.113.9';
const CLIENT6 = '2001:db8:7::9';
const FRONT_FROM = ['--proxy-from', `${ADDR.client4}/32`, '--proxy-from', `${ADDR.client6}/128`];

t.test('HAProxy in front: nginx logs the client named by send-proxy-v2 and send-proxy', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'ppha');
  topo.client.ip('addr', 'add', `${CLIENT4}/32`, 'dev', 'lo');
  topo.client.ip('-6', 'addr', 'add', `${CLIENT6}/128`, 'dev', 'lo');
  const nginx = await startNginxHttp(topo.lab, topo.backend, [ADDR.backend4, ADDR.backend6], 80);
  const proc = await relay(topo, ['--listen', '0.0.0.0:8080', '--listen', '[::]:8081', '--proxy-protocol', 'any', ...FRONT_FROM,
    '--backend', formatEndpoint(ADDR.backend4, 80), '--backend', formatEndpoint(ADDR.backend6, 80)]);
  const pid = relayPid(proc);
  const relay4 = formatEndpoint(ADDR.relayClientSide4, 8080);
  const relay6 = formatEndpoint(ADDR.relayClientSide6, 8081);
  const section = (name: string, bind: string, server: string, extra = '') =>
    `frontend f_${name}\n  bind ${bind}\n  default_backend b_${name}\nbackend b_${name}\n${extra}  server relay ${server}\n`;
  await startHaproxy(topo.lab, topo.client, [
    section('v2_4', `${ADDR.client4}:9000`, `${relay4} send-proxy-v2 check inter 300ms`, '  option httpchk GET /health-check\n'),
    section('v1_4', `${ADDR.client4}:9001`, `${relay4} send-proxy`),
    section('v2_6', `[${ADDR.client6}]:9002`, `${relay6} send-proxy-v2`),
    section('v1_6', `[${ADDR.client6}]:9003`, `${relay6} send-proxy`),
  ].join(''), 9003);
  // HAProxy's check (a LOCAL header) is served from relay's own address, not the front's.
  const check = await eventually(() => nginx.accessLog().find((l) => l.includes('GET /health-check ')), 5000, 'a health check');
  t.equal(check.split(' ')[0], ADDR.relayBackendSide4, "LOCAL: the check reached nginx from relay's own address");
  await new Promise((r) => setTimeout(r, 400)); // let the last check finish before counting fds
  const fdsBefore = fdCount(pid);

  const cases = [
    { name: 'v2 over IPv4', url: `http://${ADDR.client4}:9000/v2-4`, from: CLIENT4 },
    { name: 'v1 over IPv4', url: `http://${ADDR.client4}:9001/v1-4`, from: CLIENT4 },
    { name: 'v2 over IPv6', url: `http://[${ADDR.client6}]:9002/v2-6`, from: CLIENT6 },
    { name: 'v1 over IPv6', url: `http://[${ADDR.client6}]:9003/v1-6`, from: CLIENT6 },
  ];
  for (const c of cases) {
    const body = topo.client.run('curl', '-sS', '--max-time', '5', '--interface', c.from, c.url);
    t.equal(body, 'hello from the backend\n', `${c.name}: the client got the backend's reply`);
    const path = new URL(c.url).pathname;
    const line = await eventually(() => nginx.accessLog().find((l) => l.includes(`GET ${path} `)), 5000, `${path} in the access log`);
    t.equal(line.split(' ')[0], c.from, `${c.name}: nginx logged the client, not the front`);
  }
  const closed = await eventually(() => relayLogs(proc, 'connection closed').find((l) => String(l.client).startsWith(CLIENT4)),
    3000, "relay's line for the IPv4 client");
  t.match(closed, { front: new RegExp(`^${ADDR.client4.replace(/\./g, '\\.')}:`) }, "relay's line names the client and the front");
  t.ok(await settleFds(pid, fdsBefore, 2) <= fdsBefore + 2, "relay's fds are back (give or take HAProxy's check)");
  await proc.stop('SIGTERM');
  t.match(relayLogs(proc, 'relay stopped')[0], { tcp: { proxyHeaders: 4, proxyUntrusted: 0, proxyRefused: 0 } });
});

t.test('scripted fronts: payload after the header, any, bad and slow headers, untrusted senders', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'ppsc');
  topo.client.ip('addr', 'add', '192.0.2.3/24', 'dev', 'eth0');
  const echo = await toolServer(topo, 'echo', 7000);
  const proc = await relay(topo, ['--listen', '0.0.0.0:8090', '--proxy-protocol', 'any', '--proxy-from', `${ADDR.client4}/32`,
    '--proxy-header-timeout', '500ms', '--keep-client-port', '--admin', `127.0.0.1:${ADMIN_PORT}`,
    '--backend', formatEndpoint(ADDR.backend4, 7000), '--backend', formatEndpoint(ADDR.backend6, 7000)]);
  const pid = relayPid(proc);
  const fdsBefore = fdCount(pid);
  const target = formatEndpoint(ADDR.relayClientSide4, 8090);
  const to = { address: ADDR.relayClientSide4, port: 8090 };
  const session = (hex: string, flags: string[] = [], waitMs = 3000) => clientSession(topo, target, ['--send-hex', hex, ...flags], waitMs);

  const v2 = writeProxyHeader('v2', 'stream', { address: '203.0.113.10', port: 40010 }, to);
  const out2 = await session(Buffer.concat([v2, Buffer.from('hello after v2\n')]).toString('hex'));
  t.equal(out2.received, 'hello after v2\n', 'v2: the bytes in the header\'s segment reached the backend and came back');
  const v1 = writeProxyHeader('v1', 'stream', { address: '203.0.113.11', port: 40011 }, to);
  const out1 = await session(Buffer.concat([v1, Buffer.from('hello after v1\n')]).toString('hex'));
  t.equal(out1.received, 'hello after v1\n', 'v1 on the same listener (any)');
  const v6 = writeProxyHeader('v2', 'stream', { address: '2001:db8:7::12', port: 40012 }, { address: '2001:db8:2::1', port: 8090 });
  const out6 = await session(Buffer.concat([v6, Buffer.from('six\n')]).toString('hex'));
  t.equal(out6.received, 'six\n', 'an IPv6 client named over an IPv4 front connection goes to the IPv6 backend');
  // The header alone, then the payload in a write of its own: it may arrive while the upstream still connects (held).
  const v2b = writeProxyHeader('v2', 'stream', { address: '203.0.113.13', port: 40013 }, to);
  const outHeld = await session(v2b.toString('hex'), ['--send', 'second write\n']);
  t.equal(outHeld.received, 'second write\n', 'a payload in its own segment after the header arrives too');
  t.same(accepts(echo).map((a) => `${a.remote}:${a.port}`).sort(),
    ['2001:db8:7::12:40012', '203.0.113.10:40010', '203.0.113.11:40011', '203.0.113.13:40013'],
    'the backend saw the clients the headers named, ports kept');

  const bad: [string, string][] = [
    ['GET / HTTP/1.0\r\n\r\n', 'not-proxy'],
    ['PROXY TCP4 203.0.113.1 192.0.2.1 99999 80\r\nx', 'malformed'],
    [`PROXY ${'A'.repeat(120)}`, 'too-long'],
  ];
  for (const [text, why] of bad) {
    const out = await session(Buffer.from(text).toString('hex'));
    t.equal(out.received, '', `${why}: nothing came back`);
    t.ok(out.closedAfterMs >= 0 && out.closedAfterMs < 400, `${why}: closed at once (${out.closedAfterMs} ms)`);
  }
  // Each of v2's fields wrong in turn (the spec's layout: 12-byte signature, version and command, family and
  // transport, length), and a v2 header cut short by the front's FIN.
  const v2With = (edit: (h: Buffer) => Buffer) => edit(Buffer.from(v2));
  const badV2: [Buffer, string][] = [
    [v2With((h) => { h[12] = 0x23; return h; }), 'bad-command'],
    [v2With((h) => { h[12] = 0x31; return h; }), 'bad-version'],
    [v2With((h) => { h[13] = 0x41; return h; }), 'bad-family'],
    [v2With((h) => { h[13] = 0x13; return h; }), 'bad-transport'],
    [v2With((h) => { h[13] = 0x31; return h; }), 'unix-family'],
    [v2With((h) => { h.writeUInt16BE(0xffff, 14); return h; }), 'too-long'],
    [v2With((h) => { h.writeUInt16BE(4, 14); return h.subarray(0, 20); }), 'short-addresses'],
  ];
  for (const [header, why] of badV2) {
    const out = await session(Buffer.concat([header, Buffer.from('never forwarded\n')]).toString('hex'));
    t.equal(out.received, '', `v2 ${why}: nothing came back`);
    t.ok(out.closedAfterMs >= 0 && out.closedAfterMs < 400, `v2 ${why}: closed at once (${out.closedAfterMs} ms)`);
  }
  const cut = await session(v2.subarray(0, 20).toString('hex'), ['--end']);
  t.equal(cut.received, '', 'a header cut short by the front\'s FIN: closed');
  const slow = await session(v2.subarray(0, 10).toString('hex'));
  t.ok(slow.closedAfterMs >= 450 && slow.closedAfterMs < 2000, `a header not complete in 500ms is closed (${slow.closedAfterMs} ms)`);
  const untrusted = await session(Buffer.concat([v2, Buffer.from('spoof me\n')]).toString('hex'), ['--local-address', '192.0.2.3']);
  t.equal(untrusted.received, '', 'a sender outside proxy-from gets nothing through');
  t.equal(accepts(echo).length, 4, 'no refused front reached the backend');

  const badHeaderLines = () => relayLogs(proc, 'no valid PROXY protocol header from the front: closing');
  // Twelve refusals, in this order; five lines a window (rate-limited), the rest counted in a summary line.
  const order = ['not-proxy', 'malformed', 'too-long', 'bad-command', 'bad-version', 'bad-family', 'bad-transport',
    'unix-family', 'too-long', 'short-addresses', 'closed', 'timeout'];
  const lines = await eventually(() => (badHeaderLines().length >= 5 ? badHeaderLines() : undefined), 3000, 'five lines');
  t.same(lines.map((l) => l.why), order.slice(0, lines.length), 'each line gives its reason');
  await eventually(() => relayLogs(proc, 'connection from outside proxy-from: closing (a PROXY header is trusted from those fronts only)')
    .find((l) => l.front?.toString().startsWith('192.0.2.3:')), 3000, 'the untrusted sender\'s line');
  t.equal(await settleFds(pid, fdsBefore, 0), fdsBefore, "relay's fds are back where they were");
  const metrics = httpRequest(topo.relay, 'GET', `http://127.0.0.1:${ADMIN_PORT}/metrics`).body;
  t.equal(metricTotal(metrics, 'relay_proxy_headers_total', { kind: 'client' }), 4, '/metrics: four headers named a client');
  t.equal(metricTotal(metrics, 'relay_proxy_refused_total', { reason: 'header' }), 12, '/metrics: twelve bad headers');
  t.equal(metricTotal(metrics, 'relay_proxy_refused_total', { reason: 'untrusted' }), 1, '/metrics: one untrusted sender');
  await proc.stop('SIGTERM');
  const summaries = relayLogs(proc).filter((l) => String(l.msg).startsWith('no valid PROXY protocol header from the front: closing ('));
  const heldBack = summaries.reduce((sum, l) => sum + Number(l.suppressed), 0);
  t.equal(badHeaderLines().length + heldBack, order.length, `every refusal logged or counted in a summary (${heldBack} held back)`);
  t.match(relayLogs(proc, 'relay stopped')[0], { tcp: { proxyHeaders: 4, proxyUntrusted: 1, proxyRefused: 12,
    proxyRefusedBy: { 'not-proxy': 1, malformed: 1, 'too-long': 2, 'bad-command': 1, 'bad-version': 1, 'bad-family': 1,
      'bad-transport': 1, 'unix-family': 1, 'short-addresses': 1, closed: 1, timeout: 1 } } });
});

t.test('a header client of the other family follows on-family-mismatch', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'ppfm');
  const echo = await toolServer(topo, 'echo', 7100, [ADDR.backend4]);
  const to = { address: ADDR.relayClientSide4, port: 8092 };
  const header = writeProxyHeader('v2', 'stream', { address: '2001:db8:7::50', port: 40050 }, { address: ADDR.relayClientSide6, port: 8092 });
  for (const policy of ['reject', 'masquerade']) {
    const proc = await relay(topo, ['--listen', `0.0.0.0:${to.port}`, '--proxy-protocol', 'v2', '--proxy-from', `${ADDR.client4}/32`,
      '--on-family-mismatch', policy, '--backend', formatEndpoint(ADDR.backend4, 7100)]);
    const out = await clientSession(topo, formatEndpoint(to.address, to.port),
      ['--send-hex', Buffer.concat([header, Buffer.from(`${policy}\n`)]).toString('hex')], 2000);
    await proc.stop('SIGTERM');
    if (policy === 'reject') {
      t.equal(out.received, '', 'reject: an IPv6 client for an IPv4-only backend is closed');
      t.match(relayLogs(proc, 'relay stopped')[0], { tcp: { rejectedFamilyMismatch: 1 } });
    } else {
      t.equal(out.received, 'masquerade\n', "masquerade: relayed from relay's own address");
    }
  }
  t.same(accepts(echo).map((a) => a.remote), [ADDR.relayBackendSide4], "only the masquerade connection, from relay's address");
});
