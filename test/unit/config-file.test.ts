// The configuration file: every key a flag's name, the same checks as the
// flags, and each error naming the file, the line and the key path. No root.
import t from 'tap';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseConfigText, formatEffective } from '../../src/config-file';
import { cliPath } from '../../src/lab/topology';

const GOOD = `log-level = "warn"
pid-file = "/tmp/relay-test.pid"
fwmark = 0x77

[[service]]
name = "dns"
proto = ["udp", "tcp"]
listen = ["0.0.0.0:53", "[::]:53"]
backend = ["198.51.100.20:53", "198.51.100.21:53,weight=2"]
session-timeout = "30s"
udp-responses = 1
health-udp-probe = "0a0b"

[[service]]
name = "smtp"
listen = ["192.0.2.1:25"]
backend = "198.51.100.30:25"
balance = "leastconn"
connect-timeout = "250ms"
keep-client-port = true
`;

t.test('a good file: every service with its keys, defaults filled', async (t) => {
  const file = parseConfigText(GOOD, 'relay.toml');
  t.equal(file.global.logLevel, 'warn');
  t.equal(file.global.pidFile, '/tmp/relay-test.pid');
  t.equal(file.global.routes.fwmark, 0x77);
  t.same(file.services.map((s) => s.name), ['dns', 'smtp']);
  const [dns, smtp] = file.services.map((s) => s.run);
  t.same(dns.protocols, ['udp', 'tcp']);
  t.same(dns.listeners.map((l) => l.address), ['0.0.0.0', '::']);
  t.same(dns.backends.map((b) => b.weight), [1, 2]);
  t.equal(dns.sessionTimeoutMs, 30_000);
  t.equal(dns.udpResponses, 1);
  t.same(smtp.protocols, ['tcp'], 'proto defaults to tcp, as the flag does');
  t.equal(smtp.backends.length, 1, 'a single string is a list of one');
  t.equal(smtp.connectTimeoutMs, 250);
  t.equal(smtp.keepClientPort, true);
  t.equal(smtp.balance, 'leastconn');
  const effective = formatEffective(file);
  t.match(effective, /\[\[service\]\]\nname = "smtp"\nproto = \["tcp"\]/);
  t.match(effective, /idle-timeout = "10m"/, 'defaults are printed');
  t.same(parseConfigText(effective.replace(/^#.*\n/, ''), 'again.toml').services.map((s) => s.run.connectTimeoutMs), [5000, 250],
    'the effective configuration is itself a valid file with the same values');
});

const service = (body: string) => `[[service]]\nname = "a"\nlisten = ["192.0.2.1:53"]\nbackend = ["198.51.100.20:53"]\n${body}`;

// [what, text, the message must match]
const BAD: [string, string, RegExp][] = [
  ['TOML syntax', 'log-level = = "x"\n', /^f\.toml:1: /],
  ['no service', 'log-level = "info"\n', /^f\.toml: no \[\[service\]\] table/],
  ['service not an array', '[service]\nname = "a"\n', /^f\.toml:1?:? ?service: service must be an array of tables/],
  ['unknown top-level key', 'colour = "red"\n' + service(''), /^f\.toml:1: colour: unknown key: the top level takes log-level, /],
  ['service key at the top', 'backend = ["198.51.100.20:1"]\n' + service(''), /^f\.toml:1: backend: backend belongs to a service/],
  ['global key in a service', service('fwmark = 1\n'), /^f\.toml:5: service\[0\]\.fwmark: fwmark is a global key: put it at the top level/],
  ['unknown service key', service('listne = ["x"]\n'), /^f\.toml:5: service\[0\]\.listne: unknown key: a service takes name, proto, listen/],
  ['no name', '[[service]]\nlisten = ["192.0.2.1:53"]\nbackend = ["198.51.100.20:53"]\n', /^f\.toml:1: service\[0\]: a service needs a name/],
  ['bad name', '[[service]]\nname = "a b"\nlisten = ["192.0.2.1:53"]\nbackend = ["198.51.100.20:53"]\n',
    /^f\.toml:2: service\[0\]\.name: must be letters, digits/],
  ['duplicate names', service('') + service('').replace('192.0.2.1:53', '192.0.2.1:54'),
    /^f\.toml:6: service\[1\]\.name: "a" is also the name of service\[0\]/],
  ['duration without unit', service('connect-timeout = 5000\n'),
    /^f\.toml:5: service\[0\]\.connect-timeout: 5000: a duration needs its unit: write 5000ms \(as HAProxy reads it\) or 5000s/],
  ['bad backend item', '[[service]]\nname = "a"\nlisten = ["192.0.2.1:53"]\nbackend = ["198.51.100.20:53", "224.0.0.1:53"]\n',
    /^f\.toml:4: service\[0\]\.backend\[1\]: 224\.0\.0\.1:53 .*multicast/],
  ['backend item not a string', '[[service]]\nname = "a"\nlisten = ["192.0.2.1:53"]\nbackend = [53]\n',
    /^f\.toml:4: service\[0\]\.backend\[0\]: must be a string: got 53/],
  ['bad listen item', '[[service]]\nname = "a"\nlisten = ["nowhere"]\nbackend = ["198.51.100.20:53"]\n',
    /^f\.toml:3: service\[0\]\.listen\[0\]: /],
  ['boolean as a string', service('keep-client-port = "yes"\n'), /^f\.toml:5: service\[0\]\.keep-client-port: must be true or false/],
  ['no backend', '[[service]]\nname = "a"\nlisten = ["192.0.2.1:53"]\n', /^f\.toml:1: service\[0\]\.backend: is required/],
  ['bad protocol', service('proto = ["udp", "sctp"]\n'), /^f\.toml:5: service\[0\]\.proto: unknown protocol 'sctp'/],
  ['bad log level', 'log-level = "loud"\n' + service(''), /^f\.toml:1: log-level: log-level must be one of/],
  ['reserved table', 'table = 254\n' + service(''), /^f\.toml:1: table: 254 is one of the kernel's own tables/],
  ['same address and port', service('proto = ["udp"]\n') + service('proto = ["udp", "tcp"]\n').replace('name = "a"', 'name = "b"'),
    /^f\.toml:8: service\[1\]\.listen: service\[1\] "b" \(udp 192\.0\.2\.1:53\) clashes with service\[0\] "a" \(udp 192\.0\.2\.1:53\)/],
  ['wildcard and specific', service('') + service('').replace('name = "a"', 'name = "b"').replace('192.0.2.1:53', '0.0.0.0:53'),
    /service\[1\] "b" \(tcp 0\.0\.0\.0:53\) clashes with service\[0\] "a" \(tcp 192\.0\.2\.1:53\)/],
  ['[::] covers IPv4', service('') + service('').replace('name = "a"', 'name = "b"').replace('192.0.2.1:53', '[::]:53'),
    /clashes with service\[0\] "a"/],
];

t.test('every error names the file, the line and the key path', async (t) => {
  for (const [what, text, message] of BAD) {
    t.throws(() => parseConfigText(text, 'f.toml'), { name: 'ConfigError', message }, what);
  }
});

t.test('different protocols or ports do not clash', async (t) => {
  const two = service('proto = "udp"\n') + service('proto = "tcp"\n').replace('name = "a"', 'name = "b"');
  t.equal(parseConfigText(two, 'f.toml').services.length, 2, 'udp and tcp on one address and port: two services');
  const ports = service('') + service('').replace('name = "a"', 'name = "b"').replace('0.0.0.0', '').replace('192.0.2.1:53', '0.0.0.0:54');
  t.equal(parseConfigText(ports, 'f.toml').services.length, 2, 'a wildcard on another port');
});

interface Outcome { status: number | null; stdout: string; stderr: string }

function cli(args: string[]): Promise<Outcome> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [cliPath(), ...args], { encoding: 'utf8', timeout: 8000, killSignal: 'SIGKILL' },
      (_err, stdout, stderr) => resolve({ status: child.exitCode, stdout, stderr }));
  });
}

