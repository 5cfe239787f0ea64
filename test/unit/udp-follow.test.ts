// The pieces that let a wildcard UDP listener follow the host, without
// namespaces: the listen plan, the listener set against a stubbed host (on
// loopback, where every 127/8 address is local), the address watcher's child
// and its restarts, and the upstream opener shared by TCP and UDP.
import t from 'tap';
import type * as os from 'node:os';
import pino from 'pino';
import { Writable } from 'node:stream';
import { udpListenPlan } from '../../src/listen';
import { parseEndpoint } from '../../src/addr';
import { UdpListeners, UdpListener } from '../../protocols/udp-listeners';
import { AddressWatcher } from '../../src/address-watch';
import { openUpstream, UpstreamOutcomes } from '../../protocols/upstream';
import { SysError } from '../../src/errors';

function capture(): { log: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({ write(chunk, _enc, done) { lines.push(JSON.parse(String(chunk))); done(); } });
  return { log: pino({ level: 'debug' }, sink), lines };
}

const iface = (address: string, family: 'IPv4' | 'IPv6') => ({ address, family }) as os.NetworkInterfaceInfo;

t.test('the plan binds a specific address once, beside the wildcard that also finds it', async (t) => {
  const host = { lo: [iface('127.0.0.1', 'IPv4'), iface('::1', 'IPv6')], eth0: [iface('192.0.2.1', 'IPv4')] };
  const plan = udpListenPlan(['0.0.0.0:53', '[::]:53', '192.0.2.1:53', '0.0.0.0:54'].map((e) => parseEndpoint(e)), host);
  t.same(plan.map((b) => [`${b.address}:${b.port}`, b.fromWildcard]), [
    ['192.0.2.1:53', false], ['127.0.0.1:53', true], ['::1:53', true], ['127.0.0.1:54', true], ['192.0.2.1:54', true],
  ]);
});

t.test('a wildcard listener set binds what the host gains and closes what it loses', async (t) => {
  const { log, lines } = capture();
  let host: NodeJS.Dict<os.NetworkInterfaceInfo[]> = { lo: [iface('127.0.0.1', 'IPv4')] };
  let onChange: (() => void) | undefined;
  const served: string[] = [];
  const retired: string[] = [];
  const set = new UdpListeners({
    endpoints: [parseEndpoint(`0.0.0.0:${47_000 + (process.pid % 1000)}`)],
    log,
    owner: {
      serve: (l: UdpListener) => { served.push(l.address); l.socket.receive({ message() {}, error() {} }); },
      retire: (l: UdpListener) => { retired.push(l.address); },
      replyDropped() {},
    },
    interfaces: () => host,
    watch: (change) => { onChange = change; return { stop() {} }; },
  });
  t.teardown(() => set.close());
  set.start();
  t.same(served, ['127.0.0.1']);
  t.ok(onChange, 'a watcher was started for the wildcard');
  host = { lo: [iface('127.0.0.1', 'IPv4'), iface('127.0.0.2', 'IPv4')] };
  onChange!();
  t.same(served, ['127.0.0.1', '127.0.0.2'], 'the new address is bound');
  t.equal(lines.filter((l) => l.msg === 'address added: UDP listener bound').length, 1);
  host = { lo: [iface('127.0.0.2', 'IPv4')] };
  onChange!();
  t.same(retired, ['127.0.0.1'], 'the address that left is retired');
  t.same(set.boundAddresses.map((a) => a.split(':')[0]), ['127.0.0.2']);
  // An address that cannot be bound (not on this host) is logged once, not at every resync.
  host = { lo: [iface('127.0.0.2', 'IPv4'), iface('192.0.2.250', 'IPv4')] };
  onChange!();
  onChange!();
  t.equal(lines.filter((l) => String(l.msg).startsWith('cannot bind a UDP listener')).length, 1, 'one line for a failing address');
});

