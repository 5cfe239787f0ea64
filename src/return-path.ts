// Whether the relay host delivers a backend's reply to a client locally (to
// relay's transparent socket), judged by what the kernel does rather than by
// whose rules are there: relay's own rules are one way; rules by source, by
// interface, by the operator's own marks, or TPROXY are others. The kernel
// answers `ip route get <client> from <backend> iif <dev> [mark M]`; the
// marks tried are those nftables sets. Parsing and matching are pure.
import * as ipaddr from 'ipaddr.js';
import type { IpRule } from './config';
import type { Endpoint } from './addr';
import type { Family } from './sys/sockaddr';
import { tryCommand, listJson } from './shell';
import { hex, NftMarkRule } from './nft';

/** What `ip -j route get` answered: the route, or the kernel's refusal. */
export interface RouteAnswer {
  readonly type?: string;
  readonly table?: string;
  readonly dev?: string;
  readonly gateway?: string;
  /** The kernel's error (e.g. "No route to host": forwarding is off). */
  readonly error?: string;
}

export function parseRouteGet(stdout: string, stderr = ''): RouteAnswer {
  try {
    const route = (JSON.parse(stdout) as Record<string, unknown>[])[0];
    if (route) {
      const text = (key: string) => (typeof route[key] === 'string' ? route[key] as string : undefined);
      return { type: text('type') ?? 'unicast', table: text('table') ?? 'main', dev: text('dev'), gateway: text('gateway') };
    }
  } catch {
    // no JSON: the kernel refused; its words are on stderr
  }
  return { error: stderr.replace(/^RTNETLINK answers: /, '').split('\n')[0] || 'no route' };
}

export interface RouteQuery {
  readonly family: Family;
  readonly to: string;
  readonly from: string;
  /** The interface the reply arrives on; none for a backend on this host (its replies are locally generated). */
  readonly iif?: string;
  readonly mark?: number;
}

export function routeGetArgs(q: RouteQuery): string[] {
  return ['ip', '-j', `-${q.family}`, 'route', 'get', q.to, 'from', q.from,
    ...(q.iif ? ['iif', q.iif] : []), ...(q.mark ? ['mark', hex(q.mark)] : [])];
}

/** The first rule, by priority, that the query matches and that looks up table: the one that decided. */
export function decidingRule(rules: readonly IpRule[], q: RouteQuery, table: string): IpRule | undefined {
  return [...rules].sort((a, b) => (a.priority ?? 0) - (b.priority ?? 0))
    .find((r) => r.table === table && ruleMatches(r, q));
}

/** Whether a rule's selectors (source, incoming interface, mark) match; others (ports, protocol) are taken as matching. */
export function ruleMatches(rule: IpRule, q: RouteQuery): boolean {
  if (rule.not !== undefined) return false;
  if (rule.src !== undefined && rule.src !== 'all' && !inPrefix(q.from, rule.src, rule.srclen)) return false;
  if (rule.iif !== undefined && rule.iif !== q.iif) return false;
  if (rule.fwmark !== undefined) {
    const mask = Number(rule.fwmask ?? 0xffffffff);
    if ((((q.mark ?? 0) ^ Number(rule.fwmark)) & mask) >>> 0 !== 0) return false;
  }
  return true;
}

function inPrefix(address: string, prefix: string, length?: number): boolean {
  try {
    const a = ipaddr.parse(address);
    const p = ipaddr.parse(prefix);
    if (a.kind() !== p.kind()) return false;
    return a.match(p, length ?? (p.kind() === 'ipv4' ? 32 : 128));
  } catch {
    return false;
  }
}

/** As `ip rule` prints it: 'rule 100: from 198.51.100.21 lookup 60'. */
export function describeIpRule(rule: IpRule): string {
  const selectors = [
    rule.src && rule.src !== 'all' ? `from ${rule.src}${rule.srclen !== undefined ? `/${rule.srclen}` : ''}` : '',
    rule.iif ? `iif ${rule.iif}` : '',
    rule.fwmark !== undefined ? `fwmark ${rule.fwmark}${rule.fwmask ? `/${rule.fwmask}` : ''}` : '',
  ].filter((s) => s !== '');
  return `rule ${rule.priority ?? 0}: ${selectors.length > 0 ? selectors.join(' ') : 'from all'} lookup ${rule.table}`;
}

/** Whether a mark rule could apply to this backend's replies: its literal source and interface matches agree. */
export function markRuleApplies(rule: NftMarkRule, backend: string, iif: string | undefined): boolean {
  const source = /\bip6? saddr (\S+)/.exec(rule.text)?.[1];
  if (source && !source.startsWith('{') && !source.startsWith('@')) {
    const [addr, len] = source.split('/');
    if (!inPrefix(backend, addr, len === undefined ? undefined : Number(len))) return false;
  }
  const iifname = /\bmeta iifname "?([\w.-]+)"?/.exec(rule.text)?.[1];
  return !(iifname && iif && iifname !== iif);
}

/** The host as the judgement reads it; a test may give its own. */
export interface HostRouting {
  routeGet(q: RouteQuery): RouteAnswer;
  /** The route to an address from this host (which interface the backend is on). */
  routeTo(family: Family, address: string): RouteAnswer;
  rules(family: Family): IpRule[];
  hasLocalRoute(family: Family, table: string): boolean;
  /** Rules that set a mark; undefined when nftables cannot be read here (no CAP_NET_ADMIN). */
  markRules(): NftMarkRule[] | undefined;
}

