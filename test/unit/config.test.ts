import t from 'tap';
import {
  parseFlags, buildRunConfig, buildRoutesConfig, buildRunOptions, checkAgainstHost, RUN_FLAGS, ROUTES_FLAGS, DEFAULTS, HostFacts, IpRule,
} from '../../src/config';
import { parseDuration, MAX_TIMER_MS } from '../../src/duration';
import { ConfigError, echo } from '../../src/errors';

const run = (argv: string[]) => buildRunConfig(parseFlags(argv, RUN_FLAGS));
const base = ['--listen', '0.0.0.0:80', '--backend', '198.51.100.20:80'];

t.test('defaults', async (t) => {
  const config = run(base);
  t.same(config.protocols, ['tcp']);
  t.equal(config.connectTimeoutMs, DEFAULTS.connectTimeoutMs);
  t.equal(config.idleTimeoutMs, DEFAULTS.idleTimeoutMs);
  t.equal(config.maxConns, DEFAULTS.maxConns);
  t.equal(config.onFamilyMismatch, 'reject');
  t.equal(config.keepClientPort, false);
  t.equal(config.mark, 0);
  t.ok(Object.isFrozen(config));
});

t.test('every flag parses', async (t) => {
  const config = run([...base, '--listen', '[::]:80', '--backend', '[2001:db8::20]:80', '--keep-client-port',
    '--connect-timeout', '1500ms', '--idle-timeout', '0', '--drain-timeout', '1m', '--on-family-mismatch', 'masquerade',
    '--max-conns', '10', '--mark', '0x10', '--log-level', 'debug', '--proto', 'tcp']);
  t.equal(config.listeners.length, 2);
  t.equal(config.backends[1].endpoint.address, '2001:db8::20');
  t.equal(config.keepClientPort, true);
  t.equal(config.connectTimeoutMs, 1500);
  t.equal(config.idleTimeoutMs, 0);
  t.equal(config.drainTimeoutMs, 60_000);
  t.equal(config.onFamilyMismatch, 'masquerade');
  t.equal(config.maxConns, 10);
  t.equal(config.mark, 16);
  t.equal(config.logLevel, 'debug');
});

t.test('bad flags are ConfigErrors that name the flag', async (t) => {
  const cases: [string[], RegExp][] = [
    [['--backend', '198.51.100.20:80'], /--listen is required/],
    [['--listen', '0.0.0.0:80'], /--backend is required/],
    [[...base, '--proto', 'sctp'], /--proto: unknown protocol 'sctp'/],
    [[...base, '--max-conns', '0'], /--max-conns must be an integer from 1/],
    [[...base, '--max-conns', '12abc'], /--max-conns/],
    [[...base, '--connect-timeout', 'soon'], /--connect-timeout must be a duration/],
    [[...base, '--connect-timeout', '0'], /--connect-timeout 0 is out of range: 1ms to/],
    [[...base, '--on-family-mismatch', 'ignore'], /--on-family-mismatch must be reject or masquerade/],
    [[...base, '--log-level', 'loud'], /--log-level must be one of/],
    [[...base, '--no-such-flag'], /Unknown option '--no-such-flag'/],
    [['--listen', 'localhost:80', '--backend', '198.51.100.20:80'], /'localhost' is not an IP address/],
  ];
  for (const [argv, message] of cases) {
    t.throws(() => run(argv), ConfigError, argv.join(' '));
    t.throws(() => run(argv), message, argv.join(' '));
  }
});

t.test('routes flags', async (t) => {
  const config = buildRoutesConfig(parseFlags(['--fwmark', '0x10', '--table', '100', '--backend', '198.51.100.20:53'], ROUTES_FLAGS));
  t.equal(config.fwmark, 16);
  t.equal(config.table, 100);
  t.equal(config.rulePriority, DEFAULTS.rulePriority);
  t.equal(config.backends.length, 1);
  t.same(buildRoutesConfig(parseFlags([], ROUTES_FLAGS)).backends, []);
  t.throws(() => buildRoutesConfig(parseFlags(['--table', '-1'], ROUTES_FLAGS)), ConfigError);
});

