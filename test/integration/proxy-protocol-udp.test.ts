// PROXY protocol over UDP, go-mmproxy's format: a front puts a v2 header
// before each datagram. relay relays the payload from the client the header
// names (one session per client and front), replies go back raw to the front
// (or with a header, proxy-reply-header), untrusted senders and bad headers are
// dropped; and send-proxy puts a v2 header before each datagram to a backend.
import t from 'tap';
import {
  tcpLab, relay, canRunLab, SKIP_REASON, ADDR, formatEndpoint, udpEcho, udpSend, udpSeen, relayLogs, udpToolsPath, events,
} from './lab-fixture';
import { waitForListener } from '../../src/lab/netns';
import { relayPid, fdCount, settleFds } from '../torture/harness';
import { writeProxyHeader, writeLocalHeader } from '../../src/proxy-protocol';

const hex = (src: { address: string; port: number }, dst: { address: string; port: number }) =>
  writeProxyHeader('v2', 'dgram', src, dst).toString('hex');

t.test('UDP v2 in: the backend sees the clients the front names; replies go back raw', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'ppud');
  topo.client.ip('addr', 'add', '192.0.2.3/24', 'dev', 'eth0');
  const echo = await udpEcho(topo, 5400);
  const proc = await relay(topo, ['--proto', 'udp', '--listen', '0.0.0.0:5401', '--listen', '[::]:5402',
    '--proxy-protocol', 'v2', '--proxy-from', `${ADDR.client4}/32`, '--proxy-from', `${ADDR.client6}/128`, '--session-timeout', '1s',
    '--backend', formatEndpoint(ADDR.backend4, 5400), '--backend', formatEndpoint(ADDR.backend6, 5400)]);
  const pid = relayPid(proc);
  const fdsBefore = fdCount(pid);
  const to4 = { address: ADDR.relayClientSide4, port: 5401 };
  const target4 = formatEndpoint(to4.address, to4.port);

  // Two clients behind one front socket: two sessions, each from its own client.
  const a = await udpSend(topo, target4, ['--local-port', '41000', '--sizes', '10,20',
    '--prefix-hex', hex({ address: '203.0.113.30', port: 5000 }, to4)]);
  const b = await udpSend(topo, target4, ['--local-port', '41000', '--sizes', '30',
    '--prefix-hex', hex({ address: '203.0.113.31', port: 5001 }, to4)]);
  t.same(a.replies.map((r) => r.exact), [true, true], 'client A: both replies came back to the front, raw');
  t.same(b.replies.map((r) => r.exact), [true], 'client B: its reply came back to the front, raw');
  t.equal(a.replies[0].from, target4, 'from the address the front sent to');
  // An IPv6 client over an IPv6 front.
  const to6 = { address: ADDR.relayClientSide6, port: 5402 };
  const c = await udpSend(topo, formatEndpoint(to6.address, to6.port), ['--sizes', '40',
    '--prefix-hex', hex({ address: '2001:db8:7::32', port: 5002 }, to6)]);
  t.same(c.replies.map((r) => r.exact), [true], 'IPv6: the reply came back');
  const seen = udpSeen(echo).map((d) => `${formatEndpoint(d.remote, d.port)}/${d.bytes}`);
  t.same(seen.sort(), ['203.0.113.30:5000/10', '203.0.113.30:5000/20', '203.0.113.31:5001/30', '[2001:db8:7::32]:5002/40'].sort(),
    'the backend saw each client with its port, and the payload without the header');

  // Dropped: an untrusted sender, a datagram with no header, a truncated one, a TCP header.
  const header = Buffer.from(hex({ address: '203.0.113.33', port: 5003 }, to4), 'hex');
  const drops: [string[], string][] = [
    [['--local-address', '192.0.2.3', '--prefix-hex', header.toString('hex')], 'untrusted'],
    [[], 'not-proxy'],
    [['--prefix-hex', header.subarray(0, 20).toString('hex'), '--sizes', '0'], 'truncated'],
    [['--prefix-hex', writeProxyHeader('v2', 'stream', { address: '203.0.113.34', port: 5004 }, to4).toString('hex')], 'wrong-transport'],
  ];
  for (const [flags, why] of drops) {
    const out = await udpSend(topo, target4, ['--timeout', '500', ...flags]);
    t.same(out.replies, [], `${why}: dropped, no reply`);
  }
  t.equal(udpSeen(echo).length, 4, 'nothing dropped reached the backend');
  // LOCAL (the front speaking for itself): relayed from relay's own address, the reply back to the front.
  const local = await udpSend(topo, target4, ['--sizes', '50', '--prefix-hex', writeLocalHeader().toString('hex')]);
  t.same(local.replies.map((r) => r.exact), [true], 'LOCAL: the reply came back to the front');
  t.match(udpSeen(echo).at(-1), { remote: ADDR.relayBackendSide4, bytes: 50 }, "LOCAL: the backend saw relay's own address");
  t.equal(await settleFds(pid, fdsBefore, 0), fdsBefore, "relay's fds are back once the sessions timed out");
  await proc.stop('SIGTERM');
  t.match(relayLogs(proc, 'relay stopped')[0], { udp: { sessionsOpened: 4, proxyHeaders: 4, proxyLocal: 1, proxyUntrusted: 1, proxyRefused: 3,
    proxyRefusedBy: { 'not-proxy': 1, truncated: 1, 'wrong-transport': 1 } } });
});

