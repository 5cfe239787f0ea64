// issue 17: an IPv4 client through relay to an IPv6-only backend, with
// --map-ipv4-prefix. The backend routes only the prefix back via relay (the
// recipe `relay routes print` gives, pasted), and its real servers log the
// mapped address that embeds the client's IPv4 address: nginx's $remote_addr
// for TCP (the port too, with --keep-client-port), dnsmasq's query log and an
// echo server (address and port) for UDP. Without the flag, the mismatch is
// refused as before. relay's fds come back where they were.
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  tcpLab, relay, canRunLab, SKIP_REASON, ADDR, formatEndpoint, eventually, relayLogs, udpEcho, udpSend, udpSeen,
  toolServer, clientSession, accepts,
} from './lab-fixture';
import { startNginxHttp } from '../../src/lab/peers';
import { cliPath } from '../../src/lab/topology';
import { waitForListener } from '../../src/lab/netns';
import { relayPid, fdCount, settleFds } from '../torture/harness';

const PREFIX = '2001:db8:64::/96';
/** 192.0.2.2 (ADDR.client4) in PREFIX. */
const MAPPED_CLIENT = '2001:db8:64::c000:202';

t.test('IPv4 clients to an IPv6-only backend through --map-ipv4-prefix', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  t.equal(ADDR.client4, '192.0.2.2', 'MAPPED_CLIENT embeds the lab client');
  const topo = tcpLab(t, 'v6m');
  // The backend's IPv6 replies go nowhere but by the recipe's route for the prefix.
  const printed = topo.relay.run(process.execPath, cliPath(), 'routes', 'print', '--map-ipv4-prefix', PREFIX,
    '--backend', formatEndpoint(ADDR.backend6, 80));
  const recipe = printed.split('\n').find((l) => l.startsWith(`ip -6 route replace ${PREFIX} via `));
  t.equal(recipe, `ip -6 route replace ${PREFIX} via ${ADDR.relayBackendSide6}`, 'routes print gives the backend its route for the prefix');
  topo.backend.ip('-6', 'route', 'del', 'default');
  topo.backend.run('sh', '-c', String(recipe));

  const nginx = await startNginxHttp(topo.lab, topo.backend, [ADDR.backend6], 80);
  const backend = formatEndpoint(ADDR.backend6, 80);

  t.test('TCP: nginx logs the mapped address, and the client gets the reply', async (t) => {
    const proc = await relay(topo, ['--listen', '0.0.0.0:8090', '--backend', backend, '--map-ipv4-prefix', PREFIX,
      '--keep-client-port']);
    const pid = relayPid(proc);
    const fdsBefore = fdCount(pid);
    const body = topo.client.run('curl', '-sS', '--max-time', '5', '--local-port', '43017', `http://${ADDR.relayClientSide4}:8090/mapped-tcp`);
    t.equal(body, 'hello from the backend\n', 'the reply came back through relay');
    const line = await eventually(() => nginx.accessLog().find((l) => l.includes('GET /mapped-tcp ')), 5000, 'access log line');
    const [remoteAddr, remotePort] = line.split(' ');
    t.equal(remoteAddr, MAPPED_CLIENT, "nginx's $remote_addr is the prefix + the client's IPv4 address");
    t.equal(remotePort, '43017', '--keep-client-port keeps the port too');
    const closed = await eventually(() => relayLogs(proc, 'connection closed')[0], 5000, 'connection closed line');
    t.equal(closed.client, `${ADDR.client4}:43017`, 'the log names the client as it is');
    t.equal(closed.upstreamSource, MAPPED_CLIENT, '... and the address the backend saw');
    // At most: the count taken just after start may still hold the address watcher's spawn pipes.
    const settled = await settleFds(pid, fdsBefore, 0);
    t.ok(settled <= fdsBefore, `relay's fds are back where they were (${settled}, before ${fdsBefore})`);
    proc.child.kill('SIGTERM');
    await proc.exited(5000);
    const stats = relayLogs(proc, 'relay stopped')[0]?.tcp as { upstreamsMapped: number };
    t.equal(stats.upstreamsMapped, 1, 'counted as mapped');
  });

  t.test('UDP: the echo server sees the mapped address and the client port; the reply comes back', async (t) => {
    const echo = await udpEcho(topo, 5600, [ADDR.backend6]);
    const proc = await relay(topo, ['--proto', 'udp', '--listen', '0.0.0.0:5601', '--backend', formatEndpoint(ADDR.backend6, 5600),
      '--map-ipv4-prefix', PREFIX, '--udp-responses', '1']);
    const pid = relayPid(proc);
    const fdsBefore = fdCount(pid);
    const out = await udpSend(topo, `${ADDR.relayClientSide4}:5601`, ['--local-port', '42017']);
    t.equal(out.replies.length, 1, 'answered');
    t.equal(out.replies[0].from, `${ADDR.relayClientSide4}:5601`, 'from the address the client sent to');
    t.same(udpSeen(echo).at(-1), { remote: MAPPED_CLIENT, port: 42017, bytes: udpSeen(echo).at(-1)?.bytes },
      'the backend saw the mapped address and the client\'s own port');
    const ended = await eventually(() => relayLogs(proc, 'session ended')[0], 5000, 'session ended line');
    t.equal(ended.client, `${ADDR.client4}:42017`);
    t.equal(ended.upstreamSource, MAPPED_CLIENT);
    // At most: the count taken just after start may still hold the address watcher's spawn pipes.
    const settled = await settleFds(pid, fdsBefore, 0);
    t.ok(settled <= fdsBefore, `relay's fds are back where they were (${settled}, before ${fdsBefore})`);
  });

  t.test('UDP: dnsmasq logs the query from the mapped address; dig gets the answer', async (t) => {
    // An empty file of the lab's own, not /dev/null: on this shared machine /dev/null has been found a regular file.
    const noConf = path.join(topo.lab.dir, 'dnsmasq-v6m.conf');
    fs.writeFileSync(noConf, '');
    const dnsmasq = topo.lab.spawn(topo.backend, ['dnsmasq', '--keep-in-foreground', `--conf-file=${noConf}`,
      '--no-resolv', '--no-hosts', '--bind-interfaces', `--listen-address=${ADDR.backend6}`, '--except-interface=lo',
      '--port=53', '--log-queries', '--log-facility=-', '--user=root', `--pid-file=${path.join(topo.lab.dir, 'dnsmasq-v6m.pid')}`,
      '--address=/relay.test/203.0.113.7']);
    await waitForListener(topo.backend, 'udp', 53);
    await relay(topo, ['--proto', 'udp', '--listen', '0.0.0.0:53', '--backend', formatEndpoint(ADDR.backend6, 53),
      '--map-ipv4-prefix', PREFIX, '--udp-responses', '1']);
    const out = topo.client.run('dig', `@${ADDR.relayClientSide4}`, 'mapped.relay.test', 'A', '+short', '+time=2', '+tries=1');
    t.equal(out.trim(), '203.0.113.7', 'dig got the answer');
    const line = await eventually(() => dnsmasq.stderr().split('\n').find((l) => l.includes('query[A] mapped.relay.test from')),
      3000, 'the query in dnsmasq\'s log');
    t.match(line, new RegExp(`from ${MAPPED_CLIENT}$`), 'dnsmasq logged the mapped address');
  });

  t.test('without the flag the mismatch is refused as before', async (t) => {
    const proc = await relay(topo, ['--listen', '0.0.0.0:8091', '--backend', backend]);
    const seen = nginx.accessLog().length;
    const curl = topo.client.tryRun('curl', '-sS', '--max-time', '3', `http://${ADDR.relayClientSide4}:8091/unmapped`);
    t.notOk(curl.ok, 'the client is refused');
    t.equal(nginx.accessLog().length, seen, 'the backend saw nothing');
    const warn = await eventually(() => relayLogs(proc).find((l) => String(l.msg).includes('families differ')), 3000, 'warning');
    t.equal(warn.upstreamSource, undefined);
  });

  t.test('the well-known prefix is accepted with a warning', async (t) => {
    const proc = await relay(topo, ['--listen', '0.0.0.0:8092', '--backend', backend, '--map-ipv4-prefix', '64:ff9b::/96']);
    const warn = await eventually(() => relayLogs(proc).find((l) => l.mapIpv4Prefix === '64:ff9b::/96' && l.level === 40), 3000, 'warning');
    t.match(String(warn.msg), /RFC 6052 section 3\.1/);
  });

  t.test('doctor probes from a mapped source, prints the backend\'s route for the prefix, and warns on the well-known one', async (t) => {
    await udpEcho(topo, 80, [ADDR.backend6]); // for the UDP probe ('hello' in hex): echoed back
    const doctor = (prefix: string) => topo.relay.tryRun(process.execPath, cliPath(), 'doctor', '--proto', 'tcp,udp',
      '--listen', '0.0.0.0:8093', '--backend', backend, '--map-ipv4-prefix', prefix, '--probe-timeout', '1s',
      '--health-udp-probe', '68656c6c6f');
    const routed = doctor(PREFIX);
    t.ok(routed.ok, `doctor passes:\n${routed.stdout}`);
    for (const proto of ['tcp', 'udp']) {
      t.match(routed.stdout, `OK    end to end ${proto} ${backend} from 2001:db8:64::c000:2fe (192.0.2.254 in --map-ipv4-prefix): ` +
        "the backend's reply came back through relay");
    }
    t.notMatch(routed.stdout, 'from 2001:db8:ffff::fe', 'relay listens on no IPv6 address: no probe from an IPv6 client');
    t.match(routed.stdout, `OK    map-ipv4-prefix ${PREFIX}: IPv4 clients of IPv6 backends are relayed from it`);
    t.match(routed.stdout, `OK    relay host: IPv6 route: replies to --map-ipv4-prefix ${PREFIX} are local in table 2017`);

    // The backend routes 2001:db8:64::/96 only: a probe from another prefix gets no SYN-ACK back.
    const unrouted = doctor('2001:db8:65::/96');
    t.notOk(unrouted.ok, 'doctor fails');
    t.match(unrouted.stdout, `FAIL  end to end tcp ${backend} from 2001:db8:65::c000:2fe (192.0.2.254 in --map-ipv4-prefix): no answer`);
    t.match(unrouted.stdout, `fix (c): ip -6 route replace 2001:db8:65::/96 via ${ADDR.relayBackendSide6}`);

    const wellKnown = doctor('64:ff9b::/96');
    t.match(wellKnown.stdout, /WARN  map-ipv4-prefix 64:ff9b::\/96: the well-known prefix .*RFC 6052 section 3\.1/);
  });

  t.test('balancing: an IPv4 backend that is up is still preferred; a refused one is retried through the mapping', async (t) => {
    const server = await toolServer(topo, 'echo', 7100);
    await relay(topo, ['--listen', '0.0.0.0:7101', '--backend', formatEndpoint(ADDR.backend4, 7100),
      '--backend', formatEndpoint(ADDR.backend6, 7100), '--map-ipv4-prefix', PREFIX]);
    for (let i = 0; i < 3; i++) t.ok((await clientSession(topo, `${ADDR.relayClientSide4}:7101`, ['--send', 'x', '--end'])).connected);
    t.same([...new Set(accepts(server).map((a) => a.remote))], [ADDR.client4], 'every connection went to the IPv4 backend, unmapped');

    // Nothing listens on the IPv4 backend's port 7199: refused, then retried on the IPv6 backend, mapped.
    await relay(topo, ['--listen', '0.0.0.0:7102', '--backend', formatEndpoint(ADDR.backend4, 7199),
      '--backend', formatEndpoint(ADDR.backend6, 7100), '--map-ipv4-prefix', PREFIX]);
    const session = await clientSession(topo, `${ADDR.relayClientSide4}:7102`, ['--send', 'hello', '--end']);
    t.ok(session.connected, 'the client was served');
    t.equal(session.received, 'hello', 'echoed back');
    t.equal(accepts(server).at(-1)?.remote, MAPPED_CLIENT, 'the retry went to the IPv6 backend from the mapped address');
  });

  t.test('a configuration file: map-ipv4-prefix is a service key, and a reload sets it live', async (t) => {
    const server = await toolServer(topo, 'echo', 7110, [ADDR.backend6]);
    const file = path.join(topo.lab.dir, 'v6m.toml');
    const write = (extra: string) => fs.writeFileSync(file, `pid-file = "${path.join(topo.lab.dir, 'v6m.pid')}"\n\n` +
      `[[service]]\nname = "web"\nlisten = ["0.0.0.0:7111"]\nbackend = ["${formatEndpoint(ADDR.backend6, 7110)}"]\n` +
      `health-interval = "0s"\n${extra}`);
    write('');
    const proc = topo.lab.spawn(topo.relay, [process.execPath, cliPath(), '--config', file]);
    await proc.waitFor(/"msg":"relay started"/, 10_000);
    const refused = await clientSession(topo, `${ADDR.relayClientSide4}:7111`, ['--send', 'x', '--end'], 2000);
    t.notOk(refused.received, 'without the key: refused, nothing echoed');
    t.equal(accepts(server).length, 0, 'the backend saw nothing');

    write(`map-ipv4-prefix = "${PREFIX}"\n`);
    proc.child.kill('SIGHUP');
    const reloaded = await eventually(() => relayLogs(proc, 'configuration reloaded')[0], 5000, 'reload line');
    t.match(JSON.stringify(reloaded), 'map-ipv4-prefix', 'the reload names the key it applied');
    const served = await clientSession(topo, `${ADDR.relayClientSide4}:7111`, ['--send', 'hello', '--end']);
    t.equal(served.received, 'hello', 'served after the reload');
    t.equal(accepts(server).at(-1)?.remote, MAPPED_CLIENT, 'from the mapped address');
  });
});