t.test('durations', async (t) => {
  t.equal(parseDuration('250ms', 'x'), 250);
  t.equal(parseDuration('1.5s', 'x'), 1500);
  t.equal(parseDuration('2m', 'x'), 120_000);
  t.equal(parseDuration('1h', 'x'), 3_600_000);
  t.equal(parseDuration('0.5ms', 'x'), 1, 'rounds to the nearest ms');
  t.equal(parseDuration(String(MAX_TIMER_MS) + 'ms', 'x'), MAX_TIMER_MS);
  for (const zero of ['0', '0s', '0ms', '0.0h']) t.equal(parseDuration(zero, 'x', 0), 0, `${zero} where 0 turns it off`);
  t.throws(() => parseDuration('-1s', '--idle-timeout'), /--idle-timeout must be a duration/);
  t.throws(() => parseDuration('5d', 'x'), ConfigError);
  t.throws(() => parseDuration(' 5s', 'x'), ConfigError, 'no spaces');
});

t.test('durations refused at start: bare numbers, beyond a timer, rounding to 0', async (t) => {
  const cases: [string, 0 | 1, string][] = [
    ['5000', 1, '--connect-timeout 5000: a duration needs its unit: write 5000ms (as HAProxy reads it) or 5000s (as nginx reads it)'],
    ['3600000', 1, '--connect-timeout 3600000: a duration needs its unit: write 3600000ms (as HAProxy reads it); ' +
      '3600000s, as nginx reads it, is out of range: 1ms to 2147483647ms, about 596h'],
    ['0.4', 0, '--connect-timeout 0.4: a duration needs its unit: write 0.4s (as nginx reads it); ' +
      '0.4ms, as HAProxy reads it, is out of range: 0 (off) to 2147483647ms, about 596h'],
    ['99999999999', 1, '--connect-timeout 99999999999: a duration needs its unit, and is 1ms to 2147483647ms, about 596h'],
    ['3600000s', 1, '--connect-timeout 3600000s is out of range: 1ms to 2147483647ms, about 596h'],
    ['2147483648ms', 0, '--connect-timeout 2147483648ms is out of range: 0 (off) to 2147483647ms, about 596h'],
    ['0.4ms', 0, '--connect-timeout 0.4ms is less than 1ms, the shortest duration'],
    ['0.0001s', 1, '--connect-timeout 0.0001s is less than 1ms, the shortest duration'],
    ['0', 1, '--connect-timeout 0 is out of range: 1ms to 2147483647ms, about 596h'],
    ['0ms', 1, '--connect-timeout 0ms is out of range: 1ms to 2147483647ms, about 596h'],
  ];
  for (const [text, min, message] of cases) {
    t.throws(() => parseDuration(text, '--connect-timeout', min), { name: 'ConfigError', message }, text);
  }
});

t.test('UDP flags', async (t) => {
  const config = run([...base, '--proto', 'tcp,udp', '--max-sessions', '100', '--session-timeout', '2s', '--udp-responses', '1']);
  t.same(config.protocols, ['tcp', 'udp']);
  t.equal(config.maxSessions, 100);
  t.equal(config.sessionTimeoutMs, 2000);
  t.equal(config.udpResponses, 1);
  const defaults = run([...base, '--proto', 'udp']);
  t.equal(defaults.maxSessions, DEFAULTS.maxSessions);
  t.equal(defaults.sessionTimeoutMs, DEFAULTS.sessionTimeoutMs);
  t.equal(defaults.udpResponses, 0);
  t.throws(() => run([...base, '--max-sessions', '0']), /--max-sessions must be an integer from 1/);
  t.throws(() => run([...base, '--session-timeout', '0']), /--session-timeout 0 is out of range: 1ms to/);
});