t.test('UDP: proxy-reply-header, and send-proxy to a backend that reads v2', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'ppuo');
  // A backend that reads a v2 header before each datagram and echoes the payload alone.
  const reader = topo.lab.spawn(topo.backend, [process.execPath, udpToolsPath(), 'echo', '--proxy-v2',
    '--listen', formatEndpoint(ADDR.backend4, 5500), '--listen', formatEndpoint(ADDR.backend6, 5500)]);
  await waitForListener(topo.backend, 'udp', 5500);
  const backends = ['--backend', formatEndpoint(ADDR.backend4, 5500), '--backend', formatEndpoint(ADDR.backend6, 5500)];

  for (const source of ['client', 'relay']) {
    const port = source === 'client' ? 5501 : 5502;
    const proc = await relay(topo, ['--proto', 'udp', '--listen', `0.0.0.0:${port}`, '--send-proxy', 'v2',
      '--upstream-source', source, '--session-timeout', '1s', ...backends]);
    const pid = relayPid(proc);
    const fdsBefore = fdCount(pid);
    const out = await udpSend(topo, formatEndpoint(ADDR.relayClientSide4, port), ['--local-port', String(42000 + port - 5500), '--sizes', '7']);
    t.same(out.replies.map((r) => r.exact), [true], `send-proxy, upstream-source ${source}: the reply came back`);
    const last = events(reader).filter((e) => e.event === 'udp').at(-1);
    t.match(last, { proxySource: ADDR.client4, proxyPort: 42000 + port - 5500,
      remote: source === 'client' ? ADDR.client4 : ADDR.relayBackendSide4 }, `upstream-source ${source}: the header names the client`);
    const settled = await settleFds(pid, fdsBefore, 0);
    t.ok(settled <= fdsBefore, `upstream-source ${source}: relay's fds are back (${settled}, before ${fdsBefore})`);
    await proc.stop('SIGTERM');
  }

  // A front's client, passed on in relay's own header; the reply goes to the front with a header naming the client.
  const proc = await relay(topo, ['--proto', 'udp', '--listen', '0.0.0.0:5503', '--proxy-protocol', 'v2',
    '--proxy-from', `${ADDR.client4}/32`, '--proxy-reply-header', '--send-proxy', 'v2', '--upstream-source', 'relay', ...backends]);
  const pid = relayPid(proc);
  const fdsBefore = fdCount(pid);
  const to = { address: ADDR.relayClientSide4, port: 5503 };
  const client = { address: '203.0.113.40', port: 5040 };
  const out = await udpSend(topo, formatEndpoint(to.address, to.port), ['--sizes', '9', '--prefix-hex', hex(client, to),
    '--reply-prefix-hex', hex(to, client)]);
  t.same(out.replies.map((r) => r.exact), [true], 'the reply came back with a header naming the client');
  t.match(events(reader).filter((e) => e.event === 'udp').at(-1), { proxySource: '203.0.113.40', proxyPort: 5040 },
    "the backend read the front's client in relay's header");
  // The session's own socket, counted where it lives: the fd count alone also
  // moves with what the runtime opens lazily under load, which says nothing here.
  const upstream = topo.relay.run('ss', '-Hun', 'state', 'connected', 'dport = :5500').split('\n').filter(Boolean);
  t.equal(upstream.length, 1, 'one session socket to the backend, no more');
  t.ok(await settleFds(pid, fdsBefore + 1, 1) <= fdsBefore + 2, `relay's fds: the session's socket and no other leak (before ${fdsBefore})`);
  await proc.stop('SIGTERM');
});
