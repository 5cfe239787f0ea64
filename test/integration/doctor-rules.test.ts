// relay doctor judges the relay host by what its kernel does with a backend's
// reply, not by whose rules deliver it: the widely copied recipes (a rule by
// source, by incoming interface, by the operator's own fwmark, TPROXY) with a
// local route, and no rules of relay's own. In each, relay serves with the
// client's address and doctor exits 0 naming the rule it found; without the
// local route doctor names it and exits 1; a rule for one backend of two is a
// WARN. And doctor beside a serving relay, and [::]:P with 0.0.0.0:P.
import t from 'tap';
import type { Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { canRunLab, SKIP_REASON, ADDR, formatEndpoint, clientSession, accepts, relay, toolServer } from './lab-fixture';
import type { Topology, SpawnedProcess } from './lab-fixture';
import { Lab, IN_NAMESPACE_ENV, waitForListener } from '../../src/lab/netns';
import { buildTopology, cliPath } from '../../src/lab/topology';
import { toolsPath } from '../../src/lab/peers';
import { fdCount, relayPid, settleFds } from '../torture/harness';

const PORT = 7700;
const BACKEND4_B = '198.51.100.21';
const FD_SLACK = 3;

/** A lab with no routes of relay's own on the relay host: the operator's rules stand in for them. */
function bareLab(t: Test): Topology {
  const lab = new Lab(`dkr${process.pid % 100000}`);
  t.teardown(() => lab.teardown());
  return buildTopology(lab);
}

function doctor(topo: Topology, args: string[]): { status: number | null; out: string; lines: string[] } {
  const r = spawnSync('ip', ['netns', 'exec', topo.relay.name, ...IN_NAMESPACE_ENV, process.execPath, cliPath(), 'doctor',
    ...args], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, out: r.stdout + r.stderr, lines: r.stdout.split('\n') };
}

const backendFlags = ['--backend', formatEndpoint(ADDR.backend4, PORT), '--backend', formatEndpoint(ADDR.backend6, PORT)];
const doctorFlags = (port: number) => ['--listen', `0.0.0.0:${port}`, ...backendFlags, '--probe-timeout', '1s'];

/** relay serves with the client's address over both families; its fds come back. */
async function servesTransparently(t: Test, topo: Topology, port: number, echo: SpawnedProcess): Promise<void> {
  const proc = await relay(topo, ['--listen', `0.0.0.0:${port}`, '--listen', `[::]:${port}`, ...backendFlags, '--balance', 'source']);
  const pid = relayPid(proc);
  const before = fdCount(pid);
  for (const [target, client] of [[`${ADDR.relayClientSide4}:${port}`, ADDR.client4], [`[${ADDR.relayClientSide6}]:${port}`, ADDR.client6]]) {
    const out = await clientSession(topo, target, ['--send', 'hello', '--end']);
    t.equal(out.received, 'hello', `relayed through ${target}`);
    t.equal(accepts(echo).at(-1)?.remote, client, `the backend saw the client's address ${client}`);
  }
  t.ok(await settleFds(pid, before, FD_SLACK, 5000) <= before + FD_SLACK, 'relay\'s fds came back');
  await proc.stop();
}

/** Run relay expecting it to exit at start: its stderr. */
async function startRelayExpectingFailure(topo: Topology, args: string[]): Promise<string> {
  const proc = topo.lab.spawn(topo.relay, [process.execPath, cliPath(), ...args, '--health-interval', '0']);
  await proc.exited(10_000);
  return proc.stderr();
}

interface Recipe {
  name: string;
  /** Set up the operator's rules; the returned rule text is what doctor must name. */
  apply(topo: Topology): void;
  named: RegExp;
  /** The table whose local routes the recipe uses. */
  table: string;
  /** The mark comes from conntrack, which doctor's route lookup cannot know: the probe decides. */
  probeDecides?: boolean;
}

const recipes: Recipe[] = [
  { name: 'by source', table: '60', named: /delivered locally by rule 100: from 198\.51\.100\.20 lookup 60/,
    apply: (topo) => {
      topo.relay.ip('-4', 'rule', 'add', 'from', ADDR.backend4, 'lookup', '60', 'priority', '100');
      topo.relay.ip('-6', 'rule', 'add', 'from', ADDR.backend6, 'lookup', '60', 'priority', '100');
    } },
  { name: 'by interface', table: '61', named: /delivered locally by rule 101: iif eth-backend lookup 61/,
    apply: (topo) => {
      topo.relay.ip('-4', 'rule', 'add', 'iif', 'eth-backend', 'lookup', '61', 'priority', '101');
      topo.relay.ip('-6', 'rule', 'add', 'iif', 'eth-backend', 'lookup', '61', 'priority', '101');
    } },
  { name: "by the operator's own fwmark", table: '62',
    named: /marked 0x1 by nftables inet operator prerouting .*socket transparent 1.* by rule 102: fwmark 0x1 lookup 62/,
    apply: (topo) => {
      nft(topo, 'table inet operator {\n chain prerouting {\n  type filter hook prerouting priority mangle; policy accept;\n' +
        '  socket transparent 1 meta mark set 0x1 accept\n }\n}\n');
      for (const v of ['-4', '-6']) topo.relay.ip(v, 'rule', 'add', 'fwmark', '0x1', 'lookup', '62', 'priority', '102');
    } },
  { name: 'by TPROXY', table: '63', named: /marked 0x2 by nftables inet optproxy prerouting .*tproxy.* by rule 103: fwmark 0x2 lookup 63/,
    apply: (topo) => {
      nft(topo, 'table inet optproxy {\n chain prerouting {\n  type filter hook prerouting priority mangle; policy accept;\n' +
        `  ip saddr 198.51.100.0/24 meta l4proto { tcp, udp } tproxy ip to :1 meta mark set 0x2 accept\n` +
        `  ip6 saddr 2001:db8:51::/64 meta l4proto { tcp, udp } tproxy ip6 to :1 meta mark set 0x2 accept\n }\n}\n`);
      for (const v of ['-4', '-6']) topo.relay.ip(v, 'rule', 'add', 'fwmark', '0x2', 'lookup', '63', 'priority', '103');
    } },
  { name: 'by CONNMARK, a mark doctor cannot read', table: '64', probeDecides: true,
    named: /the route lookup says: replies from 198\.51\.100\.20 to a client are not delivered locally.*; but the end-to-end tcp probe's reply came back through relay, and the probe decides/,
    apply: (topo) => {
      nft(topo, 'table inet opct {\n chain output {\n  type route hook output priority mangle; policy accept;\n' +
        '  meta l4proto tcp socket transparent 1 ct mark set 0x4\n }\n' +
        ' chain prerouting {\n  type filter hook prerouting priority mangle; policy accept;\n  meta mark set ct mark\n }\n}\n');
      for (const v of ['-4', '-6']) topo.relay.ip(v, 'rule', 'add', 'fwmark', '0x4', 'lookup', '64', 'priority', '104');
    } },
];

function nft(topo: Topology, ruleset: string): void {
  const r = spawnSync('ip', ['netns', 'exec', topo.relay.name, 'nft', '-f', '-'], { input: ruleset, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`nft -f failed: ${r.stderr}`);
}

function addLocalRoutes(topo: Topology, table: string): void {
  topo.relay.ip('-4', 'route', 'add', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', table);
  topo.relay.ip('-6', 'route', 'add', 'local', '::/0', 'dev', 'lo', 'table', table);
}

/** Remove every rule, table and route a recipe added: the next starts bare. */
function clearRecipes(topo: Topology): void {
  for (const v of ['-4', '-6']) {
    for (const prio of ['100', '101', '102', '103', '104']) topo.relay.tryRun('ip', v, 'rule', 'del', 'priority', prio);
    for (const table of ['60', '61', '62', '63', '64']) topo.relay.tryRun('ip', v, 'route', 'flush', 'table', table);
  }
  topo.relay.tryRun('nft', 'flush', 'ruleset');
}

t.test('doctor passes the common transparent-proxy recipes', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = bareLab(t);
  topo.backend.ip('addr', 'add', `${BACKEND4_B}/24`, 'dev', 'eth0');
  const echo = await toolServer(topo, 'echo', PORT, [ADDR.backend4, ADDR.backend6, BACKEND4_B]);

  let port = 7710;
  for (const recipe of recipes) {
    t.test(`rules ${recipe.name}`, async (t) => {
      port++;
      t.teardown(() => clearRecipes(topo));
      recipe.apply(topo);
      addLocalRoutes(topo, recipe.table);
      await servesTransparently(t, topo, port, echo);

      const r = doctor(topo, doctorFlags(port));
      t.equal(r.status, 0, 'doctor exits 0', { output: r.out });
      t.notOk(r.lines.some((l) => l.startsWith('FAIL')), 'no FAIL');
      for (const backend of [ADDR.backend4, ADDR.backend6]) {
        const line = r.lines.find((l) => l.startsWith(`OK    relay host: return path from ${backend}`));
        t.ok(line, `an OK line for replies from ${backend}`, { output: r.out });
        if (backend === ADDR.backend4) t.match(line ?? '', recipe.named, 'it names the rule found');
      }
      t.match(r.out, /OK\s+relay host: IPv4 rule: fwmark 0x5e1a lookup 2017: not present, and not needed/,
        'relay\'s own missing rule is not a FAIL');
      t.match(r.out, /OK\s+end to end tcp 198\.51\.100\.20:7700 .*came back through relay/);

      const check = topo.relay.tryRun(process.execPath, cliPath(), 'routes', 'check');
      t.notOk(check.ok, 'routes check still checks relay\'s own rules');
      t.match(check.stdout, /other rules deliver replies locally on this host \(IPv4 rule 10\d: .* lookup 6\d/,
        'and says another working set is present');

      topo.relay.ip('-4', 'route', 'flush', 'table', recipe.table);
      const broken = doctor(topo, doctorFlags(port));
      t.equal(broken.status, 1, 'without the IPv4 local route doctor exits 1', { output: broken.out });
      if (recipe.probeDecides) {
        t.match(broken.out, /FAIL\s+end to end tcp 198\.51\.100\.20:7700 .*did not come back/, 'the probe names it');
        return;
      }
      t.match(broken.out, new RegExp(`FAIL\\s+relay host: return path from 198\\.51\\.100\\.20: .*table ${recipe.table} has no local route`),
        'it names the missing local route');
      t.match(broken.out, new RegExp(`fix: ip -4 route add local 0\\.0\\.0\\.0/0 dev lo table ${recipe.table}`));
      t.match(broken.out, /OK\s+relay host: return path from 2001:db8:51::20/, 'IPv6 still passes');
      t.comment(r.out);
    });
  }

  t.test('rules for one backend of two: WARN, and relay --check starts', async (t) => {
    t.teardown(() => clearRecipes(topo));
    topo.relay.ip('-4', 'rule', 'add', 'from', ADDR.backend4, 'lookup', '60', 'priority', '100');
    addLocalRoutes(topo, '60');
    const flags = ['--listen', '0.0.0.0:7720', '--backend', formatEndpoint(ADDR.backend4, PORT),
      '--backend', formatEndpoint(BACKEND4_B, PORT), '--probe-timeout', '1s'];
    const r = doctor(topo, flags);
    t.equal(r.status, 0, 'a WARN alone exits 0', { output: r.out });
    t.match(r.out, /WARN\s+relay host: return path from 198\.51\.100\.21: .*not delivered locally.*other backends' are, so relaying works/);
    t.match(r.out, /fix \(a\): ip -4 rule add from 198\.51\.100\.21 lookup 60 priority 100\n\s+fix \(b\): relay routes apply/,
      'the fix: a rule like the others\', or relay\'s own routes, as alternatives');
    t.match(r.out, /WARN\s+end to end tcp 198\.51\.100\.21:7700 .*as its return path line says/);
    t.match(r.out, /OK\s+relay host: return path from 198\.51\.100\.20: .*rule 100: from 198\.51\.100\.20 lookup 60/);
    t.match(r.out, /all \d+ checks passed, 2 with a warning/);
    const proc = await relay(topo, [...flags, '--check']);
    t.match(proc.stdout(), /WARN\s+relay host: return path from 198\.51\.100\.21/, '--check printed the WARN and started');
    await proc.stop();
  });
});

t.test('relay listens on [::]:P and 0.0.0.0:P; doctor beside a serving relay', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = bareLab(t);
  topo.relay.run(process.execPath, cliPath(), 'routes', 'apply');
  const echo = await toolServer(topo, 'echo', PORT);
  const listens = ['--listen', '0.0.0.0:7730', '--listen', '[::]:7730'];

  const r = doctor(topo, [...listens, ...backendFlags, '--probe-timeout', '1s']);
  t.equal(r.status, 0, 'doctor passes both listens', { output: r.out });
  t.match(r.out, /OK\s+listen tcp \[::\]:7730: free, and relay may bind it \(IPv6 only: relay also listens on IPv4 there\)/);
  const lone = doctor(topo, ['--listen', '[::]:7731', ...backendFlags, '--probe-timeout', '1s']);
  t.match(lone.out, /OK\s+listen tcp \[::\]:7731: free, and relay may bind it \(IPv4 and IPv6\)/, 'a lone [::] stays dual-stack');

  // Both orders: the IPv6 listener given first must not take the IPv4 port either.
  for (const order of [listens, [...listens.slice(2), ...listens.slice(0, 2)]]) {
    const proc = await relay(topo, [...order, ...backendFlags, '--balance', 'source']);
    const pid = relayPid(proc);
    const before = fdCount(pid);
    for (const [target, client] of [[`${ADDR.relayClientSide4}:7730`, ADDR.client4], [`[${ADDR.relayClientSide6}]:7730`, ADDR.client6]]) {
      const out = await clientSession(topo, target, ['--send', 'both', '--end']);
      t.equal(out.received, 'both', `relayed through ${target} (${order.join(' ')})`);
      t.equal(accepts(echo).at(-1)?.remote, client, `the backend saw ${client}`);
    }
    t.ok(await settleFds(pid, before, FD_SLACK, 5000) <= before + FD_SLACK, 'relay\'s fds came back');
    const ss = topo.relay.run('ss', '-Hltn', 'sport = :7730');
    t.equal(ss.trim().split('\n').length, 2, 'two listening sockets', { ss });

    if (order === listens) {
      const beside = doctor(topo, [...listens, ...backendFlags, '--probe-timeout', '1s']);
      t.equal(beside.status, 0, 'doctor beside the serving relay exits 0', { output: beside.out });
      t.match(beside.out, new RegExp(`OK\\s+listen tcp 0\\.0\\.0\\.0:7730: in use by relay itself \\(pid ${pid} .*\\): the service is up`));
      t.match(beside.out, /OK\s+listen tcp \[::\]:7730: in use by relay itself/);
    }
    await proc.stop();
  }

  t.test('a clash between relay\'s own listens that remains is named', async (t) => {
    const r = doctor(topo, ['--listen', '0.0.0.0:7735', '--listen', `${ADDR.relayClientSide4}:7735`, ...backendFlags, '--probe-timeout', '1s']);
    t.equal(r.status, 1, { output: r.out });
    t.match(r.out, /FAIL\s+listen tcp 192\.0\.2\.1:7735: listen EADDRINUSE: it clashes with relay's own listen on 0\.0\.0\.0:7735/);
    t.match(r.out, /fix: drop one of --listen 192\.0\.2\.1:7735 and --listen 0\.0\.0\.0:7735/);
    const started = await startRelayExpectingFailure(topo, ['--listen', '0.0.0.0:7735', '--listen', `${ADDR.relayClientSide4}:7735`, ...backendFlags]);
    t.match(started, /EADDRINUSE 192\.0\.2\.1:7735/, 'as relay itself fails');
  });

  t.test('a backend on the relay host: its fix is one rule on this host', async (t) => {
    const local = topo.lab.spawn(topo.relay, [process.execPath, toolsPath(), 'echo', '--listen', `${ADDR.relayBackendSide4}:7741`]);
    await waitForListener(topo.relay, 'tcp', 7741);
    const flags = ['--listen', '0.0.0.0:7740', '--backend', `${ADDR.relayBackendSide4}:7741`, '--probe-timeout', '1s'];
    const r = doctor(topo, flags);
    t.equal(r.status, 1, 'its replies are not delivered to relay', { output: r.out });
    t.match(r.out, /FAIL\s+relay host: return path from 198\.51\.100\.1: replies from 198\.51\.100\.1 to a client are not delivered locally/);
    t.notMatch(r.out, /elsewhere/, 'no word of clients elsewhere');
    // The recipe line is safe to paste twice: the rule is added only when missing.
    const rule = r.lines.find((l) => /^\s*fix: .*ip -4 rule add from 198\.51\.100\.1 lookup 2017/.test(l));
    t.ok(rule, 'the fix is a rule by source on this host', { output: r.out });
    t.teardown(() => topo.relay.tryRun('ip', '-4', 'rule', 'del', 'from', ADDR.relayBackendSide4));
    topo.relay.run('sh', '-c', rule!.replace(/^\s*fix: /, ''));
    const fixed = doctor(topo, flags);
    t.equal(fixed.status, 0, 'with it, doctor passes', { output: fixed.out });
    t.match(fixed.out, /OK\s+end to end tcp 198\.51\.100\.1:7741 .*came back through relay/);
    await local.stop();
  });

  t.test('a listen held by another process is still a FAIL naming it', async (t) => {
    const holder = topo.lab.spawn(topo.relay, [process.execPath, '-e',
      "require('net').createServer().listen({ port: 7732, host: '::' }, () => console.log('held'))"]);
    await holder.waitFor(/held/);
    await waitForListener(topo.relay, 'tcp', 7732);
    const r = doctor(topo, ['--listen', '0.0.0.0:7732', ...backendFlags, '--probe-timeout', '1s']);
    t.equal(r.status, 1);
    t.match(r.out, new RegExp(`FAIL\\s+listen tcp 0\\.0\\.0\\.0:7732: .*EADDRINUSE.*held by pid ${holder.child.pid}`), { output: r.out });
    await holder.stop();
  });
});
