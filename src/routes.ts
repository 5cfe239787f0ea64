// Routing on the relay host, and the recipes for the backend hosts.
//
// The backend replies to the client's address; the kernel on the relay host
// would forward such a packet (or drop it), not deliver it. Three pieces make
// it local, so it reaches relay's transparent socket:
//   1. nftables marks packets that belong to a transparent socket
//      (`socket transparent 1`, a socket lookup in prerouting);
//   2. an `ip rule` sends marked packets to relay's own routing table;
//   3. that table holds `local 0.0.0.0/0 dev lo` (and `local ::/0`), so
//      every destination is local there. Replies to a --map-ipv4-prefix
//      (an IPv4 client's address inside IPv6) are such destinations too:
//      `local ::/0` covers them, and a step per prefix checks that it does.
// Relay owns the nft table `inet relay`, its rule (by mark, table and
// priority) and its table number; `remove` deletes the rule it finds, with
// what belongs to it, and nothing when it finds none.
import * as fs from 'node:fs';
import * as os from 'node:os';
import type { RoutesConfig, HostFacts, IpRule, UdpEngine } from './config';
import { RAW_ENGINE_MARK_BASE, RAW_ENGINE_PORT_BASE, RAW_ENGINE_SLOTS, rawEnginePortMap } from './udp-engine';
import type { Family } from './sys/sockaddr';
import { tryCommand, runCommand, formatCommand, listJson } from './shell';
import { Endpoint, formatEndpoint, familyOfAddress, isLoopback, relayAddressProblem } from './addr';
import { ConfigError, RelayError, echo } from './errors';
import { listNft, markRules, NftRule } from './nft';
import { hostRouting, otherLocalDeliveryRules, describeIpRule } from './return-path';
import { MapPrefix, mapIpv4 } from './map-prefix';
import { DEFAULT_PROBE_SOURCES } from './config';

export const NFT_TABLE = 'relay';

export interface RouteStep {
  readonly name: string;
  readonly family?: Family;
  isPresent(): boolean;
  readonly applyCommands: readonly (readonly string[])[];
  readonly applyInput?: string;
  readonly removeCommands: readonly (readonly string[])[];
  /** What `routes print` shows: shell that an operator can paste twice (under set -e too). */
  readonly pasteText: string;
}

export function nftRuleset(fwmark: number, udpEngine: UdpEngine = 'socket'): string {
  return [
    `table inet ${NFT_TABLE} {`,
    '  chain prerouting {',
    '    type filter hook prerouting priority mangle; policy accept;',
    ...(udpEngine === 'raw' ? rawEnginePrerouting(fwmark) : []),
    '    # packets for a socket bound with IP_TRANSPARENT (relay\'s upstream sockets),',
    '    # and ICMP errors about them (port unreachable ends a UDP session at once)',
    `    meta l4proto { tcp, udp, icmp, ipv6-icmp } socket transparent 1 meta mark set ${hex(fwmark)} accept`,
    '    # a large UDP reply arrives in fragments, and only the first names its port:',
    '    # deliver the rest locally too, where the kernel reassembles them',
    `    ip protocol udp ip frag-off & 0x1fff != 0 meta mark set ${hex(fwmark)} accept`,
    `    frag nexthdr udp frag frag-off != 0 meta mark set ${hex(fwmark)} accept`,
    '  }',
    ...(udpEngine === 'raw' ? rawEngineOutput() : []),
    '}',
  ].join('\n') + '\n';
}

/**
 * The raw UDP engine (--udp-engine raw) has no socket per session for
 * `socket transparent` to find: a reply of one of its flows is known by the
 * mark its raw socket gave the flow's conntrack entry, and tproxy hands it to
 * the receive port of the process with that mark (a map lookup; no entry, no
 * match). No rule names a backend, so a reload may add any.
 */
function rawEnginePrerouting(fwmark: number): string[] {
  const match = 'meta l4proto udp ct direction reply';
  return [
    "    # replies of the raw UDP engine's flows, to the receive port of the process that sent them",
    `    meta nfproto ipv4 ${match} tproxy ip to : ct mark map ${rawEnginePortMap()} meta mark set ${hex(fwmark)} accept`,
    `    meta nfproto ipv6 ${match} tproxy ip6 to : ct mark map ${rawEnginePortMap()} meta mark set ${hex(fwmark)} accept`,
    '    # ICMP errors about them (port unreachable ends a session): delivered here, the raw socket hears of them',
    `    meta l4proto { icmp, ipv6-icmp } ct state related ct mark ${rawEngineMarks()} meta mark set ${hex(fwmark)} accept`,
  ];
}

