import t from 'tap';
import { parseFlags, buildRunConfig, RUN_FLAGS, DEFAULTS } from '../../src/config';
import { parseConfigText, formatEffective } from '../../src/config-file';
import { trustedSenders, parseCidrList } from '../../src/proxy-protocol/trust';
import { ConfigError } from '../../src/errors';

const run = (argv: string[]) => buildRunConfig(parseFlags(argv, RUN_FLAGS));
const base = ['--listen', '0.0.0.0:80', '--backend', '198.51.100.20:80'];

t.test('PROXY protocol flags: defaults and every key', async (t) => {
  const plain = run(base);
  t.equal(plain.proxyProtocol, undefined, 'without proxy-protocol a service reads no header');
  t.equal(plain.sendProxy, undefined);
  t.equal(plain.upstreamSource, 'client');
  const config = run([...base, '--proxy-protocol', 'any', '--proxy-from', '10.0.0.0/8', '--proxy-from', '2001:DB8:F::/48',
    '--proxy-from', '192.0.2.7', '--send-proxy', 'v1', '--upstream-source', 'relay']);
  t.same(config.proxyProtocol, { version: 'any', from: ['10.0.0.0/8', '2001:db8:f::/48', '192.0.2.7/32'],
    headerTimeoutMs: DEFAULTS.proxyHeaderTimeoutMs, replyHeader: false });
  t.equal(config.sendProxy, 'v1');
  t.equal(config.upstreamSource, 'relay');
  const udp = run([...base, '--proto', 'udp', '--proxy-protocol', 'v2', '--proxy-from', '10.0.0.1', '--proxy-reply-header',
    '--proxy-header-timeout', '2s']);
  t.match(udp.proxyProtocol, { version: 'v2', replyHeader: true, headerTimeoutMs: 2000 });
});

t.test('PROXY protocol flags: what is refused, and why', async (t) => {
  const cases: [string[], RegExp][] = [
    [['--proxy-protocol', 'v2'], /needs --proxy-from CIDR: only trusted fronts/],
    [['--proxy-from', '10.0.0.0/8'], /--proxy-from needs --proxy-protocol/],
    [['--proxy-protocol', 'v3', '--proxy-from', '10.0.0.0/8'], /--proxy-protocol must be v1, v2 or any: got 'v3'/],
    [['--proxy-protocol', 'v2', '--proxy-from', '10.0.0.0/33'], /--proxy-from: '10.0.0.0\/33' is not an address or CIDR/],
    [['--proxy-protocol', 'v2', '--proxy-from', 'example'], /is not an address or CIDR/],
    [['--proto', 'udp', '--proxy-protocol', 'any', '--proxy-from', '10.0.0.1'], /UDP takes v2 only/],
    [['--proto', 'udp', '--send-proxy', 'v1'], /--send-proxy v1 is for TCP only/],
    [['--proxy-protocol', 'v2', '--proxy-from', '10.0.0.1', '--proxy-reply-header'], /--proxy-reply-header is for UDP only/],
    [['--upstream-source', 'backend'], /--upstream-source must be client or relay/],
  ];
  for (const [argv, message] of cases) t.throws(() => run([...base, ...argv]), { name: ConfigError.name, message }, argv.join(' '));
});

t.test('in a file: the same keys, shown with --check-config', async (t) => {
  const file = parseConfigText(`
[[service]]
name = "web"
listen = ["0.0.0.0:443"]
backend = ["198.51.100.20:443"]
proxy-protocol = "v2"
proxy-from = ["10.0.0.0/8", "2001:db8:f::/48"]
send-proxy = "v2"
upstream-source = "relay"
`, 'relay.toml');
  t.match(file.services[0].run, { proxyProtocol: { version: 'v2', from: ['10.0.0.0/8', '2001:db8:f::/48'] }, sendProxy: 'v2', upstreamSource: 'relay' });
  const shown = formatEffective(file);
  t.match(shown, /proxy-protocol = "v2"\nproxy-from = \["10.0.0.0\/8", "2001:db8:f::\/48"\]\nproxy-header-timeout = "3s"/);
  t.match(shown, /send-proxy = "v2"\nupstream-source = "relay"/);
  t.throws(() => parseConfigText('[[service]]\nname = "x"\nlisten = ["0.0.0.0:1"]\nbackend = ["198.51.100.20:1"]\nproxy-protocol = "v1"\n', 'r.toml'),
    { message: /r.toml:5: service\[0\].proxy-protocol: needs proxy-from CIDR/ });
});

t.test('trusted senders: CIDRs of both families, IPv4-mapped senders as IPv4', async (t) => {
  const trusted = trustedSenders(parseCidrList(['192.0.2.0/24', '2001:db8:f::/48'], 'x'));
  t.ok(trusted('192.0.2.9'));
  t.ok(trusted('::ffff:192.0.2.9'), 'an IPv4 front on a [::] listener');
  t.ok(trusted('2001:db8:f:1::9'));
  t.notOk(trusted('192.0.3.1'));
  t.notOk(trusted('2001:db8:e::1'));
  t.notOk(trusted('not an address'));
  t.notOk(trustedSenders([])('192.0.2.9'), 'nobody is trusted by default');
});
