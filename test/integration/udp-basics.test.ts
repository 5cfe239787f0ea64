// UDP through relay keeps the client's address AND port, and each reply
// reaches the client's own socket from the address it sent to.
import t from 'tap';
import {
  tcpLab, relay, canRunLab, SKIP_REASON, ADDR, formatEndpoint, udpEcho, udpSend, udpSeen, eventually, relayLogs,
} from './lab-fixture';

t.test('UDP sessions', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'udpb');
  // A second client address, to show two clients with the same port.
  topo.client.ip('addr', 'add', '192.0.2.3/24', 'dev', 'eth0');
  const echo = await udpEcho(topo, 5300);
  const proc = await relay(topo, ['--proto', 'udp', '--listen', '0.0.0.0:5301', '--listen', '[::]:5302',
    '--backend', formatEndpoint(ADDR.backend4, 5300), '--backend', formatEndpoint(ADDR.backend6, 5300)]);

  t.test('IPv4: the backend sees the client address and port; replies come back', async (t) => {
    const out = await udpSend(topo, `${ADDR.relayClientSide4}:5301`, ['--local-port', '40001', '--sizes', '1,2,3']);
    t.equal(out.replies.length, 3, 'three replies');
    t.ok(out.replies.every((r) => r.exact), 'byte-exact');
    t.ok(out.replies.every((r) => r.from === `${ADDR.relayClientSide4}:5301`), 'from the address and port the client sent to');
    t.same(udpSeen(echo).filter((s) => s.port === 40001).map((s) => s.remote), [ADDR.client4, ADDR.client4, ADDR.client4]);
  });

  t.test('IPv6 on [::]', async (t) => {
    const out = await udpSend(topo, `[${ADDR.relayClientSide6}]:5302`, ['--local-port', '40002']);
    t.equal(out.replies.length, 1);
    t.equal(out.replies[0].from, `${ADDR.relayClientSide6}:5302`);
    t.same(udpSeen(echo).filter((s) => s.port === 40002).map((s) => s.remote), [ADDR.client6]);
  });

  t.test('IPv4 client on the [::] listener', async (t) => {
    const out = await udpSend(topo, `${ADDR.relayClientSide4}:5302`, ['--local-port', '40003']);
    t.equal(out.replies.length, 1);
    t.equal(out.replies[0].from, `${ADDR.relayClientSide4}:5302`, 'the reply left from the IPv4 address the client used');
    t.same(udpSeen(echo).filter((s) => s.port === 40003).map((s) => s.remote), [ADDR.client4]);
  });

  t.test('two clients with the same port on different addresses', async (t) => {
    const [a, b] = await Promise.all([
      udpSend(topo, `${ADDR.relayClientSide4}:5301`, ['--local-address', ADDR.client4, '--local-port', '40010']),
      udpSend(topo, `${ADDR.relayClientSide4}:5301`, ['--local-address', '192.0.2.3', '--local-port', '40010']),
    ]);
    t.equal(a.replies.length, 1);
    t.equal(b.replies.length, 1);
    const seen = udpSeen(echo).filter((s) => s.port === 40010).map((s) => s.remote).sort();
    t.same(seen, [ADDR.client4, '192.0.2.3'], 'each client seen with its own address, same port');
  });

  t.test('one client with many ports', async (t) => {
    const ports = [40020, 40021, 40022, 40023, 40024];
    const results = await Promise.all(ports.map((p) => udpSend(topo, `${ADDR.relayClientSide4}:5301`, ['--local-port', String(p)])));
    t.ok(results.every((r) => r.replies.length === 1), 'every port answered');
    for (const p of ports) t.same(udpSeen(echo).filter((s) => s.port === p).map((s) => s.remote), [ADDR.client4], `port ${p}`);
  });

  t.test('empty and 65,507-byte datagrams are relayed intact', async (t) => {
    const out = await udpSend(topo, `${ADDR.relayClientSide4}:5301`, ['--local-port', '40030', '--sizes', '0,65507']);
    t.same(out.replies.map((r) => [r.bytes, r.exact]), [[0, true], [65507, true]]);
  });

  t.test('the largest IPv6 datagram too', async (t) => {
    const out = await udpSend(topo, `[${ADDR.relayClientSide6}]:5302`, ['--local-port', '40031', '--sizes', '0,65487']);
    t.same(out.replies.map((r) => [r.bytes, r.exact]), [[0, true], [65487, true]]);
  });

  t.test('a wildcard listener on a host with several addresses replies from the one the client used', async (t) => {
    // relay's namespace gains a second address before this relay starts (udp-wildcard.test.ts adds them after).
    topo.relay.ip('addr', 'add', '192.0.2.9/24', 'dev', 'eth-client');
    await relay(topo, ['--proto', 'udp', '--listen', '0.0.0.0:5303', '--backend', formatEndpoint(ADDR.backend4, 5300)]);
    for (const address of [ADDR.relayClientSide4, '192.0.2.9']) {
      const out = await udpSend(topo, `${address}:5303`, ['--local-port', '40040']);
      t.equal(out.replies.length, 1);
      t.equal(out.replies[0]?.from, `${address}:5303`, `sent to ${address}, answered from ${address}`);
    }
  });

  t.test('one client port talking to two listener ports gets each reply from the port it used', async (t) => {
    for (const port of [5301, 5302]) {
      const out = await udpSend(topo, `${ADDR.relayClientSide4}:${port}`, ['--local-port', '40050']);
      t.equal(out.replies[0]?.from, `${ADDR.relayClientSide4}:${port}`);
    }
  });

  t.test('relay logged no error', async (t) => {
    await eventually(() => proc.stdout().includes('relay started') || undefined);
    t.same(relayLogs(proc).filter((l) => Number(l.level) >= 50), []);
  });
});