/** Every slot's mark, as an nft range. */
function rawEngineMarks(): string {
  return `${hex(RAW_ENGINE_MARK_BASE)}-${hex(RAW_ENGINE_MARK_BASE + RAW_ENGINE_SLOTS - 1)}`;
}

function rawEngineOutput(): string[] {
  return [
    '  chain output {',
    '    type filter hook output priority mangle; policy accept;',
    "    # what the raw UDP engine sends: its flow's conntrack entry keeps the mark for the replies",
    `    meta mark ${rawEngineMarks()} ct mark set meta mark`,
    '  }',
  ];
}

export function relayHostSteps(config: RoutesConfig, families: readonly Family[] = hostFamilies()): RouteStep[] {
  const steps: RouteStep[] = [nftStep(config)];
  for (const family of families) {
    steps.push(ruleStep(config, family), localRouteStep(config, family));
  }
  // After the family's own two steps (familySteps relies on that order).
  if (families.includes(6)) steps.push(...(config.mapIpv4Prefixes ?? []).map((p) => mapPrefixStep(config, p)));
  return steps;
}

/** relay's rule as given: its fwmark, table and priority. */
function isRelayRule(rule: IpRule, config: RoutesConfig): boolean {
  return Number(rule.fwmark) === config.fwmark && Number(rule.fwmask ?? 0xffffffff) === 0xffffffff &&
    rule.table === String(config.table) && rule.priority === config.rulePriority;
}

function listRules(family: Family): IpRule[] {
  return listJson(['ip', '-j', `-${family}`, 'rule', 'show']) as IpRule[];
}

/** The rules of nft table inet relay, or undefined when there is no such table. */
function listNftTable(): NftRule[] | undefined {
  return listNft(['table', 'inet', NFT_TABLE]);
}

/** The mark relay's nft table sets, or undefined when there is no such table. */
function nftTableMark(): number | undefined {
  return markRules(listNftTable() ?? [])[0]?.mark;
}

/**
 * Whether the table holds every rule of the current ruleset marking fwmark,
 * so a table left by an older relay counts as missing.
 */
export function isRelayNftTable(rules: readonly NftRule[], fwmark: number, udpEngine: UdpEngine = 'socket'): boolean {
  const marking = markRules(rules).filter((r) => r.mark === fwmark).map((r) => r.text);
  const needed = [/icmp.* socket transparent 1 /, /ip frag-off/, /frag frag-off/];
  const raw = [/tproxy ip to/, /tproxy ip6 to/];
  // The raw engine's rules turn conntrack on: present exactly when asked for,
  // so that applying the socket engine's routes takes them away again.
  const hasRaw = raw.every((rule) => marking.some((text) => rule.test(text)));
  return needed.every((rule) => marking.some((text) => rule.test(text))) && hasRaw === (udpEngine === 'raw');
}

/** The host as config.checkAgainstHost reads it; a listing that fails (no ip, no permission) reads as empty. */
export function readHostFacts(families: readonly Family[] = hostFamilies()): HostFacts {
  return {
    addresses: Object.values(os.networkInterfaces()).flat().flatMap((i) => (i ? [i.address] : [])),
    rules: families.flatMap(listRules),
  };
}

function nftStep(config: RoutesConfig): RouteStep {
  const ruleset = nftRuleset(config.fwmark, config.udpEngine);
  // Create-then-delete-then-define, in one transaction: idempotent, and it
  // replaces a stale table left by an older relay.
  const script = `table inet ${NFT_TABLE} {}\ndelete table inet ${NFT_TABLE}\n${ruleset}`;
  return {
    name: `nftables table inet ${NFT_TABLE} marks transparent-socket packets ${hex(config.fwmark)}` +
      (config.udpEngine === 'raw' ? ` and steers the raw UDP engine's replies to ports ${RAW_ENGINE_PORT_BASE}-${RAW_ENGINE_PORT_BASE + RAW_ENGINE_SLOTS - 1}` : ''),
    isPresent: () => isRelayNftTable(listNftTable() ?? [], config.fwmark, config.udpEngine),
    applyCommands: [['nft', '-f', '-']],
    applyInput: script,
    pasteText: `nft -f - <<'EOF'\n${script}EOF`,
    removeCommands: [['nft', 'delete', 'table', 'inet', NFT_TABLE]],
  };
}

