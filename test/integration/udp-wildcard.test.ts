// A wildcard UDP listener follows the relay host's addresses: one added after
// relay started is served (the reply from that address and port, the backend
// seeing the client's address and port), one removed ends only its own
// sessions, and the fds come back. Also when the address watcher dies.
import t from 'tap';
import {
  tcpLab, relay, canRunLab, SKIP_REASON, ADDR, formatEndpoint, udpEcho, udpSend, udpSeen, eventually, relayLogs, UDP_ENGINE,
} from './lab-fixture';
import { fdCount, relayPid, settleFds } from '../torture/harness';
import type { SpawnedProcess, Topology } from './lab-fixture';

const BACKEND_PORT = 5410;
const V4_PORT = 5411;
const V6_PORT = 5412;
const ADDED4 = '192.0.2.20';
const ADDED6 = '2001:db8:2::20';
const DEPRECATED6 = '2001:db8:2::30';
const LATER4 = '192.0.2.21';
const TENTATIVE6 = '2001:db8:2::40';

/** relay's 'address added' line for this listen address: how long after addedAt it came. */
async function servedAfterMs(proc: SpawnedProcess, listen: string, addedAt: number): Promise<number> {
  const line = await eventually(() => relayLogs(proc, 'address added: UDP listener bound').find((l) => l.listen === listen),
    5000, `relay to bind ${listen}`);
  return Date.parse(String(line.time)) - addedAt;
}

function udpListening(topo: Topology, port: number): string[] {
  return topo.relay.tryRun('ss', '-Hlun', `sport = :${port}`).stdout.trim().split('\n')
    .filter(Boolean).map((l) => l.trim().split(/\s+/)[3]);
}

