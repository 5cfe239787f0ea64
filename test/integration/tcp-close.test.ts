// Half-close both ways and reset propagation, asserted on what the peers saw.
import t from 'tap';
import {
  tcpLab, relay, toolServer, clientSession, canRunLab, SKIP_REASON, ADDR, formatEndpoint, events, eventually, relayLogs,
} from './lab-fixture';

t.test('FIN and RST pass through relay', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'cls');
  await toolServer(topo, 'hash', 7001);
  const finFirst = await toolServer(topo, 'fin-first', 7002);
  await toolServer(topo, 'reset', 7003);
  const silent = await toolServer(topo, 'silent', 7004);
  // One relay per backend port keeps each case's log apart.
  const relayProc = await relay(topo, ['--listen', '0.0.0.0:7001', '--backend', formatEndpoint(ADDR.backend4, 7001)]);
  const relay2 = await relay(topo, ['--listen', '0.0.0.0:7012', '--backend', formatEndpoint(ADDR.backend4, 7002)]);
  const relay3 = await relay(topo, ['--listen', '0.0.0.0:7013', '--backend', formatEndpoint(ADDR.backend4, 7003)]);
  const relay4 = await relay(topo, ['--listen', '[::]:7014', '--backend', formatEndpoint(ADDR.backend6, 7004)]);

  t.test('client FIN first: the backend still answers after it', async (t) => {
    const out = await clientSession(topo, `${ADDR.relayClientSide4}:7001`, ['--send', 'abc', '--end']);
    // sha256("abc")
    t.equal(out.received, 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad 3\n',
      'the backend hashed all three bytes after the FIN and replied');
    t.ok(out.gotEnd, 'the client got the FIN that followed the reply');
    t.equal(out.error, null);
    const closed = await eventually(() => relayLogs(relayProc, 'connection closed')[0]);
    t.equal(closed.reason, 'done');
    t.equal(closed.bytesFromClient, 3);
  });

  t.test('backend FIN first: the client can still send', async (t) => {
    const out = await clientSession(topo, `${ADDR.relayClientSide4}:7012`, ['--send-after-end', 'late data']);
    t.equal(out.received, 'hello\n');
    t.ok(out.gotEnd, 'the client saw the backend FIN');
    const after = await eventually(() => events(finFirst).find((e) => e.event === 'received-after-fin'));
    t.equal(after.data, 'late data', 'the backend read what the client sent after the backend FIN');
    await eventually(() => relayLogs(relay2, 'connection closed')[0]);
  });

  t.test('backend reset: the client is reset', async (t) => {
    const out = await clientSession(topo, `${ADDR.relayClientSide4}:7013`, ['--send', 'x']);
    t.equal(out.error, 'ECONNRESET');
    t.notOk(out.gotEnd, 'a reset, not a FIN');
    const closed = await eventually(() => relayLogs(relay3, 'connection closed')[0]);
    t.equal(closed.reason, 'backend reset');
  });

  t.test('client reset: the backend is reset (IPv6)', async (t) => {
    const before = events(silent).length;
    await clientSession(topo, `[${ADDR.relayClientSide6}]:7014`, ['--send', 'x', '--reset-after', '300'], 1500);
    const err = await eventually(() => events(silent).slice(before).find((e) => e.event === 'error'));
    t.equal(err.code, 'ECONNRESET');
    t.equal(err.remote, ADDR.client6, "the backend saw the client's address");
    t.notOk(events(silent).slice(before).some((e) => e.event === 'client-end'), 'no FIN reached the backend');
    const closed = await eventually(() => relayLogs(relay4, 'connection closed')[0]);
    t.equal(closed.reason, 'client reset');
  });
});