t.test('the command line with --config', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-config-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const good = path.join(dir, 'good.toml');
  fs.writeFileSync(good, GOOD);
  const check = await cli(['--config', good, '--check-config']);
  t.equal(check.status, 0, check.stderr);
  t.match(check.stdout, /valid; 2 services, defaults filled in/);
  const mixed = await cli(['--config', good, '--listen', '192.0.2.1:80']);
  t.equal(mixed.status, 2);
  t.match(mixed.stderr, /^relay: --config with --listen: the file is the one source of truth/);
  const missing = await cli(['--config', path.join(dir, 'nope.toml')]);
  t.equal(missing.status, 2);
  t.match(missing.stderr, /nope\.toml: cannot read the configuration file \(ENOENT\)/);
  const bad = path.join(dir, 'bad.toml');
  fs.writeFileSync(bad, service('max-conns = "lots"\n'));
  const badRun = await cli(['--config', bad, '--check-config']);
  t.equal(badRun.status, 2);
  t.match(badRun.stderr, /bad\.toml:5: service\[0\]\.max-conns: must be an integer/);
  const noFile = await cli(['--check-config', '--listen', '192.0.2.1:80', '--backend', '198.51.100.20:80']);
  t.equal(noFile.status, 2);
  t.match(noFile.stderr, /--check-config checks a configuration file: give --config FILE/);
  const reload = await cli(['reload', '--pid-file', path.join(dir, 'none.pid')]);
  t.equal(reload.status, 1);
  t.match(reload.stderr, /cannot read the pid file .*none\.pid \(ENOENT\)/);
  const routes = await cli(['routes', 'print', '--config', good]);
  t.equal(routes.status, 0, routes.stderr);
  t.match(routes.stdout, /198\.51\.100\.30/, 'routes print takes the backends from the file');
});

t.test('the example in docs/configuration.md is a valid configuration', async (t) => {
  const doc = fs.readFileSync(path.join(__dirname, '..', '..', 'docs', 'configuration.md'), 'utf8');
  const example = /```toml\n([\s\S]*?)```/.exec(doc);
  t.ok(example, 'the doc has a toml block');
  const file = parseConfigText(example![1], 'docs/configuration.md');
  t.same(file.services.map((s) => s.name), ['dns', 'smtp', 'game']);
  t.same(file.services.map((s) => s.run.protocols), [['udp', 'tcp'], ['tcp'], ['udp']]);
});

t.test('map-ipv4-prefix is a service key: printed in the effective configuration, read back the same', async (t) => {
  const text = `[[service]]\nname = "web"\nlisten = ["0.0.0.0:80"]\nbackend = ["[2001:db8:51::20]:80"]\nmap-ipv4-prefix = "2001:db8:64::/96"\n`;
  const file = parseConfigText(text, 'f.toml');
  t.equal(file.services[0].run.mapIpv4Prefix?.text, '2001:db8:64::/96');
  const effective = formatEffective(file);
  t.match(effective, 'map-ipv4-prefix = "2001:db8:64::/96"');
  t.equal(parseConfigText(effective, 'again.toml').services[0].run.mapIpv4Prefix?.text, '2001:db8:64::/96');
  t.throws(() => parseConfigText(text.replace('/96', '/80'), 'f.toml'), /^f\.toml:5: service\[0\]\.map-ipv4-prefix: .*the length must be \/96/);
});