t.test('the watcher calls back after each burst of changes, and restarts its child with a growing pause', async (t) => {
  const { log, lines } = capture();
  let changes = 0;
  // A child that prints a burst, then dies: the watcher must call back once per burst, then restart it.
  const watcher = new AddressWatcher({ onChange: () => changes++, log, resyncMs: 60_000,
    command: ['sh', '-c', 'echo a; echo b; echo c; sleep 0.1; exit 3'] });
  t.teardown(() => watcher.stop());
  await new Promise((r) => setTimeout(r, 1_600));
  const warnings = lines.filter((l) => String(l.msg).startsWith('address watcher stopped'));
  t.ok(warnings.length >= 1 && warnings.length <= 2, `${warnings.length} restart(s) in 1.6 s (first after 1 s, then 2 s)`);
  t.equal(warnings[0]?.why, 'exited with status 3');
  t.same(warnings.map((w) => w.restartInMs), [1_000, 2_000].slice(0, warnings.length), 'the pause doubles');
  t.ok(changes >= 1 && changes <= 4, `${changes} callbacks, not one per line`);
});

t.test('a watcher whose command is missing keeps relay running and says so', async (t) => {
  const { log, lines } = capture();
  const watcher = new AddressWatcher({ onChange() {}, log, command: ['/nonexistent/ip', 'monitor'] });
  await new Promise((r) => setTimeout(r, 100));
  watcher.stop();
  const said = lines.filter((l) => String(l.msg).startsWith('address watcher'));
  t.same(said.map((l) => l.msg), ['address watcher cannot run: addresses are checked periodically only'], 'said once, no restarts');
  t.match(String(said[0]?.why), /ENOENT/);
});

t.test('the upstream opener: family mismatch, and the port-in-use fallback', async (t) => {
  const events: string[] = [];
  const outcomes: UpstreamOutcomes = {
    rejectedMismatch: () => events.push('rejected'),
    masqueraded: () => events.push('masqueraded'),
    portInUse: (port) => events.push(`port ${port} in use`),
    failed: (err) => events.push(`failed ${(err as SysError).code}`),
  };
  const v4 = parseEndpoint('198.51.100.20:53');
  const sockets = (policy: 'reject' | 'masquerade', taken: number[] = []) => ({
    onFamilyMismatch: policy,
    bindFrom: (address: string, port: number) => {
      if (taken.includes(port)) throw new SysError({ errno: port === 0 ? -24 : -98, syscall: 'bind', address, port });
      return `${address}:${port}`;
    },
    unbound: (family: number) => `own IPv${family}`,
  });
  const client = { address: '192.0.2.2', port: 4000 };
  t.equal(openUpstream(sockets('reject'), outcomes, client, v4), '192.0.2.2:4000');
  t.equal(openUpstream(sockets('reject'), outcomes, { address: '2001:db8::2', port: 4000 }, v4), undefined);
  t.equal(openUpstream(sockets('masquerade'), outcomes, { address: '2001:db8::2', port: 4000 }, v4), 'own IPv4');
  t.equal(openUpstream(sockets('reject', [4000]), outcomes, client, v4), '192.0.2.2:0');
  t.equal(openUpstream(sockets('reject', [4000, 0]), outcomes, client, v4), undefined);
  t.equal(openUpstream(sockets('reject', [0]), outcomes, { ...client, port: 0 }, v4), undefined, 'port 0: no fallback');
  t.same(events, ['rejected', 'masqueraded', 'port 4000 in use', 'port 4000 in use', 'failed EMFILE', 'failed EMFILE']);
});

t.test('a throw while following a change is logged, not thrown into relay', async (t) => {
  const { log, lines } = capture();
  const watcher = new AddressWatcher({ onChange() { throw new Error('boom'); }, log, command: ['sh', '-c', 'echo a; sleep 5'] });
  t.teardown(() => watcher.stop());
  await new Promise((r) => setTimeout(r, 200));
  t.ok(lines.some((l) => String(l.msg).startsWith('internal error while following address changes')), 'logged');
});
