// `relay routes remove` decides from the host's listings, injected here: it
// removes relay's rule as given and what belongs to it, or nothing. No root.
import t from 'tap';
import { parseMapPrefix } from '../../src/map-prefix';
import { planRemoval, RoutingListing, backendRecipes, addRuleOnce, relayHostSteps } from '../../src/routes';
import { parseEndpoint } from '../../src/addr';
import { buildRoutesConfig, parseFlags, ROUTES_FLAGS, IpRule } from '../../src/config';

const config = (...args: string[]) => buildRoutesConfig(parseFlags(args, ROUTES_FLAGS));
const rule = (fwmark: string, table = '2017', priority = 2017): IpRule => ({ priority, src: 'all', fwmark, table } as IpRule);
const main: IpRule[] = [{ priority: 0, table: 'local' }, { priority: 32766, table: 'main' }];
/** A host after `relay routes apply` with the default flags, plus an operator's own rule. */
const applied: RoutingListing = {
  rules: { 4: [...main, rule('0x5e1a'), rule('0x7', '100', 3000)], 6: [...main, rule('0x5e1a')] },
  localRoute: { 4: true, 6: true },
  nftMark: 0x5e1a,
};
const names = (listing: RoutingListing, ...args: string[]) => planRemoval(config(...args), listing).remove.map((s) => s.name);

t.test('the rule as given is found: it, its local route and the nft table go, together', async (t) => {
  t.same(names(applied), [
    'nftables table inet relay marks transparent-socket packets 0x5e1a',
    'IPv4 rule: fwmark 0x5e1a lookup 2017', 'IPv4 route: local 0.0.0.0/0 dev lo table 2017',
    'IPv6 rule: fwmark 0x5e1a lookup 2017', 'IPv6 route: local ::/0 dev lo table 2017',
  ]);
  const plan = planRemoval(config(), applied);
  t.same(plan.remove[1].removeCommands, [['ip', '-4', 'rule', 'del', 'fwmark', '0x5e1a', 'lookup', '2017', 'priority', '2017']]);
  t.equal(plan.mismatch, undefined);
});

t.test('a mistyped --fwmark removes nothing and names what was found', async (t) => {
  const plan = planRemoval(config('--fwmark', '7'), applied);
  t.same(plan.remove, [], 'not the local routes, though they are in table 2017');
  t.equal(plan.mismatch, 'no rule fwmark 0x7 lookup 2017 priority 2017; found fwmark 0x5e1a lookup 2017 priority 2017: pass --fwmark 0x5e1a');
  t.match(planRemoval(config('--priority', '100'), applied).mismatch, /no rule fwmark 0x5e1a lookup 2017 priority 100; .*: pass --priority 2017$/);
  t.match(planRemoval(config('--table', '300'), applied).mismatch, /: pass --table 2017$/);
  const nftOnly: RoutingListing = { rules: { 4: main, 6: main }, localRoute: {}, nftMark: 0x5e1a };
  t.equal(planRemoval(config('--fwmark', '7'), nftOnly).mismatch,
    'no rule fwmark 0x7 lookup 2017 priority 2017; found nftables table inet relay marking 0x5e1a: pass --fwmark 0x5e1a');
});

t.test('per family, and the nft table only with its own mark', async (t) => {
  const v4only: RoutingListing = { ...applied, rules: { 4: applied.rules[4], 6: main }, nftMark: 0x99 };
  const plan = planRemoval(config(), v4only);
  t.same(plan.remove.map((s) => s.name), ['IPv4 rule: fwmark 0x5e1a lookup 2017', 'IPv4 route: local 0.0.0.0/0 dev lo table 2017']);
  t.same(plan.kept, ['IPv6 route: local ::/0 dev lo table 2017: its rule fwmark 0x5e1a lookup 2017 priority 2017 is not there',
    'nftables table inet relay: it marks 0x99, not 0x5e1a']);
  t.same(names({ rules: { 4: main }, localRoute: { 4: false }, nftMark: 0x5e1a }), ['nftables table inet relay marks transparent-socket packets 0x5e1a'],
    'a table left without its rules goes');
});

