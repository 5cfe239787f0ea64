// The pieces doctor judges the relay host with, from real `ip -j` and `nft -j`
// output captured on this kernel (iproute2 6.1, nft 1.0.6): parsing, which
// rule decided, and the verdict over an injected host. No root.
import t from 'tap';
import {
  parseRouteGet, routeGetArgs, decidingRule, describeIpRule, judgeReturnPath, markRuleApplies, otherLocalDeliveryRules,
  HostRouting, RouteQuery, RouteAnswer,
} from '../../src/return-path';
import { parseNftRules, markRules } from '../../src/nft';
import { isRelayNftTable } from '../../src/routes';
import type { IpRule } from '../../src/config';
import type { Endpoint } from '../../src/addr';

const LOCAL = '[{"type":"local","dst":"192.0.2.254","from":"198.51.100.21","dev":"lo","table":"60","flags":[],' +
  '"cache":["local"],"iif":"ethb"}]';
const RULES: IpRule[] = JSON.parse('[{"priority":0,"src":"all","table":"local"},' +
  '{"priority":100,"src":"198.51.100.21","table":"60"},{"priority":101,"src":"all","iif":"eth-backend","table":"61"},' +
  '{"priority":102,"src":"all","fwmark":"0x1","table":"62"},{"priority":103,"src":"198.51.100.0","srclen":24,"table":"63"},' +
  '{"priority":32766,"src":"all","table":"main"},{"priority":32767,"src":"all","table":"default"}]');
// `nft -j list ruleset` with relay's table and an operator's TPROXY rule.
const NFT = '{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, ' +
  '{"table": {"family": "inet", "name": "relay", "handle": 1}}, ' +
  '{"rule": {"family": "inet", "table": "relay", "chain": "prerouting", "handle": 3, "expr": [' +
  '{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": {"set": ["icmp", "tcp", "udp", "ipv6-icmp"]}}}, ' +
  '{"match": {"op": "==", "left": {"socket": {"key": "transparent"}}, "right": 1}}, ' +
  '{"mangle": {"key": {"meta": {"key": "mark"}}, "value": 24090}}, {"accept": null}]}}, ' +
  '{"rule": {"family": "inet", "table": "relay", "chain": "prerouting", "handle": 4, "expr": [' +
  '{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "protocol"}}, "right": "udp"}}, ' +
  '{"match": {"op": "!=", "left": {"&": [{"payload": {"protocol": "ip", "field": "frag-off"}}, 8191]}, "right": 0}}, ' +
  '{"mangle": {"key": {"meta": {"key": "mark"}}, "value": 24090}}, {"accept": null}]}}, ' +
  '{"rule": {"family": "inet", "table": "relay", "chain": "prerouting", "handle": 6, "expr": [' +
  '{"match": {"op": "==", "left": {"exthdr": {"name": "frag", "field": "nexthdr"}}, "right": "udp"}}, ' +
  '{"match": {"op": "!=", "left": {"exthdr": {"name": "frag", "field": "frag-off"}}, "right": 0}}, ' +
  '{"mangle": {"key": {"meta": {"key": "mark"}}, "value": 24090}}, {"accept": null}]}}, ' +
  '{"rule": {"family": "inet", "table": "op", "chain": "pre", "handle": 5, "expr": [' +
  '{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "198.51.100.21"}}, ' +
  '{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, ' +
  '{"tproxy": {"family": "ip", "port": 1}}, {"mangle": {"key": {"meta": {"key": "mark"}}, "value": 1}}, {"accept": null}]}}]}';