export interface ReturnPathVerdict {
  readonly delivered: boolean;
  /** What was found, in the operator's terms. */
  readonly detail: string;
  /** When not delivered: the one missing piece doctor could name, with its fix. */
  readonly fix?: string;
  /** The interface replies arrive on (undefined: the backend is on this host). */
  readonly iif?: string;
  /** When delivered: the rule that decided, where doctor found it. */
  readonly rule?: IpRule;
  /** When not delivered: the table of a rule that matches the replies but lacks its local route. */
  readonly incompleteTable?: string;
}

/**
 * Would a reply from backend to client be delivered locally? Unmarked first
 * (rules by source or interface), then with each mark nftables sets (relay's
 * table, the operator's marks, TPROXY), or relayMark when nftables cannot be
 * read here. Marks are tried only for replies that arrive from outside.
 */
export function judgeReturnPath(backend: Endpoint, client: string, relayMark: number, host: HostRouting): ReturnPathVerdict {
  const family = backend.family;
  const toBackend = host.routeTo(family, backend.address);
  if (toBackend.error) return { delivered: false, detail: `no route to the backend: ${toBackend.error}` };
  const iif = toBackend.type === 'local' ? undefined : toBackend.dev;
  const base: RouteQuery = { family, to: client, from: backend.address, iif };
  const rules = host.rules(family);
  const found = (q: RouteQuery, answer: RouteAnswer, how: string): ReturnPathVerdict => {
    const rule = decidingRule(rules, q, answer.table ?? '');
    return { delivered: true, iif, rule, detail: `replies from ${backend.address} are delivered locally${how} by ` +
      `${rule ? describeIpRule(rule) : `table ${answer.table}`}` };
  };
  const unmarked = host.routeGet(base);
  if (unmarked.type === 'local') return found(base, unmarked, '');
  // A backend on this host: its replies are routed on output, before any
  // prerouting mark; only a rule by source (or an unmarked one) can catch them.
  const markRules = iif === undefined ? [] : host.markRules();
  const candidates = markRules === undefined
    ? [{ mark: relayMark, said: ` when marked ${hex(relayMark)} (nftables is not readable here: the probes test the mark)` }]
    : dedupeByMark(markRules.filter((r) => markRuleApplies(r, backend.address, iif))).map((r) => ({ mark: r.mark,
      said: ` marked ${hex(r.mark)} by nftables ${r.where} '${r.text}'` }));
  for (const candidate of candidates) {
    const q = { ...base, mark: candidate.mark };
    const answer = host.routeGet(q);
    if (answer.type === 'local') return found(q, answer, candidate.said);
  }
  return notDelivered(backend, base, unmarked, candidates.map((c) => c.mark), rules, host);
}

function dedupeByMark(rules: NftMarkRule[]): NftMarkRule[] {
  return rules.filter((r, i) => rules.findIndex((o) => o.mark === r.mark) === i);
}

/** Not delivered: say where the kernel sends it, and name a rule whose table lacks its local route. */
function notDelivered(backend: Endpoint, base: RouteQuery, unmarked: RouteAnswer, marks: number[], rules: IpRule[],
  host: HostRouting): ReturnPathVerdict {
  const where = unmarked.error ? `the kernel answers '${unmarked.error}'`
    : `the kernel routes them ${unmarked.type === 'unicast' ? '' : `${unmarked.type} `}` +
      `${unmarked.gateway ? `via ${unmarked.gateway} ` : ''}${unmarked.dev ? `dev ${unmarked.dev} ` : ''}(table ${unmarked.table})`;
  const detail = `replies from ${backend.address} to a client are not delivered locally: ${where}`;
  const special = new Set(['local', 'main', 'default']);
  for (const mark of [0, ...marks]) {
    const q = { ...base, mark };
    const rule = [...rules].sort((a, b) => (a.priority ?? 0) - (b.priority ?? 0))
      .find((r) => r.table !== undefined && !special.has(r.table) && ruleMatches(r, q));
    if (rule && !host.hasLocalRoute(base.family, rule.table!)) {
      const everything = base.family === 4 ? '0.0.0.0/0' : '::/0';
      return { delivered: false, iif: base.iif, incompleteTable: rule.table,
        detail: `${detail}; ${describeIpRule(rule)} matches them, but table ${rule.table} has no local route`,
        fix: `ip -${base.family} route add local ${everything} dev lo table ${rule.table}` };
    }
  }
  return { delivered: false, iif: base.iif, detail, fix: 'relay routes apply' };
}

/**
 * Rules, other than relay's, that send packets to a table holding a local
 * route: another working set for transparent replies (by source, interface,
 * the operator's mark, TPROXY). Which backends it covers is doctor's to say.
 */
export function otherLocalDeliveryRules(rules: readonly IpRule[], hasLocalRoute: (table: string) => boolean,
  relayTable: number): IpRule[] {
  const special = new Set(['local', 'main', 'default', String(relayTable)]);
  return rules.filter((r) => r.table !== undefined && !special.has(r.table) && r.not === undefined && hasLocalRoute(r.table));
}

// ---- reading this host -----------------------------------------------------


export function hostRouting(readMarkRules: () => NftMarkRule[] | undefined): HostRouting {
  let marks: { rules: NftMarkRule[] | undefined } | undefined;
  return {
    routeGet: (q) => {
      const r = tryCommand(routeGetArgs(q));
      return parseRouteGet(r.stdout, r.stderr);
    },
    routeTo: (family, address) => {
      const r = tryCommand(['ip', '-j', `-${family}`, 'route', 'get', address]);
      return parseRouteGet(r.stdout, r.stderr);
    },
    rules: (family) => listJson(['ip', '-j', `-${family}`, 'rule', 'show']) as IpRule[],
    hasLocalRoute: (family, table) => listJson(['ip', '-j', `-${family}`, 'route', 'show', 'table', table])
      .some((r) => r.type === 'local'),
    markRules: () => (marks ??= { rules: readMarkRules() }).rules,
  };
}