t.test('nothing of relay\'s on the host: nothing to do, and no error', async (t) => {
  const plan = planRemoval(config(), { rules: { 4: [...main, rule('0x7', '100', 3000)], 6: main }, localRoute: {}, nftMark: undefined });
  t.same(plan, { remove: [], kept: [] });
});

t.test('backend recipes: a looked-up loopback or unspecified address is no gateway', async (t) => {
  const config = { fwmark: 0x5e1a, table: 2017, rulePriority: 2017, relayAddresses: [],
    backends: [parseEndpoint('198.51.100.20:80'), parseEndpoint('198.51.100.20:81'), parseEndpoint('[2001:db8:51::20]:80')] };
  for (const looked of ['127.0.0.1', '0.0.0.0', '::1', '::']) {
    const text = backendRecipes(config, () => looked).join('\n');
    t.notMatch(text, `via ${looked} `, `never 'via ${looked}'`);
    t.match(text, 'via RELAY_ADDRESS_ON_THE_BACKENDS_NETWORK table 2017', 'the placeholder instead');
  }
  const text = backendRecipes(config, (a) => (a.includes(':') ? '2001:db8:51::1' : '198.51.100.1')).join('\n');
  t.equal(text.split('# On backend').length - 1, 2, 'one recipe per address');
  t.match(text, '# On backend 198.51.100.20 (ports 80, 81), choose ONE of:');
  t.match(text, 'ip -4 route replace default via 198.51.100.1 table 2017');
  t.match(text, 'ip -6 addr add 2001:db8:51::20/64 dev eth0 preferred_lft 0', 'IPv6 only');
  t.notMatch(text, 'ip -4 addr add', 'IPv4 needs no preferred_lft');
});

t.test('a rule line safe to paste twice', async (t) => {
  t.equal(addRuleOnce(4, ['from', '198.51.100.20', 'lookup', '2017', 'priority', '2017']),
    '[ -n "$(ip -4 rule show from 198.51.100.20 lookup 2017 priority 2017)" ] || ip -4 rule add from 198.51.100.20 lookup 2017 priority 2017');
});

t.test('--map-ipv4-prefix: the relay host checks replies to it are local; an IPv6 backend\'s recipe gains (c)', async (t) => {
  const prefix = parseMapPrefix('2001:db8:64::/96');
  const config = { fwmark: 0x5e1a, table: 2017, rulePriority: 2017, relayAddresses: ['2001:db8:51::1', '198.51.100.1'],
    backends: [parseEndpoint('198.51.100.20:80'), parseEndpoint('[2001:db8:51::20]:80')], mapIpv4Prefixes: [prefix] };
  const steps = relayHostSteps(config, [4, 6]);
  t.same(steps.map((s) => s.name.split(':')[0]), ['nftables table inet relay marks transparent-socket packets 0x5e1a',
    'IPv4 rule', 'IPv4 route', 'IPv6 rule', 'IPv6 route', 'IPv6 route'], 'after the family\'s own rule and route');
  t.match(steps[5].pasteText, 'ip -6 route replace local 2001:db8:64::/96 dev lo table 2017');
  t.equal(relayHostSteps(config, [4]).length, 3, 'no IPv6 on the host: no step for the prefix');
  const text = backendRecipes(config, () => undefined).join('\n');
  t.match(text, '# (c) IPv4 clients only, which relay maps into 2001:db8:64::/96');
  t.match(text, 'ip -6 route replace 2001:db8:64::/96 via 2001:db8:51::1\n');
  t.match(text, '# check: ip -6 route get 2001:db8:64::c000:2fe from 2001:db8:51::20');
  t.equal(text.split('(c)').length - 1, 1, 'only the IPv6 backend');
});