t.test('ip -j route get: a local delivery, a route, a refusal', async (t) => {
  t.same(parseRouteGet(LOCAL), { type: 'local', table: '60', dev: 'lo', gateway: undefined });
  t.same(parseRouteGet('[{"dst":"192.0.2.254","gateway":"198.51.100.5","dev":"ethb","prefsrc":"198.51.100.1","flags":[],"uid":0,"cache":[]}]'),
    { type: 'unicast', table: 'main', dev: 'ethb', gateway: '198.51.100.5' }, 'no type and no table: unicast in main');
  t.same(parseRouteGet('', 'RTNETLINK answers: No route to host\n'), { error: 'No route to host' });
  t.same(routeGetArgs({ family: 4, to: '192.0.2.254', from: '198.51.100.21', iif: 'ethb', mark: 0x5e1a }),
    ['ip', '-j', '-4', 'route', 'get', '192.0.2.254', 'from', '198.51.100.21', 'iif', 'ethb', 'mark', '0x5e1a']);
  t.same(routeGetArgs({ family: 6, to: '2001:db8::1', from: '2001:db8:51::20' }),
    ['ip', '-j', '-6', 'route', 'get', '2001:db8::1', 'from', '2001:db8:51::20'], 'a backend on this host: no iif, no mark');
});

t.test('the rule that decided, as ip rule prints it', async (t) => {
  const q = (from: string, iif?: string, mark?: number): RouteQuery => ({ family: 4, to: '192.0.2.254', from, iif, mark });
  t.equal(describeIpRule(decidingRule(RULES, q('198.51.100.21', 'ethb'), '60')!), 'rule 100: from 198.51.100.21 lookup 60');
  t.equal(decidingRule(RULES, q('198.51.100.22', 'ethb'), '60'), undefined, 'another source does not match');
  t.equal(describeIpRule(decidingRule(RULES, q('198.51.100.22', 'eth-backend'), '61')!), 'rule 101: iif eth-backend lookup 61');
  t.equal(describeIpRule(decidingRule(RULES, q('198.51.100.22', 'ethb', 1), '62')!), 'rule 102: fwmark 0x1 lookup 62');
  t.equal(decidingRule(RULES, q('198.51.100.22', 'ethb', 2), '62'), undefined, 'another mark does not match');
  t.equal(describeIpRule(decidingRule(RULES, q('198.51.100.99', 'ethb'), '63')!), 'rule 103: from 198.51.100.0/24 lookup 63');
  t.equal(decidingRule([{ priority: 5, src: '198.51.100.21', table: '60', not: null }], q('198.51.100.21'), '60'), undefined,
    'a negated rule is not taken as matching');
});

t.test('nft -j: rules, the marks they set, and relay\'s own table', async (t) => {
  const rules = parseNftRules(NFT);
  t.equal(rules.length, 4);
  const marks = markRules(rules);
  t.same(marks.map((m) => [m.mark, m.where, m.tproxy]), [[0x5e1a, 'inet relay prerouting', false],
    [0x5e1a, 'inet relay prerouting', false], [0x5e1a, 'inet relay prerouting', false], [1, 'inet op pre', true]]);
  t.equal(marks[0].text, 'meta l4proto { icmp, tcp, udp, ipv6-icmp } socket transparent 1 meta mark set 0x5e1a accept');
  t.equal(marks[3].text, 'ip saddr 198.51.100.21 meta l4proto tcp tproxy ip to :1 meta mark set 0x1 accept');
  t.ok(isRelayNftTable(rules, 0x5e1a), 'relay\'s current ruleset is recognised');
  t.notOk(isRelayNftTable(rules, 0x77), 'not with another mark');
  t.notOk(isRelayNftTable(rules.filter((r) => r.handle !== 6), 0x5e1a), 'a table without the IPv6 fragment rule is an older relay\'s');
  t.same(parseNftRules('not json'), []);
  t.same(parseNftRules('{"nftables": [{"metainfo": {}}]}'), []);
  t.ok(markRuleApplies(marks[3], '198.51.100.21', 'ethb'), 'a rule by source applies to that source');
  t.notOk(markRuleApplies(marks[3], '198.51.100.20', 'ethb'), 'and not to another backend');
  t.ok(markRuleApplies(marks[0], '2001:db8:51::20', 'ethb'), 'a rule with no source applies to any');
});

