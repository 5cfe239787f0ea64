// relay doctor: passes on a correct lab; each single fault is named with a
// fix, and applying that fix makes it pass again.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { tcpLab, canRunLab, SKIP_REASON, ADDR, formatEndpoint, udpToolsPath, clientSession, accepts } from './lab-fixture';
import { startToolServer, toolsPath } from '../../src/lab/peers';
import { IN_NAMESPACE_ENV, waitForListener } from '../../src/lab/netns';
import { cliPath } from '../../src/lab/topology';

const UDP_PROBE = '70726f6265'; // "probe": the lab's UDP echo answers anything

t.test('relay doctor', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'doc');
  // TCP and UDP echo on the backend's addresses, port 7700.
  topo.lab.spawn(topo.backend, [process.execPath, udpToolsPath(), 'echo',
    '--listen', formatEndpoint(ADDR.backend4, 7700), '--listen', formatEndpoint(ADDR.backend6, 7700)]);
  topo.lab.spawn(topo.backend, [process.execPath, toolsPath(), 'echo',
    '--listen', formatEndpoint(ADDR.backend4, 7700), '--listen', formatEndpoint(ADDR.backend6, 7700)]);
  await waitForListener(topo.backend, 'udp', 7700);
  await waitForListener(topo.backend, 'tcp', 7700);

  const flags = ['--proto', 'tcp,udp', '--listen', '0.0.0.0:5353', '--backend', formatEndpoint(ADDR.backend4, 7700),
    '--backend', formatEndpoint(ADDR.backend6, 7700), '--health-udp-probe', UDP_PROBE, '--probe-timeout', '1s'];
  const doctor = (prefix: string[] = [], extra: string[] = []) => {
    const r = spawnSync('ip', ['netns', 'exec', topo.relay.name, ...IN_NAMESPACE_ENV, ...prefix, process.execPath, cliPath(),
      'doctor', ...flags, ...extra], { encoding: 'utf8', timeout: 30_000 });
    return { status: r.status, out: r.stdout, fails: r.stdout.split('\n').filter((l) => l.startsWith('FAIL')) };
  };

  t.test('a correct lab passes', async (t) => {
    const r = doctor();
    t.equal(r.status, 0, 'exit 0', { output: r.out });
    t.match(r.out, /all \d+ checks passed/);
    t.match(r.out, /OK\s+end to end tcp 198\.51\.100\.20:7700 from 192\.0\.2\.254/);
    t.match(r.out, /OK\s+end to end udp \[2001:db8:51::20\]:7700 from 2001:db8:ffff::fe/);
  });

  t.test('strict rp_filter passes while the path is symmetric: a WARN, and exit 0', async (t) => {
    topo.relay.run('sysctl', '-qw', 'net.ipv4.conf.all.rp_filter=1');
    const r = doctor();
    topo.relay.run('sysctl', '-qw', 'net.ipv4.conf.all.rp_filter=0');
    t.equal(r.status, 0, 'a WARN alone exits 0', { output: r.out });
    t.match(r.out, /WARN\s+relay host: return path from 198\.51\.100\.20: .*rp_filter is strict on eth-backend/);
    t.match(r.out, /fix: rp_filter is strict on eth-backend, loose is enough: sysctl -w net\.ipv4\.conf\.all\.rp_filter=2/);
    t.match(r.out, /OK\s+end to end tcp 198\.51\.100\.20:7700/, 'and relaying works');
    t.match(r.out, /all \d+ checks passed, 1 with a warning/);
  });

  for (const family of [4, 6] as const) {
    t.test(`no relay-host rule for IPv${family} only`, async (t) => {
      topo.relay.ip(`-${family}`, 'rule', 'del', 'fwmark', '0x5e1a', 'lookup', '2017');
      const r = doctor();
      t.equal(r.status, 1);
      t.ok(r.fails.some((l) => l.includes(`relay host: IPv${family} rule`)), 'names the missing rule');
      t.notOk(r.fails.some((l) => l.includes(`relay host: IPv${family === 4 ? 6 : 4} rule`)), 'and not the other family');
      t.match(r.out, /fix: relay routes apply/);
      topo.relay.run(process.execPath, cliPath(), 'routes', 'apply');
      t.equal(doctor().status, 0, 'the fix works');
    });
  }

  t.test('a UDP-only service, with and without a probe payload', async (t) => {
    const udpOnly = (extra: string[]) => {
      const r = spawnSync('ip', ['netns', 'exec', topo.relay.name, ...IN_NAMESPACE_ENV, process.execPath, cliPath(), 'doctor',
        '--proto', 'udp', '--listen', '0.0.0.0:5354', '--backend', formatEndpoint(ADDR.backend4, 7700),
        '--backend', formatEndpoint(ADDR.backend6, 7700), '--probe-timeout', '1s', ...extra], { encoding: 'utf8', timeout: 30_000 });
      return { status: r.status, out: r.stdout };
    };
    const plain = udpOnly([]);
    t.equal(plain.status, 0, 'without a payload doctor cannot probe UDP, and says so without failing', { output: plain.out });
    t.match(plain.out, /OK\s+end to end udp 198\.51\.100\.20:7700 from 192\.0\.2\.254: not checked: give --health-udp-probe HEX/);
    t.notMatch(plain.out, /end to end tcp/, 'no TCP probe for a UDP-only service');
    t.match(plain.out, /OK\s+relay host: return path from 198\.51\.100\.20/, 'the relay host is still judged by its routes');
    const probed = udpOnly(['--health-udp-probe', UDP_PROBE]);
    t.equal(probed.status, 0, { output: probed.out });
    t.match(probed.out, /OK\s+end to end udp 198\.51\.100\.20:7700 from 192\.0\.2\.254: the backend's reply came back through relay/);
    t.match(probed.out, /OK\s+end to end udp \[2001:db8:51::20\]:7700 .*came back through relay/);
    // The backend's IPv4 return path broken: only the probe can see it.
    topo.backend.ip('route', 'del', 'default');
    t.teardown(() => topo.backend.tryRun('ip', 'route', 'replace', 'default', 'via', ADDR.relayBackendSide4));
    const broken = udpOnly(['--health-udp-probe', UDP_PROBE]);
    const unprobed = udpOnly([]);
    topo.backend.ip('route', 'replace', 'default', 'via', ADDR.relayBackendSide4);
    t.equal(broken.status, 1, 'with a payload, a broken return path fails', { output: broken.out });
    t.match(broken.out, /FAIL\s+end to end udp 198\.51\.100\.20:7700 .*did not come back through relay/);
    t.equal(unprobed.status, 0, 'without one it cannot be seen: the payload is what makes UDP checkable');
  });

  t.test('no return route on the backend', async (t) => {
    topo.backend.ip('route', 'del', 'default');
    topo.relay.run('sysctl', '-qw', 'net.ipv4.conf.all.rp_filter=1');
    const r = doctor();
    topo.relay.run('sysctl', '-qw', 'net.ipv4.conf.all.rp_filter=0');
    t.match(r.out, /fix: rp_filter is strict on eth-backend/, 'where it matters, strict rp_filter is named too');
    t.equal(r.status, 1);
    t.ok(r.fails.some((l) => /end to end tcp 198\.51\.100\.20:7700 .*did not come back through relay/.test(l)),
      'names the missing return path', { output: r.out });
    t.notOk(r.fails.some((l) => l.includes('[2001:db8:51::20]')), 'IPv6 still passes');
    // Recipe (b), the gateway: (a) also has a `route replace default`, into table 2017, with its rule.
    const recipe = r.out.split('\n').find((l) => /fix \(b\): ip -4 route replace default via \S+$/.test(l));
    t.ok(recipe, 'prints the backend recipe filled in');
    const command = recipe!.replace(/^\s*fix \(b\): /, '').split(' ').slice(1);
    topo.backend.ip(...command);
    t.equal(doctor().status, 0, `the printed fix (ip ${command.join(' ')}) works`);
  });

  t.test('a UDP service on a wildcard address answering from another source', async (t) => {
    // A dedicated service address on the backend, and a UDP service bound to the wildcard.
    topo.backend.ip('addr', 'add', '198.51.100.30/32', 'dev', 'lo');
    topo.relay.ip('route', 'add', '198.51.100.30/32', 'via', ADDR.backend4);
    const wildcard = topo.lab.spawn(topo.backend, [process.execPath, udpToolsPath(), 'echo', '--listen', '0.0.0.0:7701']);
    await waitForListener(topo.backend, 'udp', 7701);
    const ownFlags = ['--backend', '198.51.100.30:7701'];
    const r = spawnSync('ip', ['netns', 'exec', topo.relay.name, ...IN_NAMESPACE_ENV, process.execPath, cliPath(), 'doctor',
      '--proto', 'udp', '--listen', '0.0.0.0:5353', ...ownFlags, '--health-udp-probe', UDP_PROBE, '--probe-timeout', '1s'],
    { encoding: 'utf8', timeout: 30_000 });
    t.equal(r.status, 1);
    t.match(r.stdout, /FAIL\s+end to end udp 198\.51\.100\.30:7701 .*the reply came from 198\.51\.100\.20:7701/);
    t.match(r.stdout, /fix: bind the service to 198\.51\.100\.30 itself/);
    await wildcard.stop();
    topo.lab.spawn(topo.backend, [process.execPath, udpToolsPath(), 'echo', '--listen', '198.51.100.30:7701']);
    await waitForListener(topo.backend, 'udp', 7701);
    const fixed = spawnSync('ip', ['netns', 'exec', topo.relay.name, ...IN_NAMESPACE_ENV, process.execPath, cliPath(), 'doctor',
      '--proto', 'udp', '--listen', '0.0.0.0:5353', ...ownFlags, '--health-udp-probe', UDP_PROBE, '--probe-timeout', '1s'],
    { encoding: 'utf8', timeout: 30_000 });
    t.equal(fixed.status, 0, 'bound to its own address, it passes', { output: fixed.stdout });
  });

  t.test('a listen port already in use is found before relay starts', async (t) => {
    const holder = topo.lab.spawn(topo.relay, [process.execPath, '-e',
      "require('net').createServer().listen(5353, '0.0.0.0', () => console.log('held'))"]);
    await holder.waitFor(/held/);
    const r = doctor();
    t.equal(r.status, 1);
    t.ok(r.fails.some((l) => /listen tcp 0\.0\.0\.0:5353: listen EADDRINUSE/.test(l)), 'names the port in use', { output: r.out });
    await holder.stop();
    t.equal(doctor().status, 0, 'free again, it passes');
  });

  t.test('a wildcard UDP listen is checked address by address, as relay binds it', async (t) => {
    t.match(doctor().out, /OK\s+listen udp 0\.0\.0\.0:5353: .*each of the \d+ addresses relay binds now: .*192\.0\.2\.1/);
    const holder = topo.lab.spawn(topo.relay, [process.execPath, '-e',
      `require('dgram').createSocket('udp4').bind(5353, '${ADDR.relayClientSide4}', () => console.log('held'))`]);
    await holder.waitFor(/held/);
    const r = doctor();
    t.equal(r.status, 1);
    t.ok(r.fails.some((l) => l.includes(`listen udp 0.0.0.0:5353: bind EADDRINUSE ${ADDR.relayClientSide4}:5353`)),
      'names the one address in use', { output: r.out });
    await holder.stop();
  });

  t.test('missing capability', async (t) => {
    const nobody = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];
    const r = doctor([...nobody, '--inh-caps=-all', '--bounding-set=-all']);
    t.equal(r.status, 1);
    t.ok(r.fails.some((l) => /privilege: IP_TRANSPARENT: .*EPERM/.test(l)), 'names the missing capability', { output: r.out });
    t.match(r.out, /fix: run relay with CAP_NET_RAW/);
    const withRaw = doctor([...nobody, '--inh-caps=+net_raw', '--ambient-caps=+net_raw']);
    t.equal(withRaw.status, 0, 'with CAP_NET_RAW alone (not root) it passes', { output: withRaw.out });
  });
});