t.test('balancing and health flags', async (t) => {
  const config = run(['--listen', '0.0.0.0:80', '--backend', '198.51.100.20:80,weight=3', '--backend', '198.51.100.21:80',
    '--balance', 'maglev', '--health-interval', '500ms', '--health-timeout', '200ms', '--health-rise', '1',
    '--health-fall', '2', '--health-udp-probe', '00ff']);
  t.same(config.backends.map((b) => b.weight), [3, 1]);
  t.equal(config.balance, 'maglev');
  t.same({ ...config.health, udpProbe: [...config.health.udpProbe!] },
    { intervalMs: 500, timeoutMs: 200, rise: 1, fall: 2, udpProbe: [0, 255] });
  const defaults = run(base);
  t.equal(defaults.balance, 'roundrobin');
  t.same(defaults.health, { intervalMs: 2000, timeoutMs: 1000, rise: 2, fall: 3, udpProbe: undefined });
  t.throws(() => run([...base, '--balance', 'random']), ConfigError);
  t.throws(() => run([...base, '--health-udp-probe', 'xyz']), /--health-udp-probe must be hex/);
  t.throws(() => run([...base, '--backend', '198.51.100.20:80']), /given twice/);
  t.throws(() => run(['--listen', '0.0.0.0:80', '--backend', '198.51.100.20:80,weight=0']), ConfigError);
});

t.test('--mark: refused when it is --fwmark as given, or a host rule routes it to relay\'s table', async (t) => {
  t.equal(run([...base, '--mark', '0x5e1a', '--fwmark', '0x1234']).mark, 0x5e1a, 'the default fwmark alone no longer refuses it');
  t.equal(run([...base, '--mark', '0x5e1a']).mark, 0x5e1a, 'nor without --fwmark, on a host without relay\'s rule');
  t.throws(() => run([...base, '--mark', '0x1234', '--fwmark', '0x1234']),
    { message: "--mark 0x1234 is the mark of relay's routes (--fwmark 0x1234): upstream packets would be routed back into this host: choose another" });
  const options = (...args: string[]) => buildRunOptions(parseFlags([...base, ...args], RUN_FLAGS));
  const host = (rules: IpRule[]): HostFacts => ({ addresses: [], rules });
  const rule = (fwmark: string, table = '2017', fwmask?: string): IpRule => ({ priority: 2017, fwmark, fwmask, table });
  t.doesNotThrow(() => checkAgainstHost(options('--mark', '0x99'), host([rule('0x5e1a'), rule('0x99', '100')])),
    'a rule for another table is the operator\'s own');
  t.doesNotThrow(() => checkAgainstHost(options(), host([rule('0x0')])), 'no --mark: nothing to compare');
  t.throws(() => checkAgainstHost(options('--mark', '0x5e1a'), host([rule('0x5e1a')])),
    { message: "--mark 0x5e1a matches this host's rule 'fwmark 0x5e1a lookup 2017': upstream packets would be routed back into this host: choose another" },
    'the default fwmark, where relay\'s routes are applied');
  t.throws(() => checkAgainstHost(options('--mark', '0x99'), host([rule('0x99')])),
    { message: "--mark 0x99 matches this host's rule 'fwmark 0x99 lookup 2017': upstream packets would be routed back into this host: choose another" });
  t.throws(() => checkAgainstHost(options('--mark', '0x199'), host([rule('0x99', '2017', '0xff')])), /rule 'fwmark 0x99\/0xff lookup 2017'/,
    'a masked rule matches the bits it looks at');
  t.throws(() => checkAgainstHost(options('--mark', '0x99', '--table', '100'), host([rule('0x99', '100')])), /lookup 100/,
    'the table is --table');
});

