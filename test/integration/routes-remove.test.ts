// `relay routes remove` on a real host (a namespace of its own): a mistyped
// --fwmark removes nothing and names what it found; the right flags remove
// relay's rule, routes and nft table together, and a second remove is a no-op.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { Lab, IN_NAMESPACE_ENV } from '../../src/lab/netns';
import { cliPath } from '../../src/lab/topology';
import { canRunLab, SKIP_REASON } from './lab-fixture';

t.test('routes remove takes relay\'s rule as given, or nothing', { skip: !canRunLab && SKIP_REASON }, async (t) => {
  const lab = new Lab(`rtrm${process.pid % 100000}`);
  t.teardown(() => lab.teardown());
  const ns = lab.addNamespace('relay');
  const relayCli = (...args: string[]) => spawnSync('ip', ['netns', 'exec', ns.name, ...IN_NAMESPACE_ENV, process.execPath, cliPath(), ...args],
    { encoding: 'utf8', timeout: 20_000 });

  t.equal(relayCli('routes', 'apply').status, 0, 'apply');
  // With relay's rule in place, its default fwmark is refused as --mark (and is free without it: see below).
  const markArgs = ['--listen', '127.0.0.1:18090', '--backend', '198.51.100.20:80', '--mark', '0x5e1a'];
  const clash = relayCli(...markArgs);
  t.equal(clash.status, 2, 'a run with --mark equal to the rule\'s fwmark is refused');
  t.match(clash.stderr, /^relay: --mark 0x5e1a matches this host's rule 'fwmark 0x5e1a lookup 2017'/);

  const typo = relayCli('routes', 'remove', '--fwmark', '7');
  t.equal(typo.status, 1, 'a mistyped --fwmark fails');
  t.equal(typo.stderr, 'relay: routes remove: nothing removed: no rule fwmark 0x7 lookup 2017 priority 2017; ' +
    'found fwmark 0x5e1a lookup 2017 priority 2017: pass --fwmark 0x5e1a\n');
  t.equal(typo.stdout, '', 'and removes nothing');
  const check = relayCli('routes', 'check');
  t.equal(check.status, 0, `everything is still in place: ${check.stdout}`);

  const removed = relayCli('routes', 'remove');
  t.equal(removed.status, 0, removed.stderr);
  t.equal((removed.stdout.match(/^removed/gm) ?? []).length, 5, 'nft table, and rule and route per family');
  t.equal(ns.tryRun('nft', 'list', 'table', 'inet', 'relay').ok, false, 'the nft table is gone');
  t.notMatch(ns.ip('-4', 'rule', 'show'), /0x5e1a/, 'the rule is gone');
  t.equal(ns.ip('-4', 'route', 'show', 'table', '2017').trim(), '', 'the local route is gone');

  const doctor = relayCli('doctor', ...markArgs, '--probe-timeout', '200ms');
  t.notMatch(doctor.stderr, /--mark/, `without relay's rule --mark 0x5e1a is accepted: ${doctor.stderr}`);
  t.match(doctor.stdout, /checks (passed|failed)/, 'doctor ran its checks');

  const again = relayCli('routes', 'remove');
  t.equal(again.status, 0, 'a second remove is a no-op');
  t.match(again.stdout, /^nothing to remove/);
});