function ruleStep(config: RoutesConfig, family: Family): RouteStep {
  const spec = ['fwmark', hex(config.fwmark), 'lookup', String(config.table), 'priority', String(config.rulePriority)];
  return {
    name: `IPv${family} rule: fwmark ${hex(config.fwmark)} lookup ${config.table}`,
    family,
    isPresent: () => listRules(family).some((r) => isRelayRule(r, config)),
    applyCommands: [['ip', `-${family}`, 'rule', 'add', ...spec]],
    removeCommands: [['ip', `-${family}`, 'rule', 'del', ...spec]],
    pasteText: addRuleOnce(family, spec),
  };
}

function localRouteStep(config: RoutesConfig, family: Family): RouteStep {
  const everything = family === 4 ? '0.0.0.0/0' : '::/0';
  const spec = ['local', everything, 'dev', 'lo', 'table', String(config.table)];
  return {
    name: `IPv${family} route: local ${everything} dev lo table ${config.table}`,
    family,
    isPresent: () => listJson(['ip', '-j', `-${family}`, 'route', 'show', 'table', String(config.table)]).some((r) =>
      r.type === 'local' && (r.dst === 'default' || r.dst === everything) && r.dev === 'lo'),
    applyCommands: [['ip', `-${family}`, 'route', 'add', ...spec]],
    removeCommands: [['ip', `-${family}`, 'route', 'del', ...spec]],
    pasteText: formatCommand(['ip', `-${family}`, 'route', 'replace', ...spec]),
  };
}

/**
 * Replies to a mapped client (PREFIX + its IPv4 address) are delivered like
 * any other: relay's `local ::/0` covers the prefix, and so does a `local`
 * route for the prefix itself. Applied after ::/0, this step finds it present.
 */
function mapPrefixStep(config: RoutesConfig, prefix: MapPrefix): RouteStep {
  const spec = ['local', prefix.text, 'dev', 'lo', 'table', String(config.table)];
  return {
    name: `IPv6 route: replies to --map-ipv4-prefix ${prefix.text} are local in table ${config.table} (local ::/0 or local ${prefix.text})`,
    family: 6,
    isPresent: () => listJson(['ip', '-j', '-6', 'route', 'show', 'table', String(config.table)]).some((r) =>
      r.type === 'local' && (r.dst === 'default' || r.dst === '::/0' || r.dst === prefix.text) && r.dev === 'lo'),
    applyCommands: [['ip', '-6', 'route', 'add', ...spec]],
    removeCommands: [['ip', '-6', 'route', 'del', ...spec]],
    pasteText: `# covered by local ::/0 above; on its own: ${formatCommand(['ip', '-6', 'route', 'replace', ...spec])}`,
  };
}

