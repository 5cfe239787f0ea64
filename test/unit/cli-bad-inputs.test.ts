// Every bad value is refused at start with one line (issue 18), and the good
// values next to them are still accepted. Spawns the built CLI; no root needed.
// A bad row must never reach the point where relay starts: each has a short
// timeout, so a value that slipped through shows as a killed process, not a hang.
import t from 'tap';
import { execFile, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { cliPath } from '../../src/lab/topology';
import { parseFlags, buildRunConfig, RUN_FLAGS } from '../../src/config';

interface Outcome { status: number | null; stdout: string; stderr: string }

function cli(args: string[]): Promise<Outcome> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [cliPath(), ...args], { encoding: 'utf8', timeout: 6000, killSignal: 'SIGKILL' },
      (_err, stdout, stderr) => resolve({ status: child.exitCode, stdout, stderr }));
  });
}

const listen = ['--listen', '127.0.0.1:18080'];
const run = [...listen, '--backend', '198.51.100.20:80'];
const doctor = ['doctor', ...run];
const ESC = '\u001b';

// [argv, exit status, a regex the first stderr line must match]
const BAD: [string[], number, RegExp][] = [
  // 1. durations carry their unit, fit a timer, and do not round to 0
  [[...run, '--connect-timeout', '5000'], 2, /^relay: --connect-timeout 5000: .*write 5000ms \(as HAProxy reads it\) or 5000s \(as nginx reads it\)/],
  [[...run, '--connect-timeout', '3600000'], 2, /^relay: --connect-timeout 3600000: .*write 3600000ms \(as HAProxy reads it\); 3600000s, as nginx reads it, is out of range/],
  [[...run, '--connect-timeout', '1000h'], 2, /^relay: --connect-timeout 1000h .*1ms to 2147483647ms/],
  [[...run, '--idle-timeout', '30'], 2, /^relay: --idle-timeout 30: .*write 30ms \(as HAProxy reads it\) or 30s \(as nginx reads it\)/],
  [[...run, '--idle-timeout', '0.4ms'], 2, /^relay: --idle-timeout 0\.4ms .*1ms/],
  [[...run, '--drain-timeout', '30'], 2, /^relay: --drain-timeout 30: /],
  [[...run, '--session-timeout', '30'], 2, /^relay: --session-timeout 30: /],
  [[...run, '--health-interval', '2'], 2, /^relay: --health-interval 2: /],
  [[...run, '--health-interval', '0.0001s'], 2, /^relay: --health-interval 0\.0001s .*1ms/],
  [[...run, '--health-timeout', '1'], 2, /^relay: --health-timeout 1: /],
  [[...run, '--health-timeout', '0'], 2, /^relay: --health-timeout 0 .*1ms to/],
  [[...doctor, '--probe-timeout', '2'], 2, /^relay: --probe-timeout 2: /],
  [[...doctor, '--probe-timeout', '0'], 2, /^relay: --probe-timeout 0 .*1ms to/],
  [[...doctor, '--probe-timeout', '0s'], 2, /^relay: --probe-timeout 0s .*1ms to/],
  // 2. --mark equal to the routes' fwmark as given
  [[...run, '--mark', '0x1234', '--fwmark', '0x1234'], 2, /^relay: --mark 0x1234 .*--fwmark/],
  // 3. backends and listen addresses that cannot work
  [['--listen', '127.0.0.1:18081', '--backend', '127.0.0.1:18081'], 2, /^relay: --backend 127\.0\.0\.1:18081 .*itself/],
  [['--listen', '0.0.0.0:18082', '--backend', '127.0.0.1:18082'], 2, /^relay: --backend 127\.0\.0\.1:18082 .*itself/],
  [['--listen', '[::]:18083', '--backend', '127.0.0.1:18083'], 2, /^relay: --backend 127\.0\.0\.1:18083 .*itself/],
  [['--listen', '[::]:18084', '--backend', '[::1]:18084'], 2, /^relay: --backend \[::1\]:18084 .*itself/],
  [[...listen, '--backend', '255.255.255.255:80'], 2, /^relay: --backend 255\.255\.255\.255:80 .*broadcast/],
  [[...listen, '--backend', '224.0.0.1:80'], 2, /^relay: --backend 224\.0\.0\.1:80 .*multicast/],
  [[...listen, '--backend', '[ff02::1]:80'], 2, /^relay: --backend \[ff02::1\]:80 .*multicast/],
  [[...listen, '--backend', '0.0.0.0:80'], 2, /^relay: --backend 0\.0\.0\.0:80 .*unspecified/],
  [[...listen, '--backend', '[::]:80'], 2, /^relay: --backend \[::\]:80 .*unspecified/],
  [[...listen, '--backend', '[fe80::1]:80'], 2, /^relay: --backend \[fe80::1\]:80 .*link-local.*global or ULA/],
  [[...listen, '--backend', '[::ffff:127.0.0.1]:80'], 2, /^relay: --backend .*::ffff:127\.0\.0\.1.*write 127\.0\.0\.1/],
  [['--listen', '[::ffff:127.0.0.1]:18085', '--backend', '198.51.100.20:80'], 2, /^relay: --listen .*write 127\.0\.0\.1/],
  [['--listen', '255.255.255.255:18086', '--backend', '198.51.100.20:80'], 2, /^relay: --listen 255\.255\.255\.255:18086 .*broadcast/],
  [['--listen', '224.0.0.1:18087', '--backend', '198.51.100.20:80'], 2, /^relay: --listen 224\.0\.0\.1:18087 .*multicast/],
  [['doctor', '--listen', '127.0.0.1:18088', '--backend', '127.0.0.1:18088'], 2, /^relay: --backend 127\.0\.0\.1:18088 .*itself/],
  [['routes', 'print', '--backend', '224.0.0.1:80'], 2, /^relay: --backend 224\.0\.0\.1:80 .*multicast/],
  [['routes', 'print', '--backend', '[fe80::1]:80'], 2, /^relay: --backend \[fe80::1\]:80 .*link-local/],
  [['routes', 'print', '--backend', '[fe80::1%eth0]:80'], 2, /^relay: --backend .*'%eth0' is a zone ID, which relay does not take/],
  [['routes', 'print', '--backend', '[2001:db8::1%eth0]:80'], 2, /^relay: --backend .*'%eth0' is a zone ID/],
  [['routes', 'print', '--relay-address', '127.0.0.1'], 2, /^relay: --relay-address 127\.0\.0\.1 is a loopback address: give relay's own address/],
  [['routes', 'print', '--relay-address', '0.0.0.0'], 2, /^relay: --relay-address 0\.0\.0\.0 is the unspecified address/],
  [['routes', 'print', '--relay-address', 'fe80::1'], 2, /^relay: --relay-address fe80::1 is IPv6 link-local: .*dev IFACE/],
  [['routes', 'print', '--relay-address', 'fe80::1%eth0'], 2, /^relay: --relay-address fe80::1%eth0 has a zone ID/],
  [['--listen', '[fe80::1]:18089', '--backend', '198.51.100.20:80'], 2, /^relay: --listen \[fe80::1\]:18089 is IPv6 link-local: binding it needs a zone.*\[::\]/],
  [['--listen', '[fe80::1%eth0]:18089', '--backend', '198.51.100.20:80'], 2, /^relay: --listen .*'%eth0' is a zone ID/],
  // 4. a run validates the routing and probe flags, as doctor does
  [[...run, '--fwmark', 'abc'], 2, /^relay: --fwmark must be an integer/],
  [[...run, '--table', '254'], 2, /^relay: --table 254 is one of the kernel's own tables/],
  [[...run, '--priority', '0'], 2, /^relay: --priority must be an integer/],
  [[...run, '--probe-source', 'bogus'], 2, /^relay: --probe-source: 'bogus' is not an IP address/],
  [[...run, '--probe-timeout', 'soon'], 2, /^relay: --probe-timeout must be a duration/],
  // 5. a single-value flag given twice
  [[...run, '--balance', 'bogus', '--balance', 'source'], 2, /^relay: --balance is given 2 times \('bogus', 'source'\): give it once/],
  [[...run, '--connect-timeout', '1s', '--connect-timeout', '2s'], 2, /^relay: --connect-timeout is given 2 times/],
  [['routes', 'print', '--fwmark', '1', '--fwmark', '2'], 2, /^relay: --fwmark is given 2 times/],
  // 8. echoed values are cut and escaped
  [['--listen', `${'9'.repeat(1000)}:80`, '--backend', '198.51.100.20:80'], 2, /^relay: --listen .{0,80}9{150,200}\.\.\. \(\d+ more\)/],
  [[...run, '--balance', 'x\nrelay: all good'], 2, /^relay: .*x\\nrelay: all good/],
  [[...run, '--balance', `${ESC}[31mred`], 2, /^relay: .*\\x1b\[31mred/],
  [[`--${ESC}[2J`], 2, /^relay: Unknown option '--\\x1b\[2J'/],
  // issue 17: a --map-ipv4-prefix is one of RFC 6052's lengths, an IPv6 prefix, with no bits past its length
  [[...run, '--map-ipv4-prefix', '2001:db8:64::/80'], 2, /^relay: --map-ipv4-prefix 2001:db8:64::\/80: the length must be \/96 or another of RFC 6052's/],
  [[...run, '--map-ipv4-prefix', '192.0.2.0/24'], 2, /^relay: --map-ipv4-prefix must be an IPv6 prefix such as 2001:db8:64::\/96/],
  [[...run, '--map-ipv4-prefix', '2001:db8:64::1/96'], 2, /^relay: --map-ipv4-prefix 2001:db8:64::1\/96 has bits set past \/96: write 2001:db8:64::\/96/],
];

t.test('bad inputs: one line naming the value, a pointer to --help, exit 2', async (t) => {
  // A few at a time: dozens of Node start-ups at once would outlast the timeout.
  const outcomes: Outcome[] = [];
  for (let i = 0; i < BAD.length; i += 6) {
    outcomes.push(...await Promise.all(BAD.slice(i, i + 6).map(([argv]) => cli(argv))));
  }
  BAD.forEach(([argv, status, message], i) => {
    const { status: got, stderr } = outcomes[i];
    const name = JSON.stringify(argv.join(' '));
    t.equal(got, status, `exit ${status}: ${name}${got === null ? ' (still running: it was accepted)' : ''}`);
    const lines = stderr.replace(/\n$/, '').split('\n');
    t.match(lines[0], message, name);
    t.same(lines.slice(1), ["Try 'relay --help'."], `two lines and no more: ${name}`);
    t.notMatch(stderr, ESC, `no terminal escape reaches the terminal: ${name}`);
    t.ok(lines[0].length < 500, `the line is cut: ${name}`);
  });
});

t.test('good inputs next to the bad ones are accepted', async (t) => {
  const build = (...args: string[]) => buildRunConfig(parseFlags([...run, ...args], RUN_FLAGS));
  t.equal(build('--mark', '0x5e1a', '--fwmark', '0x1234').mark, 0x5e1a, '--mark 0x5e1a --fwmark 0x1234');
  t.equal(build('--idle-timeout', '0').idleTimeoutMs, 0, '--idle-timeout 0 turns it off');
  t.equal(build('--idle-timeout', '0s').idleTimeoutMs, 0, '--idle-timeout 0s');
  t.equal(build('--health-interval', '0ms').health.intervalMs, 0, '--health-interval 0ms');
  t.equal(build('--drain-timeout', '0').drainTimeoutMs, 0, '--drain-timeout 0');
  t.equal(build('--connect-timeout', '1h').connectTimeoutMs, 3_600_000, '--connect-timeout 1h');
  t.equal(build('--connect-timeout', '596h').connectTimeoutMs, 596 * 3_600_000, 'the longest whole hours a timer holds');
  t.equal(build('--connect-timeout', '2147483647ms').connectTimeoutMs, 2 ** 31 - 1, 'the longest a timer holds');
  t.equal(build('--connect-timeout', '0.6ms').connectTimeoutMs, 1, 'a fraction of a ms that rounds to 1');
  t.equal(build('--listen', '[::]:18090', '--backend', '[2001:db8::20]:18090').backends.length, 2, 'a wildcard and a remote backend');
  const routes = await cli(['routes', 'print', '--fwmark', '0x1234', '--backend', '[fd00::20]:53']);
  t.equal(routes.status, 0, routes.stderr);
});

t.test('stdout that fails: one line and exit 1, or silence on EPIPE', async (t) => {
  const toFull = (...args: string[]) => {
    const full = fs.openSync('/dev/full', 'w');
    try {
      return spawnSync(process.execPath, [cliPath(), ...args], { encoding: 'utf8', timeout: 20_000, stdio: ['ignore', full, 'pipe'] });
    } finally {
      fs.closeSync(full);
    }
  };
  for (const args of [['--help'], ['routes', 'print'], ['doctor', '--help'],
    ['doctor', '--listen', '127.0.0.1:18091', '--backend', '127.0.0.1:18092', '--probe-timeout', '200ms']]) {
    const result = toFull(...args);
    t.equal(result.status, 1, `exit 1: relay ${args.join(' ')} > /dev/full`);
    t.equal(result.stderr, 'relay: cannot write to stdout: ENOSPC\n', `one line: relay ${args.join(' ')} > /dev/full`);
  }
  // More than a pipe holds, so the write after head has gone fails with EPIPE.
  const backends = Array.from({ length: 300 }, (_, i) => ['--backend', `198.51.100.${1 + (i % 200)}:${1000 + i}`]).flat();
  const piped = spawnSync('bash', ['-c', '"$@" | head -1 > /dev/null', 'sh', process.execPath, cliPath(), 'routes', 'print',
    '--relay-address', '198.51.100.254', ...backends], { encoding: 'utf8', timeout: 20_000 });
  t.equal(piped.stderr, '', 'EPIPE: nothing on stderr');
});
