// The admin keys: loopback or a unix socket unless admin-allow-remote; the
// same rules from flags and from a configuration file. Pure, no root.
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { buildAdminOptions, parseFlags, RUN_FLAGS } from '../../src/config';
import { parseConfigText, formatEffective } from '../../src/config-file';
import { ConfigError } from '../../src/errors';
import { BackendCounters, CONNECT_SECONDS_BUCKETS } from '../../src/admin/counters';

const flags = (...argv: string[]) => buildAdminOptions(parseFlags(argv, RUN_FLAGS));
const SERVICE = '[[service]]\nname = "web"\nlisten = ["192.0.2.1:80"]\nbackend = ["198.51.100.20:80"]\n';

t.test('flags', async (t) => {
  t.equal(flags(), undefined, 'off by default');
  t.same(flags('--admin', '127.0.0.1:9901'), { listen: { kind: 'tcp', endpoint: { address: '127.0.0.1', port: 9901, family: 4 } },
    allowRemote: false, tokenFile: undefined });
  t.equal(flags('--admin', '[::1]:9901')?.listen.kind, 'tcp', 'IPv6 loopback');
  t.same(flags('--admin', '/run/relay/admin.sock')?.listen, { kind: 'unix', path: '/run/relay/admin.sock' });
  t.throws(() => flags('--admin', '192.0.2.1:9901'), /--admin 192\.0\.2\.1:9901 is not a loopback address/);
  t.throws(() => flags('--admin', '0.0.0.0:9901'), ConfigError, 'a wildcard is remote');
  t.equal(flags('--admin', '0.0.0.0:9901', '--admin-allow-remote')?.allowRemote, true);
  t.equal(flags('--admin', '0.0.0.0:9901', '--admin-allow-remote', '--admin-token-file', '/etc/relay/token')?.tokenFile,
    '/etc/relay/token');
  t.throws(() => flags('--admin-allow-remote'), /need --admin/);
  t.throws(() => flags('--admin', 'localhost:9901'), /not an IP address/);
});

t.test('configuration file: admin keys are global', async (t) => {
  const file = parseConfigText(`admin = "127.0.0.1:9901"\n${SERVICE}`, 'relay.toml');
  t.equal(file.global.admin?.listen.kind, 'tcp');
  t.match(formatEffective(file), /admin = "127\.0\.0\.1:9901"\nadmin-allow-remote = false/);
  t.throws(() => parseConfigText(`admin = "192.0.2.1:9901"\n${SERVICE}`, 'relay.toml'), /relay\.toml:1: admin: .*not a loopback address/);
  const remote = parseConfigText(`admin = "192.0.2.1:9901"\nadmin-allow-remote = true\nadmin-token-file = "/etc/relay/token"\n${SERVICE}`, 'r.toml');
  t.same([remote.global.admin?.allowRemote, remote.global.admin?.tokenFile], [true, '/etc/relay/token']);
  t.throws(() => parseConfigText(`admin-allow-remote = "yes"\n${SERVICE}`, 'r.toml'), /must be true or false/);
  t.throws(() => parseConfigText(`${SERVICE}admin = "127.0.0.1:9901"\n`, 'r.toml'), /admin is a global key/);
  t.equal(parseConfigText(SERVICE, 'r.toml').global.admin, undefined, 'no admin key: no admin listener');
});

t.test('connect-time buckets: each observation lands in the first bucket that holds it', async (t) => {
  const c = new BackendCounters('198.51.100.20:80');
  c.observeConnect(0.0001);
  c.observeConnect(0.001);
  c.observeConnect(0.003);
  c.observeConnect(60);
  t.equal(c.connectBuckets[0], 1, '0.1 ms: le 0.5 ms');
  t.equal(c.connectBuckets[1], 1, '1 ms: le 1 ms (bounds are inclusive)');
  t.equal(c.connectBuckets[3], 1, '3 ms: le 5 ms');
  t.equal(c.connectBuckets[CONNECT_SECONDS_BUCKETS.length], 1, '60 s: +Inf');
  t.equal(c.connectBuckets.reduce((a, b) => a + b, 0), 4);
});

t.test('docs/operations.md lists every relay_* metric /metrics serves, and no other', async (t) => {
  const { createMetricsRegistry } = await import('../../src/admin/metrics');
  const { PrimaryAdmin } = await import('../../src/admin/primary');
  const registry = createMetricsRegistry(() => [], '0.0.0');
  // With --workers the primary adds families of its own to the workers' sum.
  const primary = await new PrimaryAdmin(() => [], () => false).metrics();
  const served = new Set([...(await registry.metrics() + primary.text).matchAll(/^# TYPE (relay_[a-z_]+) /gm)].map((m) => m[1]));
  const ops = fs.readFileSync(path.join(__dirname, '..', '..', 'docs', 'operations.md'), 'utf8');
  const documented = new Set([...ops.matchAll(/^\| `(relay_[a-z_]+)` \|/gm)].map((m) => m[1]));
  t.ok(served.size > 15, `${served.size} relay_* families`);
  t.same([...served].filter((m) => !documented.has(m)), [], 'every served metric is documented');
  t.same([...documented].filter((m) => !served.has(m)), [], 'every documented metric is served');
  const monitoring = fs.readFileSync(path.join(__dirname, '..', '..', 'docs', 'monitoring.md'), 'utf8');
  const named = new Set([...monitoring.matchAll(/\b(relay_[a-z_]+?)(?:_bucket)?\b/g)].map((m) => m[1]));
  t.same([...named].filter((m) => !served.has(m)), [], 'monitoring.md queries only metrics that exist');
  t.doesNotThrow(() => JSON.parse(/```json\n([\s\S]*?)```/.exec(monitoring)![1]), 'the Grafana dashboard is valid JSON');
});