t.test('least privilege and --check', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const topo = tcpLab(t, 'lpv');
  const echo = await startToolServer(topo.lab, topo.backend, 'echo', [formatEndpoint(ADDR.backend4, 7800)], 7800);
  const nobodyWithNetRaw = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups',
    '--inh-caps=-all,+net_raw', '--ambient-caps=+net_raw', '--bounding-set=-all,+net_raw'];

  t.test('as nobody with CAP_NET_RAW alone, relay keeps the client address', async (t) => {
    const proc = topo.lab.spawn(topo.relay, [...nobodyWithNetRaw, process.execPath, cliPath(),
      '--listen', '0.0.0.0:7810', '--backend', formatEndpoint(ADDR.backend4, 7800), '--health-interval', '0']);
    await waitForListener(topo.relay, 'tcp', 7810);
    const status = topo.relay.run('sh', '-c', `grep -E '^(Uid|CapEff)' /proc/${proc.child.pid}/status`);
    t.match(status, /Uid:\s+65534/, 'runs as nobody');
    t.match(status, /CapEff:\s+0000000000002000/, 'holding CAP_NET_RAW (bit 13) and nothing else');
    const out = await clientSession(topo, `${ADDR.relayClientSide4}:7810`, ['--send', 'lp', '--end']);
    t.equal(out.received, 'lp');
    t.equal(accepts(echo).at(-1)?.remote, ADDR.client4, "the backend saw the client's address");
  });

  t.test('--check refuses to start on a FAIL; --check-continue starts anyway', async (t) => {
    const args = ['--listen', '0.0.0.0:7820', '--backend', formatEndpoint(ADDR.backend4, 7899), '--health-interval', '0',
      '--probe-timeout', '500ms', '--check'];
    const refused = spawnSync('ip', ['netns', 'exec', topo.relay.name, ...IN_NAMESPACE_ENV, process.execPath, cliPath(), ...args],
      { encoding: 'utf8', timeout: 30_000 });
    t.equal(refused.status, 1);
    t.match(refused.stdout, /FAIL\s+end to end tcp 198\.51\.100\.20:7899 .*connection refused/);
    t.match(refused.stderr, /not starting: a check failed/);
    const proc = topo.lab.spawn(topo.relay, [process.execPath, cliPath(), ...args, '--check-continue']);
    await waitForListener(topo.relay, 'tcp', 7820);
    // Listening says nothing of whether the report's bytes have been read here yet.
    await proc.waitFor(/FAIL/, 5000).catch(() => undefined);
    t.match(proc.stdout(), /FAIL/, 'the failure was printed');
  });
});