t.test('a backend that is relay itself, or is not one host, is refused', async (t) => {
  const at = (listen: string, backend: string) => ['--listen', listen, '--backend', backend];
  const facts: HostFacts = { addresses: ['192.0.2.1', '2001:db8::1'], rules: [] };
  const options = (args: string[]) => buildRunOptions(parseFlags(args, RUN_FLAGS));
  t.throws(() => run(at('192.0.2.1:80', '192.0.2.1:80')), /--backend 192\.0\.2\.1:80 is relay itself \(--listen 192\.0\.2\.1:80\)/);
  t.throws(() => run(at('0.0.0.0:80', '127.0.0.2:80')), /relay would connect to itself/, 'a wildcard takes loopback');
  t.throws(() => run(at('[::]:80', '127.0.0.1:80')), /itself/, '[::] takes IPv4 too');
  t.doesNotThrow(() => run(at('0.0.0.0:80', '[::1]:80')), '0.0.0.0 does not take IPv6');
  t.doesNotThrow(() => run(at('0.0.0.0:80', '127.0.0.1:81')), 'another port');
  t.doesNotThrow(() => checkAgainstHost(options(at('0.0.0.0:80', '198.51.100.20:80')), facts), 'another host');
  t.throws(() => checkAgainstHost(options(at('0.0.0.0:80', '192.0.2.1:80')), facts), /--backend 192\.0\.2\.1:80 is relay itself/,
    'an address of this host on a wildcard listen\'s port');
  t.throws(() => checkAgainstHost(options(at('[::]:80', '[2001:db8::1]:80')), facts), /itself/);
  const cases: [string[], RegExp][] = [
    [at('192.0.2.1:80', '255.255.255.255:80'), /--backend 255\.255\.255\.255:80 is the broadcast address/],
    [at('192.0.2.1:80', '239.1.2.3:80'), /--backend 239\.1\.2\.3:80 is a multicast address/],
    [at('192.0.2.1:80', '[ff02::1]:80'), /--backend \[ff02::1\]:80 is a multicast address/],
    [at('192.0.2.1:80', '0.0.0.0:80'), /--backend 0\.0\.0\.0:80 is the unspecified address/],
    [at('192.0.2.1:80', '[::]:80'), /--backend \[::\]:80 is the unspecified address/],
    [at('192.0.2.1:80', '[fe80::1]:80'), /link-local: without a zone every connect fails \(EINVAL\): use a global or ULA address/],
    [at('192.0.2.1:80', '[::ffff:127.0.0.1]:80'), /--backend '\[::ffff:127\.0\.0\.1\]:80' is an IPv4-mapped IPv6 address: write 127\.0\.0\.1/],
    [at('[::ffff:192.0.2.1]:80', '198.51.100.20:80'), /--listen .* IPv4-mapped IPv6 address: write 192\.0\.2\.1/],
    [at('255.255.255.255:80', '198.51.100.20:80'), /--listen 255\.255\.255\.255:80 is a broadcast address/],
    [at('[ff05::2]:80', '198.51.100.20:80'), /--listen \[ff05::2\]:80 is a multicast address/],
  ];
  for (const [argv, message] of cases) t.throws(() => run(argv), { name: 'ConfigError', message }, argv.join(' '));
  t.doesNotThrow(() => run(at('192.0.2.1:80', '169.254.1.1:80')), 'IPv4 link-local needs no zone');
  t.throws(() => buildRoutesConfig(parseFlags(['--backend', '224.0.0.1:53'], ROUTES_FLAGS)), /multicast/, 'routes too');
});

