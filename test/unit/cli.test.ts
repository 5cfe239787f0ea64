// The CLI as an operator meets it: one line and exit 2 for bad flags, no stack
// traces, and --help naming every flag. No root needed.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { cliPath } from '../../src/lab/topology';
import { RUN_FLAGS, ROUTES_FLAGS } from '../../src/config';

function cli(...args: string[]) {
  return spawnSync(process.execPath, [cliPath(), ...args], { encoding: 'utf8', timeout: 20_000 });
}

t.test('bad flags: one line, usage hint, exit 2', async (t) => {
  for (const args of [[], ['--listen', 'nonsense'], ['--listen', '0.0.0.0:80', '--backend', '1.2.3:80'], ['--bogus'],
    ['routes', 'frobnicate'], ['demo', 'extra']]) {
    const result = cli(...args);
    t.equal(result.status, 2, `exit 2: relay ${args.join(' ')}`);
    const lines = result.stderr.trim().split('\n');
    t.match(lines[0], /^relay: /, 'a relay: line');
    t.equal(lines.length, 2, 'the error and a pointer to --help');
    t.notMatch(result.stderr, /\n\s+at /, 'no stack trace');
  }
});

t.test('--help documents every flag', async (t) => {
  const help = cli('--help');
  t.equal(help.status, 0);
  for (const flag of Object.keys(RUN_FLAGS)) t.match(help.stdout, `--${flag}`, `relay --help names --${flag}`);
  t.match(help.stdout, /relay routes --help .*--relay-address/, 'relay --help points to the routes flags');
  const routesHelp = cli('routes', '--help');
  t.equal(routesHelp.status, 0);
  for (const flag of Object.keys(ROUTES_FLAGS)) t.match(routesHelp.stdout, `--${flag}`, `routes --help names --${flag}`);
});

t.test('routes print shows relay-host commands and filled-in backend recipes', async (t) => {
  const out = cli('routes', 'print', '--backend', '198.51.100.20:53', '--backend', '[2001:db8:51::20]:53',
    '--relay-address', '198.51.100.1', '--relay-address', '2001:db8:51::1');
  t.equal(out.status, 0);
  t.match(out.stdout, 'socket transparent 1 meta mark set 0x5e1a');
  t.match(out.stdout, '|| ip -4 rule add fwmark 0x5e1a lookup 2017 priority 2017');
  t.match(out.stdout, 'ip -6 route replace local ::/0 dev lo table 2017');
  t.match(out.stdout, '|| ip -4 rule add from 198.51.100.20 lookup 2017');
  t.match(out.stdout, 'ip -4 route replace default via 198.51.100.1 table 2017');
  t.match(out.stdout, '|| ip -6 rule add from 2001:db8:51::20 lookup 2017');
  t.match(out.stdout, 'ip -6 route replace default via 2001:db8:51::1 table 2017');
  t.match(out.stdout, 'ip -6 addr add 2001:db8:51::20/64 dev eth0 preferred_lft 0', 'IPv6: not the preferred source');
  t.notMatch(out.stdout, /^ip -\d (rule|route) add/m, 'no bare add: every line can be pasted twice');
  const local = cli('routes', 'print', '--backend', '127.0.0.1:53');
  t.match(local.stdout, '|| ip -4 rule add from 127.0.0.1 lookup 2017 priority 2017', 'a backend on this host needs one rule');
  t.notMatch(local.stdout, /route replace default via/, 'and never a change of the default route');
});

t.test('routes print: one recipe per backend address, whatever its ports', async (t) => {
  const out = cli('routes', 'print', '--backend', '198.51.100.20:25', '--backend', '198.51.100.20:53',
    '--backend', '198.51.100.21:53', '--relay-address', '198.51.100.1');
  t.equal(out.status, 0, out.stderr);
  t.equal(out.stdout.split('ip -4 rule add from 198.51.100.20 ').length - 1, 1, 'one rule for two ports');
  t.match(out.stdout, '# On backend 198.51.100.20 (ports 25, 53), choose ONE of:');
  t.equal(out.stdout.split('ip -4 rule add from 198.51.100.21 ').length - 1, 1, 'and one for the other address');
});