/** The families this host can route: IPv6 may be disabled on the kernel command line. */
export function hostFamilies(): Family[] {
  return fs.existsSync('/proc/net/if_inet6') ? [4, 6] : [4];
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

// ---- commands --------------------------------------------------------------

export function routesCommand(action: string, config: RoutesConfig): number {
  const steps = relayHostSteps(config);
  switch (action) {
    case 'print':
      process.stdout.write(printRoutes(config, steps));
      return 0;
    case 'apply':
      return applyRoutes(steps);
    case 'check': {
      const status = checkRoutes(steps);
      if (status !== 0) process.stdout.write(otherWorkingSet(config));
      return status;
    }
    case 'remove':
      return removeRoutes(planRemoval(config, readRouting(steps)));
    default:
      throw new ConfigError(`routes: unknown action '${echo(action)}' (print, apply, check or remove)`);
  }
}

export function applyRoutes(steps: readonly RouteStep[], out = process.stdout): number {
  for (const step of steps) {
    if (step.isPresent()) {
      out.write(`present  ${step.name}\n`);
      continue;
    }
    for (const argv of step.applyCommands) runCommand(argv, step.applyInput);
    if (!step.isPresent()) {
      throw new RelayError('ERR_ROUTES', `applied but still missing: ${step.name}`);
    }
    out.write(`added    ${step.name}\n`);
  }
  return 0;
}

export function checkRoutes(steps: readonly RouteStep[], out = process.stdout): number {
  let missing = 0;
  for (const step of steps) {
    if (step.isPresent()) {
      out.write(`OK       ${step.name}\n`);
    } else {
      missing++;
      // A command fed a script on stdin is no use as a one-line fix.
      const fix = step.applyInput ? 'relay routes apply' : step.applyCommands.map(formatCommand).join(' && ');
      out.write(`MISSING  ${step.name}\n         fix: ${fix}\n`);
    }
  }
  if (missing > 0) out.write(`${missing} missing: run 'relay routes apply' (as root, or with CAP_NET_ADMIN)\n`);
  return missing === 0 ? 0 : 1;
}

/** When relay's own routes are missing: name another set of rules that delivers replies locally, if there is one. */
function otherWorkingSet(config: RoutesConfig): string {
  const host = hostRouting(() => undefined);
  const found = hostFamilies().flatMap((family) => otherLocalDeliveryRules(host.rules(family),
    (table) => host.hasLocalRoute(family, table), config.table).map((r) => `IPv${family} ${describeIpRule(r)}`));
  if (found.length === 0) return '';
  return `other rules deliver replies locally on this host (${found.join('; ')}): relay works with them without its own; ` +
    "'relay doctor' with relay's flags tells, per backend, whether they cover it\n";
}

/** What `routes remove` decides on, read from the host (or given, in a test). */
export interface RoutingListing {
  /** Every rule, per family this host routes. */
  readonly rules: Partial<Record<Family, readonly IpRule[]>>;
  /** Whether relay's table holds its local route, per family. */
  readonly localRoute: Partial<Record<Family, boolean>>;
  /** The mark the nft table inet relay sets; undefined when there is no such table. */
  readonly nftMark: number | undefined;
}

export interface RemovalPlan {
  readonly remove: readonly RouteStep[];
  /** What was found and left alone, and why. */
  readonly kept: readonly string[];
  /** Set when nothing matched but something relay-like was found: remove nothing, and say what to pass. */
  readonly mismatch?: string;
}

/** A family's two steps, as relayHostSteps orders them. */
function familySteps(steps: readonly RouteStep[], family: Family): { rule: RouteStep; route: RouteStep } {
  const [rule, route] = steps.filter((s) => s.family === family);
  return { rule, route };
}

function readRouting(steps: readonly RouteStep[]): RoutingListing {
  const families = [...new Set(steps.flatMap((s) => (s.family ? [s.family] : [])))];
  return {
    rules: Object.fromEntries(families.map((f) => [f, listRules(f)])),
    localRoute: Object.fromEntries(families.map((f) => [f, familySteps(steps, f).route.isPresent()])),
    nftMark: nftTableMark(),
  };
}

/**
 * Per family, relay's rule as given (fwmark, table, priority): when found, it
 * and that family's local route go; the nft table goes when it sets the given
 * fwmark. The local routes are found by table number alone, so they never go
 * without their rule. When no rule matches but another rule looks like
 * relay's, or the nft table sets another mark, nothing goes: a mistyped flag
 * must not half tear down a working setup.
 */
export function planRemoval(config: RoutesConfig, listing: RoutingListing): RemovalPlan {
  const steps = relayHostSteps(config, Object.keys(listing.rules).map(Number) as Family[]);
  const given = describeRule(asGiven(config));
  const remove: RouteStep[] = [];
  const kept: string[] = [];
  const lookalikes: IpRule[] = [];
  for (const [key, rules = []] of Object.entries(listing.rules)) {
    const family = Number(key) as Family;
    const { rule, route } = familySteps(steps, family);
    if (rules.some((r) => isRelayRule(r, config))) {
      remove.push(rule, ...(listing.localRoute[family] ? [route] : []));
      continue;
    }
    const like = rules.filter((r) => r.fwmark !== undefined && (Number(r.fwmark) === config.fwmark ||
      r.table === String(config.table) || r.priority === config.rulePriority));
    lookalikes.push(...like);
    kept.push(...like.map((r) => `IPv${family} rule ${describeRule(r)}: not ${given}`));
    if (listing.localRoute[family]) kept.push(`${route.name}: its rule ${given} is not there`);
  }
  const nftMark = listing.nftMark;
  if (remove.length === 0 && lookalikes.length > 0) {
    return { remove: [], kept: [], mismatch: `no rule ${given}; found ${describeRule(lookalikes[0])}: pass ${flagsFor(lookalikes[0], config)}` };
  }
  if (remove.length === 0 && nftMark !== undefined && nftMark !== config.fwmark) {
    return { remove: [], kept: [],
      mismatch: `no rule ${given}; found nftables table inet ${NFT_TABLE} marking ${hex(nftMark)}: pass --fwmark ${hex(nftMark)}` };
  }
  if (nftMark === config.fwmark) remove.unshift(steps[0]);
  else if (nftMark !== undefined) kept.push(`nftables table inet ${NFT_TABLE}: it marks ${hex(nftMark)}, not ${hex(config.fwmark)}`);
  return { remove, kept };
}

function asGiven(config: RoutesConfig): IpRule {
  return { fwmark: hex(config.fwmark), table: String(config.table), priority: config.rulePriority };
}

function describeRule(r: IpRule): string {
  return `fwmark ${hex(Number(r.fwmark))}${r.fwmask ? `/${r.fwmask}` : ''} lookup ${r.table} priority ${r.priority}`;
}

/** The flags that would make `routes remove` take this rule for relay's (a masked rule is never relay's). */
function flagsFor(r: IpRule, config: RoutesConfig): string {
  if (Number(r.fwmask ?? 0xffffffff) !== 0xffffffff) return 'the flags of the rule relay added; relay adds no masked rule';
  return [
    Number(r.fwmark) !== config.fwmark ? `--fwmark ${hex(Number(r.fwmark))}` : '',
    r.table !== String(config.table) ? `--table ${r.table}` : '',
    r.priority !== config.rulePriority ? `--priority ${r.priority}` : '',
  ].filter((f) => f !== '').join(' ');
}

export function removeRoutes(plan: RemovalPlan, out = process.stdout): number {
  for (const step of plan.remove) {
    for (const argv of step.removeCommands) runCommand(argv);
    out.write(`removed  ${step.name}\n`);
  }
  for (const line of plan.kept) out.write(`kept     ${line}\n`);
  if (plan.mismatch) throw new RelayError('ERR_ROUTES', `routes remove: nothing removed: ${plan.mismatch}`);
  if (plan.remove.length === 0) out.write('nothing to remove: relay\'s routes are not on this host\n');
  return 0;
}

export function printRoutes(config: RoutesConfig, steps: readonly RouteStep[]): string {
  const lines: string[] = [
    '# On the relay host (relay routes apply does this; relay routes check verifies it).',
    '# Each recipe below can be pasted twice: a rule already there is not added again.',
  ];
  for (const step of steps) lines.push(`# ${step.name}`, step.pasteText);
  lines.push('', ...backendRecipes(config));
  return lines.join('\n') + '\n';
}

/**
 * `ip rule add` refuses a rule that is already there ("File exists"), which
 * stops a pasted script under set -e: add it only when `ip rule show` with the
 * same selectors lists nothing.
 */
export function addRuleOnce(family: Family, spec: readonly string[]): string {
  const v = `-${family}`;
  return `[ -n "$(${formatCommand(['ip', v, 'rule', 'show', ...spec])})" ] || ${formatCommand(['ip', v, 'rule', 'add', ...spec])}`;
}

/** The backends by address, in the order given: the recipe is per address, whatever the ports. */
function backendsByAddress(backends: readonly Endpoint[]): Endpoint[][] {
  const groups = new Map<string, Endpoint[]>();
  for (const b of backends) groups.set(b.address, [...groups.get(b.address) ?? [], b]);
  return [...groups.values()];
}

function describeBackend(group: readonly Endpoint[]): string {
  if (group.length === 1) return formatEndpoint(group[0].address, group[0].port);
  return `${group[0].address} (ports ${group.map((b) => b.port).join(', ')})`;
}

/** What each backend host needs so its replies to clients come back through relay. */
export function backendRecipes(config: RoutesConfig, relayAddressFor = lookupRelayAddress): string[] {
  if (config.backends.length === 0) {
    return ['# Backend hosts: pass --backend ADDR:PORT to see the recipes filled in.'];
  }
  const lines: string[] = [];
  for (const group of backendsByAddress(config.backends)) {
    const { address, family } = group[0];
    if (isOnThisHost(address)) {
      lines.push(...localBackendRecipe(group, config));
      continue;
    }
    const relay = config.relayAddresses.find((a) => familyOfAddress(a) === family) ??
      usableRelayAddress(relayAddressFor(address)) ?? 'RELAY_ADDRESS_ON_THE_BACKENDS_NETWORK';
    const v = family === 4 ? '-4' : '-6';
    lines.push(
      `# On backend ${describeBackend(group)}, choose ONE of:`,
      `# (a) dedicated address: ${address} is used only for relayed traffic and the service binds it.`,
      ...dedicatedAddressNotes(address, family),
      addRuleOnce(family, ['from', address, 'lookup', String(config.table), 'priority', String(config.rulePriority)]),
      `ip ${v} route replace default via ${relay} table ${config.table}`,
      `# (b) relay as the backend's gateway (all its traffic to clients goes through relay):`,
      `ip ${v} route replace default via ${relay}`,
      ...(family === 6 ? mappedClientsRecipe(address, relay, config.mapIpv4Prefixes ?? []) : []),
      `# check: ip ${v} route get <client-address> from ${address}   -> must say "via ${relay}"`,
      '',
    );
  }
  return lines;
}

/**
 * IPv4 clients relay maps into a prefix: (a) and (b) route them via relay
 * already; a backend that serves only those needs just a route for the prefix.
 */
function mappedClientsRecipe(address: string, relay: string, prefixes: readonly MapPrefix[]): string[] {
  if (prefixes.length === 0) return [];
  return [
    `# (c) IPv4 clients only, which relay maps into ${prefixes.map((p) => p.text).join(', ')} (--map-ipv4-prefix): ` +
      'a route for the prefix via relay (IPv6 clients need (a) or (b)):',
    ...prefixes.map((p) => `ip -6 route replace ${p.text} via ${relay}`),
    ...prefixes.map((p) => `# check: ip -6 route get ${mapIpv4(p, DEFAULT_PROBE_SOURCES[4])} from ${address}   -> must say "via ${relay}"`),
  ];
}

/** What (a) asks of the backend's service and address, beyond the two commands. */
function dedicatedAddressNotes(address: string, family: Family): string[] {
  const notes = [
    '#     A UDP service on a wildcard address (0.0.0.0, [::]) replies from whatever source the kernel picks,',
    '#     which this rule misses, unless it sets each reply\'s source itself (dnsmasq does; a plain socket does not).',
  ];
  if (family === 6) {
    notes.push(
      `#     Add ${address} with preferred_lft 0 (e.g. ip -6 addr add ${address}/64 dev eth0 preferred_lft 0):`,
      '#     otherwise it can become the backend\'s preferred IPv6 source, and the backend\'s own IPv6 traffic',
      '#     then leaves from it, is routed to relay by the rule above, and goes no further.',
    );
  }
  return notes;
}

/**
 * A backend on the relay host itself: its replies to a client's address are
 * routed by the host's main table (out to the network), never to relay's
 * socket. One rule sends replies from the backend's address to relay's local
 * table; there is no gateway to change (changing the default route would
 * break the host).
 */
function localBackendRecipe(group: readonly Endpoint[], config: RoutesConfig): string[] {
  const { address, family } = group[0];
  return [
    `# Backend ${describeBackend(group)} is on this host: one rule, on this host:`,
    addRuleOnce(family, ['from', address, 'lookup', String(config.table), 'priority', String(config.rulePriority)]),
    '',
  ];
}

function isOnThisHost(address: string): boolean {
  if (isLoopback(address)) return true;
  return Object.values(os.networkInterfaces()).flat().some((i) => i?.address === address);
}

/**
 * A looked-up address a backend can route via: not loopback or unspecified
 * (what `ip route get` gives for an address routed over lo), which would
 * print `route replace default via 127.0.0.1`.
 */
function usableRelayAddress(address: string | undefined): string | undefined {
  return address !== undefined && relayAddressProblem(address) === undefined ? address : undefined;
}

/**
 * relay's address as the backend sees it, when the backend is on a directly
 * connected network. Behind a gateway the backend must route via that gateway
 * instead, which only the operator knows: then there is no guess.
 */
function lookupRelayAddress(backendAddress: string): string | undefined {
  const route = listJson(['ip', '-j', 'route', 'get', backendAddress])[0];
  if (route === undefined || route.gateway !== undefined) return undefined;
  return typeof route.prefsrc === 'string' ? route.prefsrc : undefined;
}
