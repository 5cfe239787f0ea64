import t from 'tap';
import { parseFlags, buildRunConfig, buildRoutesConfig, RUN_FLAGS, ROUTES_FLAGS, DEFAULTS } from '../../src/config';
import { parseDuration } from '../../src/duration';
import { ConfigError } from '../../src/errors';

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
    [[...base, '--connect-timeout', '0'], /--connect-timeout must be at least/],
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
  t.equal(parseDuration('5', 'x'), 5000);
  t.equal(parseDuration('1.5s', 'x'), 1500);
  t.equal(parseDuration('2m', 'x'), 120_000);
  t.equal(parseDuration('1h', 'x'), 3_600_000);
  t.throws(() => parseDuration('-1s', '--idle-timeout'), /--idle-timeout must be a duration/);
  t.throws(() => parseDuration('5d', 'x'), ConfigError);
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
  t.throws(() => run([...base, '--session-timeout', '0']), /--session-timeout must be at least/);
  t.throws(() => run([...base, '--mark', '0x5e1a']), /the mark relay's routes use/);
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
