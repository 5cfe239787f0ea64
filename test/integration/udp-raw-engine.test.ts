// --udp-engine raw: UDP sessions with no socket each (issue 15). The backend
// (a real UDP echo server, and dnsmasq for dig) must see each client's own
// address and port, replies must come back from the address the client sent
// to, and relay's fds must be the same with no session as with 5,000. It runs
// as nobody with CAP_NET_RAW alone, and a backend a reload adds gets its replies.
import t from 'tap';
import { tcpLab, relay, canRunLab, SKIP_REASON, ADDR, formatEndpoint, udpEcho, udpSend, udpSeen, udpToolsPath, events,
  relayLogs, eventually } from './lab-fixture';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cliPath } from '../../src/lab/topology';
import { relayPid, fdCount } from '../torture/harness';

t.test('the raw UDP engine: the client address and port kept, no fd per session', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'rawe');
  const applied = topo.relay.run(process.execPath, cliPath(), 'routes', 'apply', '--udp-engine', 'raw');
  t.match(applied, /raw UDP engine's replies to ports 61000-61063/, 'relay routes apply adds the raw engine\'s steering');
  const echo = await udpEcho(topo, 5700);
  const proc = await relay(topo, ['--proto', 'udp', '--udp-engine', 'raw', '--listen', '0.0.0.0:5701', '--listen', '[::]:5702',
    '--backend', formatEndpoint(ADDR.backend4, 5700), '--backend', formatEndpoint(ADDR.backend6, 5700)]);
  const pid = relayPid(proc);
  const fdsBefore = fdCount(pid);
  // Its blocking reads hold four threads of libuv's pool: relay starts the pool with four more than Node's default.
  // The same Node, started as relay was (its environment), with the pool started at its default size.
  const nodeThreads = Number(topo.relay.run(process.execPath, '-e',
    "require('fs').readFile(__filename, () => setTimeout(() => console.log(require('fs').readdirSync('/proc/self/task').length), 100))").trim());
  const relayThreads = fs.readdirSync(`/proc/${pid}/task`).length;
  t.ok(relayThreads >= nodeThreads + 4, `relay has ${relayThreads} threads, a Node process with the default pool ${nodeThreads}: ` +
    'four or more left for the pool\'s other work');

  // Ports below the ephemeral range, so none of the 5,000 flows below reuses their sessions.
  const v4 = await udpSend(topo, formatEndpoint(ADDR.relayClientSide4, 5701), ['--local-port', '31000', '--sizes', '10,20,1400']);
  t.same(v4.replies.map((r) => r.exact), [true, true, true], 'IPv4: every reply came back, byte for byte');
  t.ok(v4.replies.every((r) => r.from === formatEndpoint(ADDR.relayClientSide4, 5701)), 'from the address the client sent to');
  const v6 = await udpSend(topo, formatEndpoint(ADDR.relayClientSide6, 5702), ['--local-port', '31001', '--sizes', '30,0']);
  t.same(v6.replies.map((r) => r.exact), [true, true], 'IPv6: every reply came back, the empty datagram too');
  const seen = udpSeen(echo).map((d) => `${formatEndpoint(d.remote, d.port)}/${d.bytes}`);
  t.same(seen, [`${ADDR.client4}:31000/10`, `${ADDR.client4}:31000/20`, `${ADDR.client4}:31000/1400`,
    `[${ADDR.client6}]:31001/30`, `[${ADDR.client6}]:31001/0`], "the backend saw each client's own address and port");
  const fdsWithFew = fdCount(pid);
  t.equal(fdsWithFew, fdsBefore, `two sessions open, no fd for them (${fdsWithFew}, before ${fdsBefore})`);

  const flows = topo.lab.spawn(topo.client, [process.execPath, udpToolsPath(), 'flows',
    '--target', formatEndpoint(ADDR.relayClientSide4, 5701), '--flows', '5000', '--batch', '5000', '--timeout', '8000']);
  await flows.waitFor(/"event":"flows-result"/, 40_000);
  t.equal(events(flows).find((e) => e.event === 'flows-result')?.answered, 5000, '5,000 client ports: every one answered');
  t.equal(fdCount(pid), fdsBefore, `5,000 sessions: relay's fds the same as with none (${fdsBefore})`);
  await proc.stop('SIGTERM');
  t.match(relayLogs(proc, 'relay stopped')[0], { udp: { sessionsOpened: 5002 } }, 'each client port was a session of its own');

  // doctor knows the engine: its rules, and the conntrack table its flows need.
  const doctor = () => topo.relay.tryRun(process.execPath, cliPath(), 'doctor', '--proto', 'udp', '--udp-engine', 'raw',
    '--listen', '0.0.0.0:5703', '--backend', formatEndpoint(ADDR.backend4, 5700), '--max-sessions', '1000',
    '--health-udp-probe', '70726f6265', '--probe-timeout', '1s').stdout;
  const withRules = doctor();
  t.match(withRules, /OK +relay host: nftables table inet relay .* raw UDP engine's replies/, `doctor checks the raw engine's rules:\n${withRules}`);
  t.match(withRules, /(OK|WARN) +udp-engine raw: conntrack table: nf_conntrack_max \d+/, 'and compares nf_conntrack_max with --max-sessions');
  t.match(withRules, /OK +end to end udp 198\.51\.100\.20:5700 from 192\.0\.2\.254: the backend's reply came back through relay/,
    "its probe took the raw engine's path and the reply came back");
  await eventually(() => udpSeen(echo).find((d) => d.remote === '192.0.2.254'), 3000, "the backend to see doctor's probe");
  t.pass("the backend saw the probe from doctor's client-like source");
  // The socket engine's routes take the raw engine's rules away; the same probe's reply is then lost.
  topo.relay.run(process.execPath, cliPath(), 'routes', 'apply');
  t.notMatch(topo.relay.run('nft', 'list', 'table', 'inet', 'relay'), /tproxy/, "routes apply without --udp-engine raw removes its rules");
  const without = doctor();
  t.match(without, /FAIL +relay host: nftables table inet relay .* raw UDP engine's replies/, `doctor sees them missing:\n${without}`);
  t.match(without, /FAIL +end to end udp 198\.51\.100\.20:5700 from 192\.0\.2\.254: no reply .*raw-engine rules are missing/,
    'and its end-to-end probe fails and names them');
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

t.test('the raw UDP engine with CAP_NET_RAW alone, and a backend added by reload', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'rawr');
  topo.relay.run(process.execPath, cliPath(), 'routes', 'apply', '--udp-engine', 'raw');
  const echo = await udpEcho(topo, 5720);
  const file = path.join(topo.lab.dir, 'relay.toml');
  const config = (backends: string[]) => `udp-engine = "raw"
pid-file = "${path.join(topo.lab.dir, 'relay.pid')}"

[[service]]
name = "dns"
proto = "udp"
listen = ["0.0.0.0:5721"]
backend = [${backends.map((b) => `"${b}"`).join(', ')}]
health-interval = "0s"
balance = "roundrobin"
`;
  fs.writeFileSync(file, config([formatEndpoint(ADDR.backend4, 5720)]));
  fs.chmodSync(topo.lab.dir, 0o755);
  fs.chmodSync(file, 0o644);
  const proc = topo.lab.spawn(topo.relay, ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups',
    '--inh-caps=-all,+net_raw', '--ambient-caps=+net_raw', '--bounding-set=-all,+net_raw', process.execPath, cliPath(), '--config', file]);
  await proc.waitFor(/"msg":"relay started"/, 15_000);
  const status = topo.relay.run('sh', '-c', `grep -E '^(Uid|CapEff)' /proc/${proc.child.pid}/status`);
  t.match(status, /CapEff:\s+0000000000002000/, 'relay holds CAP_NET_RAW (bit 13) and nothing else');
  const first = await udpSend(topo, formatEndpoint(ADDR.relayClientSide4, 5721), ['--local-port', '41200', '--sizes', '10']);
  t.same(first.replies.map((r) => r.exact), [true], 'as nobody with CAP_NET_RAW: answered');

  // A second backend, an address of its own on the backend host, added by a reload.
  topo.backend.ip('addr', 'add', '198.51.100.21/24', 'dev', 'eth0');
  const echo2 = await udpEcho(topo, 5720, ['198.51.100.21']);
  fs.writeFileSync(file, config([formatEndpoint(ADDR.backend4, 5720), '198.51.100.21:5720']));
  process.kill(proc.child.pid!, 'SIGHUP');
  await eventually(() => relayLogs(proc, 'configuration reloaded')[0], 5000, 'reloaded');
  for (const port of [41201, 41202, 41203, 41204]) {
    const out = await udpSend(topo, formatEndpoint(ADDR.relayClientSide4, 5721), ['--local-port', String(port), '--sizes', '20']);
    t.same(out.replies.map((r) => r.exact), [true], `client port ${port}: answered`);
  }
  t.ok(udpSeen(echo2).length >= 1, 'the added backend got sessions, and their replies came back');
  t.ok(udpSeen(echo2).every((d) => d.remote === ADDR.client4), "it saw the client's own address");
  t.ok(udpSeen(echo).length >= 2, 'the first backend still serves');
  await proc.stop('SIGTERM');
});

