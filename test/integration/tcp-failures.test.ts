// When the backend cannot be reached, or cannot see the client's address:
// relay closes the client at once and says why.
import t from 'tap';
import {
  tcpLab, relay, toolServer, clientSession, canRunLab, SKIP_REASON, ADDR, formatEndpoint, accepts, eventually, relayLogs,
} from './lab-fixture';

t.test('backend failures and family mismatch', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'fail');
  const echo = await toolServer(topo, 'echo', 7100);

  t.test('backend refuses: the client is closed at once', async (t) => {
    // Nothing listens on 7199 on the backend.
    const proc = await relay(topo, ['--listen', '0.0.0.0:7101', '--backend', formatEndpoint(ADDR.backend4, 7199)]);
    const out = await clientSession(topo, `${ADDR.relayClientSide4}:7101`, ['--send', 'x']);
    // The kernel completes the handshake before relay accepts, but relay's reset
    // can reach the client before its own loop reports the connect: then the
    // connect itself fails with the reset. Either way the client was reset.
    t.ok(out.connected || out.error === 'ECONNRESET', `connected, or reset first: ${JSON.stringify(out)}`);
    t.equal(out.received, '');
    t.ok(out.closedAfterMs >= 0 && out.closedAfterMs < 1000, `closed in ${out.closedAfterMs} ms`);
    const line = await eventually(() => relayLogs(proc, 'backend connect failed: client closed')[0]);
    t.equal(line.reason, 'backend refused');
    t.equal(line.code, 'ECONNREFUSED');
  });

  t.test('backend silent: connect timeout closes the client', async (t) => {
    // The backend drops SYNs to 7198 (a firewall inside the backend namespace).
    topo.backend.run('nft', 'add table inet lab; add chain inet lab input { type filter hook input priority 0; }; ' +
      'add rule inet lab input tcp dport 7198 drop');
    const proc = await relay(topo, ['--listen', '0.0.0.0:7102', '--backend', formatEndpoint(ADDR.backend4, 7198),
      '--connect-timeout', '800ms']);
    const out = await clientSession(topo, `${ADDR.relayClientSide4}:7102`, [], 6000);
    t.ok(out.closedAfterMs >= 700 && out.closedAfterMs < 3000, `closed after ${out.closedAfterMs} ms (timeout 800 ms)`);
    const line = await eventually(() => relayLogs(proc, 'backend connect failed: client closed')[0]);
    t.equal(line.reason, 'connect timeout');
  });

  t.test('family mismatch, reject: an IPv6 client is closed, the backend sees nothing', async (t) => {
    const proc = await relay(topo, ['--listen', '[::]:7103', '--backend', formatEndpoint(ADDR.backend4, 7100)]);
    const before = accepts(echo).length;
    const out = await clientSession(topo, `[${ADDR.relayClientSide6}]:7103`, ['--send', 'x']);
    t.equal(out.received, '');
    t.ok(out.closedAfterMs >= 0 && out.closedAfterMs < 1000, `closed in ${out.closedAfterMs} ms`);
    await eventually(() => relayLogs(proc).find((l) => String(l.msg).includes('families differ')), 3000, 'mismatch warning');
    t.equal(accepts(echo).length, before, 'the backend accepted nothing');
    // A line per client would be a flood of lines for a flood of clients: a few, then a count.
    for (let i = 0; i < 7; i++) await clientSession(topo, `[${ADDR.relayClientSide6}]:7103`, ['--send', 'x'], 2000);
    const mismatchLines = () => relayLogs(proc).filter((l) => String(l.msg).includes('families differ'));
    // relay writes its lines in batches, at least every 200 ms: wait for the
    // fifth, then one batch more, in which no sixth may come.
    await eventually(() => mismatchLines().length >= 5, 3000, 'five mismatch lines');
    await new Promise((resolve) => setTimeout(resolve, 500));
    const lines = mismatchLines();
    t.equal(lines.length, 5, `8 rejected clients, 5 lines (rate-limited): ${lines.length}`);
    t.equal(lines.at(-1)?.rejected, 5, 'each line says how many so far');
    t.match(lines[0], { proto: 'tcp', listen: '[::]:7103' }, 'and names the listener');
  });

  t.test('family mismatch, masquerade: the backend sees relay\'s own address', async (t) => {
    await relay(topo, ['--listen', '[::]:7104', '--backend', formatEndpoint(ADDR.backend4, 7100),
      '--on-family-mismatch', 'masquerade']);
    const out = await clientSession(topo, `[${ADDR.relayClientSide6}]:7104`, ['--send', 'ping', '--end']);
    t.equal(out.received, 'ping');
    t.equal(accepts(echo).at(-1)?.remote, ADDR.relayBackendSide4);
  });

  t.test('family mismatch the other way: IPv4 client, IPv6 backend', async (t) => {
    await relay(topo, ['--listen', '0.0.0.0:7105', '--backend', formatEndpoint(ADDR.backend6, 7100),
      '--on-family-mismatch', 'masquerade']);
    const out = await clientSession(topo, `${ADDR.relayClientSide4}:7105`, ['--send', 'ping6', '--end']);
    t.equal(out.received, 'ping6');
    t.equal(accepts(echo).at(-1)?.remote, ADDR.relayBackendSide6);
  });

  t.test('--keep-client-port: the backend sees the client\'s port; a port in use falls back', async (t) => {
    const proc = await relay(topo, ['--listen', '0.0.0.0:7106', '--backend', formatEndpoint(ADDR.backend4, 7100),
      '--keep-client-port']);
    const out = await clientSession(topo, `${ADDR.relayClientSide4}:7106`, ['--send', 'k', '--end', '--local-port', '41001']);
    t.equal(out.received, 'k');
    t.same(accepts(echo).at(-1), { remote: ADDR.client4, port: 41001 });

    // Hold client-address:41002 on the relay host with a transparent socket of our own.
    const holder = topo.lab.spawn(topo.relay, [process.execPath, '-e',
      `const s=require(${JSON.stringify(require.resolve('../../dist/src/sys/index.js'))});` +
      `s.openTransparentFd({transport:'tcp',address:'${ADDR.client4}',port:41002});` +
      `console.log('held');setTimeout(()=>{},60000)`]);
    await holder.waitFor(/held/);
    const out2 = await clientSession(topo, `${ADDR.relayClientSide4}:7106`, ['--send', 'k2', '--end', '--local-port', '41002']);
    t.equal(out2.received, 'k2', 'still relayed');
    const seen = accepts(echo).at(-1);
    t.equal(seen?.remote, ADDR.client4, "the client's address is kept");
    t.not(seen?.port, 41002, 'from another port');
    await eventually(() => relayLogs(proc).find((l) => String(l.msg).includes('port is in use')), 3000, 'fallback log');
  });
});
