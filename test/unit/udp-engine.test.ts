// --udp-engine: how it is parsed (a flag, a global key), what it changes in
// relay's routes (the raw engine's rules, only when asked for) and in the
// open-file need (no fd per raw session). The engine itself is tested in the
// namespace lab (test/integration/udp-raw-engine.test.ts and the .raw twins).
import t from 'tap';
import { buildRunConfig, buildRoutesConfig, parseFlags, RUN_FLAGS, ROUTES_FLAGS } from '../../src/config';
import { parseConfigText } from '../../src/config-file';
import { nftRuleset } from '../../src/routes';
import { fdsNeeded } from '../../src/limits';
import { RAW_ENGINE_SLOTS, rawEngineSlot, rawEnginePortMap } from '../../src/udp-engine';

const run = (...flags: string[]) =>
  buildRunConfig(parseFlags(['--proto', 'udp', '--listen', '0.0.0.0:53', '--backend', '198.51.100.20:53', ...flags], RUN_FLAGS));

t.test('the flag', async (t) => {
  t.equal(run().udpEngine, 'socket', 'socket by default');
  t.equal(run('--udp-engine', 'raw').udpEngine, 'raw');
  t.throws(() => run('--udp-engine', 'fast'), { message: /--udp-engine must be socket or raw: got 'fast'/ });
});

t.test('a global key of the file, carried into every service', async (t) => {
  const service = (name: string) => `[[service]]\nname = "${name}"\nproto = "udp"\nlisten = ["0.0.0.0:53"]\nbackend = ["198.51.100.20:53"]\n`;
  const file = parseConfigText(`udp-engine = "raw"\n${service('dns')}`, 'f.toml');
  t.same(file.services.map((s) => s.run.udpEngine), ['raw']);
  t.equal(file.global.routes.udpEngine, 'raw', 'and into the routes doctor and relay routes --config check');
  t.throws(() => parseConfigText(`${service('dns')}udp-engine = "raw"\n`, 'f.toml'), { message: /udp-engine is a global key/ });
});

t.test('the rules: only with the raw engine', async (t) => {
  const socket = nftRuleset(0x5e1a);
  t.notMatch(socket, /tproxy|ct mark/, 'the socket engine needs no conntrack');
  const raw = nftRuleset(0x5e1a, 'raw');
  t.match(raw, /meta nfproto ipv4 meta l4proto udp ct direction reply tproxy ip to : ct mark map \{ 0x5e1b0000 : 61000, /);
  t.match(raw, /tproxy ip6 to : ct mark map/);
  t.match(raw, /ct state related ct mark 0x5e1b0000-0x5e1b003f meta mark set 0x5e1a/, 'ICMP errors about raw flows delivered');
  t.match(raw, /chain output \{[^}]*meta mark 0x5e1b0000-0x5e1b003f ct mark set meta mark/, 'the output chain copies the mark');
  t.equal(buildRoutesConfig(parseFlags(['--udp-engine', 'raw'], ROUTES_FLAGS)).udpEngine, 'raw', 'relay routes --udp-engine raw');
});

t.test('slots: a mark and a port each, all in the map', async (t) => {
  t.same(rawEngineSlot(0), { mark: 0x5e1b0000, port: 61000 });
  t.same(rawEngineSlot(RAW_ENGINE_SLOTS - 1), { mark: 0x5e1b0000 + RAW_ENGINE_SLOTS - 1, port: 61000 + RAW_ENGINE_SLOTS - 1 });
  t.equal(rawEnginePortMap().split(',').length, RAW_ENGINE_SLOTS);
});

t.test('raw sessions need no fds', async (t) => {
  const big = ['--max-sessions', '1000000'];
  t.ok(fdsNeeded(run(...big)) > 1_000_000, 'a socket per session: one fd each');
  t.ok(fdsNeeded(run(...big, '--udp-engine', 'raw')) < 1000, 'the raw engine: none');
});