t.test('a run builds the routing and probe options as doctor does', async (t) => {
  const options = buildRunOptions(parseFlags([...base, '--fwmark', '0x10', '--table', '100', '--priority', '99',
    '--probe-source', '192.0.2.9', '--probe-source', '2001:DB8::9', '--probe-timeout', '500ms'], RUN_FLAGS));
  t.same(options.routes, { fwmark: 16, table: 100, rulePriority: 99, backends: [options.run.backends[0].endpoint], relayAddresses: [] });
  t.same(options.probeSources, { 4: '192.0.2.9', 6: '2001:db8::9' });
  t.equal(options.probeTimeoutMs, 500);
  t.equal(buildRunOptions(parseFlags(base, RUN_FLAGS)).probeTimeoutMs, DEFAULTS.probeTimeoutMs);
  t.ok(Object.isFrozen(options));
  for (const [flag, value, message] of [['--fwmark', 'abc', /--fwmark must be an integer/], ['--table', '254', /kernel's own tables/],
    ['--priority', '0', /--priority must be an integer from 1/], ['--probe-source', 'bogus', /'bogus' is not an IP address/],
    ['--probe-timeout', '0', /--probe-timeout 0 is out of range/]] as const) {
    t.throws(() => buildRunOptions(parseFlags([...base, flag, value], RUN_FLAGS)), { name: 'ConfigError', message }, `${flag} ${value}`);
  }
});

t.test('a single-value flag given twice is refused; repeatable ones repeat', async (t) => {
  t.throws(() => run([...base, '--balance', 'bogus', '--balance', 'source']),
    { name: 'ConfigError', message: "--balance is given 2 times ('bogus', 'source'): give it once" });
  t.throws(() => run([...base, '--keep-client-port', '--keep-client-port']), { message: '--keep-client-port is given 2 times: give it once' });
  t.throws(() => parseFlags(['--table', '1', '--table=2'], ROUTES_FLAGS), /--table is given 2 times \('1', '2'\)/);
  t.equal(run([...base, '--listen', '[::]:80', '--backend', '198.51.100.21:80']).backends.length, 2);
});

t.test('echoed values are cut and escaped', async (t) => {
  t.equal(echo('plain'), 'plain');
  t.equal(echo('a\nrelay: b\r\t\u001b[2J\u009b\u007f'), 'a\\nrelay: b\\r\\t\\x1b[2J\\x9b\\x7f');
  t.equal(echo('x'.repeat(250)), `${'x'.repeat(200)}... (50 more)`);
  t.equal(echo('x'.repeat(200)), 'x'.repeat(200), 'exactly the limit is not cut');
  t.equal(echo('é'.repeat(201)), `${'é'.repeat(200)}... (1 more)`, 'characters, not bytes');
  t.throws(() => run([...base, '--log-level', 'x\nrelay: started']), { message: "--log-level must be one of fatal|error|warn|info|debug|trace|silent: got 'x\\nrelay: started'" });
  t.throws(() => run([...base, `--\u001b]0;pwned\u0007`]), { message: "Unknown option '--\\x1b]0;pwned\\x07'" });
  t.throws(() => run([...base, '--health-udp-probe', 'z'.repeat(1000)]), /got 'z{200}\.\.\. \(800 more\)'$/);
});

t.test('--map-ipv4-prefix: a run takes one, its routes and routes print take it too; none by default', async (t) => {
  t.equal(run(base).mapIpv4Prefix, undefined);
  const options = buildRunOptions(parseFlags([...base, '--map-ipv4-prefix', '2001:DB8:64::/96'], RUN_FLAGS));
  t.equal(options.run.mapIpv4Prefix?.text, '2001:db8:64::/96');
  t.same(options.routes.mapIpv4Prefixes?.map((p) => p.text), ['2001:db8:64::/96'], 'doctor checks the relay host for it');
  const routes = buildRoutesConfig(parseFlags(['--map-ipv4-prefix', '2001:db8:64::/96', '--map-ipv4-prefix', '2001:db8:64::/96',
    '--map-ipv4-prefix', '2001:db8:100::/40'], ROUTES_FLAGS));
  t.same(routes.mapIpv4Prefixes?.map((p) => p.text), ['2001:db8:64::/96', '2001:db8:100::/40'], 'each once');
  t.throws(() => run([...base, '--map-ipv4-prefix', '2001:db8:64::/80']), ConfigError);
});