t.test('a wildcard UDP listener follows the host', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'udpwild');
  const echo = await udpEcho(topo, BACKEND_PORT);
  const proc = await relay(topo, ['--proto', 'udp', '--listen', `0.0.0.0:${V4_PORT}`, '--listen', `[::]:${V6_PORT}`,
    '--backend', formatEndpoint(ADDR.backend4, BACKEND_PORT), '--backend', formatEndpoint(ADDR.backend6, BACKEND_PORT),
    '--session-timeout', '120s']);
  const pid = relayPid(proc);
  // A first session before the baseline, so what only the first one costs (the receive batch) is in it.
  await udpSend(topo, `${ADDR.relayClientSide4}:${V4_PORT}`, ['--local-port', '41000']);
  const baseline = fdCount(pid) - (UDP_ENGINE === 'raw' ? 0 : 1); // the raw engine holds no socket for the session

  t.test('an IPv4 address added after start is served, from that address and port', async (t) => {
    const addedAt = Date.now();
    topo.relay.ip('addr', 'add', `${ADDED4}/24`, 'dev', 'eth-client');
    const ms = await servedAfterMs(proc, `${ADDED4}:${V4_PORT}`, addedAt);
    t.comment(`${ADDED4} unserved for ${ms} ms after ip addr add`);
    t.ok(ms < 1000, `bound within a second (${ms} ms)`);
    const out = await udpSend(topo, `${ADDED4}:${V4_PORT}`, ['--local-port', '41001', '--sizes', '5,6']);
    t.same(out.replies.map((r) => r.from), [`${ADDED4}:${V4_PORT}`, `${ADDED4}:${V4_PORT}`], 'replies from the address sent to');
    t.same(udpSeen(echo).filter((s) => s.port === 41001).map((s) => s.remote), [ADDR.client4, ADDR.client4],
      "the backend saw the client's address and port");
    // [::] takes IPv4 addresses too.
    const dual = await udpSend(topo, `${ADDED4}:${V6_PORT}`, ['--local-port', '41002']);
    t.equal(dual.replies[0]?.from, `${ADDED4}:${V6_PORT}`, 'the [::] listener serves it as well');
  });

  t.test('an IPv6 address added after start (nodad) is served, from that address and port', async (t) => {
    const addedAt = Date.now();
    topo.relay.ip('-6', 'addr', 'add', `${ADDED6}/64`, 'dev', 'eth-client', 'nodad');
    const ms = await servedAfterMs(proc, `[${ADDED6}]:${V6_PORT}`, addedAt);
    t.comment(`${ADDED6} unserved for ${ms} ms after ip addr add`);
    const out = await udpSend(topo, `[${ADDED6}]:${V6_PORT}`, ['--local-port', '41003']);
    t.equal(out.replies.length, 1);
    t.equal(out.replies[0]?.from, `${ADDED6}:${V6_PORT}`, 'reply from the address sent to');
    t.same(udpSeen(echo).filter((s) => s.port === 41003).map((s) => s.remote), [ADDR.client6],
      "the backend saw the client's address and port");
    t.notOk(udpListening(topo, V4_PORT).includes(`[${ADDED6}]:${V4_PORT}`), '0.0.0.0 takes no IPv6 address');
  });

  t.test('a deprecated IPv6 address added after start is served too', async (t) => {
    topo.relay.ip('-6', 'addr', 'add', `${DEPRECATED6}/64`, 'dev', 'eth-client', 'nodad', 'preferred_lft', '0');
    await servedAfterMs(proc, `[${DEPRECATED6}]:${V6_PORT}`, Date.now());
    const out = await udpSend(topo, `[${DEPRECATED6}]:${V6_PORT}`, ['--local-port', '41004']);
    t.equal(out.replies[0]?.from, `${DEPRECATED6}:${V6_PORT}`, 'reply from the deprecated address, not the preferred one');
  });

  t.test('an IPv6 address added with duplicate address detection is served once detection is done', async (t) => {
    // The lab turns detection off on its links; this address gets it.
    topo.relay.run('sysctl', '-qw', 'net.ipv6.conf.eth-client.accept_dad=1');
    t.teardown(() => topo.relay.run('sysctl', '-qw', 'net.ipv6.conf.eth-client.accept_dad=0'));
    const addedAt = Date.now();
    topo.relay.ip('-6', 'addr', 'add', `${TENTATIVE6}/64`, 'dev', 'eth-client');
    // Tentative at first: the kernel refuses the bind (EADDRNOTAVAIL) until detection ends, which it announces.
    const ms = await servedAfterMs(proc, `[${TENTATIVE6}]:${V6_PORT}`, addedAt);
    t.comment(`${TENTATIVE6} (with DAD) served ${ms} ms after ip addr add`);
    t.ok(ms >= 500, 'not before detection was done');
    const early = relayLogs(proc).filter((l) => String(l.msg).startsWith('cannot bind a UDP listener') &&
      l.listen === `[${TENTATIVE6}]:${V6_PORT}`);
    t.same(early.map((l) => l.level), [30], 'the tentative address was tried once, at info');
    const out = await udpSend(topo, `[${TENTATIVE6}]:${V6_PORT}`, ['--local-port', '41007']);
    t.equal(out.replies[0]?.from, `${TENTATIVE6}:${V6_PORT}`);
    topo.relay.ip('-6', 'addr', 'del', `${TENTATIVE6}/64`, 'dev', 'eth-client');
  });

  t.test('an address removed: its sessions end, the other addresses go on', async (t) => {
    const sessionsOn = (address: string) => relayLogs(proc, 'session ended')
      .filter((l) => String(l.listen).startsWith(address) && l.reason === 'address-removed');
    topo.relay.ip('addr', 'del', `${ADDED4}/24`, 'dev', 'eth-client');
    await eventually(() => relayLogs(proc, 'address removed: UDP listener closed')
      .filter((l) => String(l.listen).startsWith(`${ADDED4}:`)).length === 2 || undefined, 5000, 'both listeners closed');
    t.notOk(udpListening(topo, V4_PORT).includes(`${ADDED4}:${V4_PORT}`), 'no socket left on the removed address');
    t.same(sessionsOn(ADDED4).map((l) => l.client).sort(),
      [`${ADDR.client4}:41001`, `${ADDR.client4}:41002`], "the removed address's sessions ended, reason address-removed");
    const out = await udpSend(topo, `${ADDR.relayClientSide4}:${V4_PORT}`, ['--local-port', '41005']);
    t.equal(out.replies[0]?.from, `${ADDR.relayClientSide4}:${V4_PORT}`, 'the first address still answers');
    const v6 = await udpSend(topo, `[${ADDED6}]:${V6_PORT}`, ['--local-port', '41003']);
    t.equal(v6.replies[0]?.from, `${ADDED6}:${V6_PORT}`, 'the IPv6 session on another added address still answers');
  });

  t.test('the address watcher, killed, is restarted and addresses are followed again', async (t) => {
    const watcher = topo.relay.tryRun('ps', '-o', 'pid=', '--ppid', String(pid)).stdout.trim().split(/\s+/).filter(Boolean);
    t.equal(watcher.length, 1, 'relay runs one child, the watcher');
    process.kill(Number(watcher[0]), 'SIGKILL');
    await eventually(() => relayLogs(proc).find((l) => String(l.msg).startsWith('address watcher stopped')), 5000, 'the warning');
    topo.relay.ip('addr', 'add', `${LATER4}/24`, 'dev', 'eth-client');
    // Within the restart pause (1 s) plus the bind: the restarted watcher resyncs at once.
    await servedAfterMs(proc, `${LATER4}:${V4_PORT}`, Date.now());
    const out = await udpSend(topo, `${LATER4}:${V4_PORT}`, ['--local-port', '41006']);
    t.equal(out.replies[0]?.from, `${LATER4}:${V4_PORT}`);
    topo.relay.ip('addr', 'del', `${LATER4}/24`, 'dev', 'eth-client');
    await eventually(() => !udpListening(topo, V4_PORT).includes(`${LATER4}:${V4_PORT}`) || undefined, 5000, 'unbound');
  });

  t.test("relay's fds return to the baseline once the added addresses are gone", async (t) => {
    topo.relay.ip('-6', 'addr', 'del', `${ADDED6}/64`, 'dev', 'eth-client');
    topo.relay.ip('-6', 'addr', 'del', `${DEPRECATED6}/64`, 'dev', 'eth-client');
    // 192.0.2.20 and 192.0.2.21 on both ports, the three IPv6 addresses on [::].
    await eventually(() => relayLogs(proc, 'address removed: UDP listener closed').length === 7 || undefined, 5000, 'all closed');
    // Sessions on the addresses still there (41000, 41005) hold one fd each until they idle out (none with the raw engine).
    const live = UDP_ENGINE === 'raw' ? 0 : 2;
    const settled = await settleFds(pid, baseline + live, 0);
    t.equal(settled, baseline + live, `fds ${settled}: baseline ${baseline} plus the ${live} session sockets still live`);
  });

  t.test('relay logged no error', async (t) => {
    t.same(relayLogs(proc).filter((l) => Number(l.level) >= 50), []);
  });

  t.test('SIGTERM: relay exits 0 and its watcher with it', async (t) => {
    const watcher = Number(topo.relay.tryRun('ps', '-o', 'pid=', '--ppid', String(pid)).stdout.trim());
    t.ok(watcher > 0, 'a watcher runs');
    t.equal(await proc.stop('SIGTERM'), 0);
    const gone = () => { try { process.kill(watcher, 0); return undefined; } catch { return true; } };
    t.ok(await eventually(gone, 3000, 'the watcher to end'));
  });
});
