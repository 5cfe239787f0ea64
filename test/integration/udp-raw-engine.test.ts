// --udp-engine raw: UDP sessions with no socket each (issue 15). The backend
// (a real UDP echo server, and dnsmasq for dig) must see each client's own
// address and port, replies must come back from the address the client sent
// to, and relay's fds must be the same with 10 sessions as with 1,000.
import t from 'tap';
import { tcpLab, relay, canRunLab, SKIP_REASON, ADDR, formatEndpoint, udpEcho, udpSend, udpSeen, udpToolsPath, events,
  relayLogs, eventually } from './lab-fixture';
import { cliPath } from '../../src/lab/topology';
import { relayPid, fdCount, settleFds } from '../torture/harness';

t.test('the raw UDP engine: the client address and port kept, no fd per session', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'rawe');
  const applied = topo.relay.run(process.execPath, cliPath(), 'routes', 'apply', '--udp-engine', 'raw');
  t.match(applied, /raw UDP engine's replies to ports 61000-61063/, 'relay routes apply adds the raw engine\'s steering');
  const echo = await udpEcho(topo, 5700);
  const proc = await relay(topo, ['--proto', 'udp', '--udp-engine', 'raw', '--listen', '0.0.0.0:5701', '--listen', '[::]:5702',
    '--backend', formatEndpoint(ADDR.backend4, 5700), '--backend', formatEndpoint(ADDR.backend6, 5700), '--session-timeout', '1s']);
  const pid = relayPid(proc);
  const fdsBefore = fdCount(pid);

  const v4 = await udpSend(topo, formatEndpoint(ADDR.relayClientSide4, 5701), ['--local-port', '41000', '--sizes', '10,20,1400']);
  t.same(v4.replies.map((r) => r.exact), [true, true, true], 'IPv4: every reply came back, byte for byte');
  t.ok(v4.replies.every((r) => r.from === formatEndpoint(ADDR.relayClientSide4, 5701)), 'from the address the client sent to');
  const v6 = await udpSend(topo, formatEndpoint(ADDR.relayClientSide6, 5702), ['--local-port', '41001', '--sizes', '30,0']);
  t.same(v6.replies.map((r) => r.exact), [true, true], 'IPv6: every reply came back, the empty datagram too');
  const seen = udpSeen(echo).map((d) => `${formatEndpoint(d.remote, d.port)}/${d.bytes}`);
  t.same(seen, [`${ADDR.client4}:41000/10`, `${ADDR.client4}:41000/20`, `${ADDR.client4}:41000/1400`,
    `[${ADDR.client6}]:41001/30`, `[${ADDR.client6}]:41001/0`], "the backend saw each client's own address and port");
  const fdsWithFew = fdCount(pid);
  t.equal(fdsWithFew, fdsBefore, `two sessions open, no fd for them (${fdsWithFew}, before ${fdsBefore})`);

  const flows = topo.lab.spawn(topo.client, [process.execPath, udpToolsPath(), 'flows',
    '--target', formatEndpoint(ADDR.relayClientSide4, 5701), '--flows', '1000', '--batch', '1000', '--timeout', '5000']);
  await flows.waitFor(/"event":"flows-result"/, 30_000);
  t.equal(events(flows).find((e) => e.event === 'flows-result')?.answered, 1000, '1,000 client ports: every one answered');
  t.equal(fdCount(pid), fdsBefore, `1,000 sessions: relay's fds the same as with none (${fdsBefore})`);
  t.equal(await settleFds(pid, fdsBefore, 0), fdsBefore, "relay's fds after the sessions timed out");
  await proc.stop('SIGTERM');
  t.match(relayLogs(proc, 'relay stopped')[0], { udp: { sessionsOpened: 1002 } }, 'each client port was a session of its own');

  // doctor knows the engine: its rules, and the conntrack table its flows need.
  const doctor = topo.relay.tryRun(process.execPath, cliPath(), 'doctor', '--proto', 'udp', '--udp-engine', 'raw',
    '--listen', '0.0.0.0:5703', '--backend', formatEndpoint(ADDR.backend4, 5700), '--max-sessions', '1000').stdout;
  t.match(doctor, /OK +relay host: nftables table inet relay .* raw UDP engine's replies/, `doctor checks the raw engine's rules:\n${doctor}`);
  t.match(doctor, /(OK|WARN) +udp-engine raw: conntrack table: nf_conntrack_max \d+/, 'and compares nf_conntrack_max with --max-sessions');
});

t.test('the raw UDP engine hears ICMP port unreachable, IPv4 and IPv6', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'rawi');
  topo.relay.run(process.execPath, cliPath(), 'routes', 'apply', '--udp-engine', 'raw');
  // Nothing listens on the backend's port 5799: it answers with port unreachable.
  const proc = await relay(topo, ['--proto', 'udp', '--udp-engine', 'raw', '--listen', '0.0.0.0:5711', '--listen', '[::]:5712',
    '--backend', formatEndpoint(ADDR.backend4, 5799), '--backend', formatEndpoint(ADDR.backend6, 5799)]);
  for (const [family, target, port] of [['IPv4', formatEndpoint(ADDR.relayClientSide4, 5711), 41100],
    ['IPv6', formatEndpoint(ADDR.relayClientSide6, 5712), 41101]] as const) {
    await udpSend(topo, target, ['--local-port', String(port), '--timeout', '300']);
    const ended = await eventually(() => relayLogs(proc, 'session ended').find((l) => String(l.client).endsWith(`:${port}`)),
      3000, `${family} session end`);
    t.match(ended, { reason: 'refused', code: 'ECONNREFUSED' }, `${family}: the session ended at the backend's port unreachable`);
  }
  await proc.stop('SIGTERM');
});