/** A host whose kernel answers from a table of (query -> answer). */
function fakeHost(answers: Record<string, RouteAnswer>, rules: IpRule[], localTables: string[], nft: string | undefined): HostRouting {
  return {
    routeGet: (q) => answers[`${q.from} mark ${q.mark ?? 0}`] ?? { error: 'No route to host' },
    routeTo: () => ({ type: 'unicast', table: 'main', dev: 'eth-backend' }),
    rules: () => rules,
    hasLocalRoute: (_f, table) => localTables.includes(table),
    markRules: () => (nft === undefined ? undefined : markRules(parseNftRules(nft))),
  };
}
const backend = (address: string): Endpoint => ({ address, port: 80, family: 4 } as Endpoint);
const local = (table: string): RouteAnswer => ({ type: 'local', table, dev: 'lo' });

t.test('the verdict: unmarked rules, marks nftables sets, and what is missing', async (t) => {
  const bySource = judgeReturnPath(backend('198.51.100.21'), '192.0.2.254', 0x5e1a,
    fakeHost({ '198.51.100.21 mark 0': local('60') }, RULES, ['60'], NFT));
  t.ok(bySource.delivered);
  t.equal(bySource.detail, 'replies from 198.51.100.21 are delivered locally by rule 100: from 198.51.100.21 lookup 60');

  const relayRule: IpRule = { priority: 2017, src: 'all', fwmark: '0x5e1a', table: '2017' };
  const byMark = judgeReturnPath(backend('198.51.100.20'), '192.0.2.254', 0x5e1a,
    fakeHost({ '198.51.100.20 mark 24090': local('2017') }, [relayRule], ['2017'], NFT));
  t.ok(byMark.delivered);
  t.match(byMark.detail, /marked 0x5e1a by nftables inet relay prerouting '.*socket transparent 1.*' by rule 2017: fwmark 0x5e1a lookup 2017/);

  const unreadable = judgeReturnPath(backend('198.51.100.20'), '192.0.2.254', 0x5e1a,
    fakeHost({ '198.51.100.20 mark 24090': local('2017') }, [relayRule], ['2017'], undefined));
  t.match(unreadable.detail, /when marked 0x5e1a \(nftables is not readable here/, 'without CAP_NET_ADMIN: relay\'s mark, said so');

  const tproxyElsewhere = judgeReturnPath(backend('198.51.100.20'), '192.0.2.254', 0x5e1a,
    fakeHost({ '198.51.100.20 mark 1': local('62') }, RULES, ['62'], NFT));
  t.notOk(tproxyElsewhere.delivered, 'a TPROXY rule for another source does not cover this backend');

  const noLocalRoute = judgeReturnPath(backend('198.51.100.21'), '192.0.2.254', 0x5e1a, fakeHost({}, RULES, [], NFT));
  t.notOk(noLocalRoute.delivered);
  t.match(noLocalRoute.detail, /the kernel answers 'No route to host'; rule 100: from 198\.51\.100\.21 lookup 60 matches them, but table 60 has no local route/);
  t.equal(noLocalRoute.fix, 'ip -4 route add local 0.0.0.0/0 dev lo table 60');
  t.equal(noLocalRoute.incompleteTable, '60');

  const nothing = judgeReturnPath(backend('198.51.100.9'), '192.0.2.254', 0x5e1a, fakeHost({}, RULES.slice(5), [], '{}'));
  t.equal(nothing.fix, 'relay routes apply', 'no rules at all: relay\'s own');
});

t.test('other working sets, for routes check', async (t) => {
  const found = otherLocalDeliveryRules([...RULES, { priority: 2017, src: 'all', fwmark: '0x5e1a', table: '2017' }],
    (table) => ['60', '62', '2017'].includes(table), 2017);
  t.same(found.map(describeIpRule), ['rule 100: from 198.51.100.21 lookup 60', 'rule 102: fwmark 0x1 lookup 62']);
});
