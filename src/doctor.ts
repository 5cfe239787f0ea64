// `relay doctor`: check, with the same flags as a run, everything a
// transparent setup needs, one line per check: OK; WARN for what works but is
// fragile or partial; FAIL, with the command that fixes it, for what breaks
// relaying. The relay host is judged by what its kernel does with a backend's
// reply (src/return-path.ts), whoever's rules do it. The end-to-end checks
// send real traffic from a client-like address, and where they disagree with
// the kernel's route lookup, they decide. With --map-ipv4-prefix, IPv6
// backends are probed from the IPv4 probe source mapped into the prefix too,
// as relay would connect for an IPv4 client.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as net from 'node:net';
import * as dgram from 'node:dgram';
import { listenError, listensV6Only, udpListenPlan } from './listen';
import { findListenerOwners, ListenerOwner } from './listen-owner';
import { judgeReturnPath, hostRouting, ReturnPathVerdict } from './return-path';
import { listNft, markRules } from './nft';
import type { RelayConfig, RoutesConfig, RunOptions } from './config';
import type { Endpoint } from './addr';
import { familyOfAddress, formatEndpoint, isWildcard } from './addr';
import type { Family } from './sys/sockaddr';
import { assertTransparentAllowed, bindTransparentUdp, connectTransparent, getFileLimit, raiseFileLimit } from './sys';
import { relayHostSteps, backendRecipes } from './routes';
import { describeError } from './errors';
import { isWellKnownPrefix, mapIpv4, WELL_KNOWN_WARNING } from './map-prefix';
import { fdsNeeded } from './limits';
import { writeProxyHeader } from './proxy-protocol';
import { trustedSenders } from './proxy-protocol/trust';
import { acquireRawUdpEngine, releaseRawUdpEngine } from '../protocols/udp-raw';

/** FAIL breaks relaying; WARN works, but fragile or for only some backends. */
export type CheckStatus = 'ok' | 'warn' | 'fail';

export interface CheckResult {
  readonly name: string;
  readonly status: CheckStatus;
  /** What was found, whatever the status. */
  readonly detail?: string;
  /** Commands or steps that fix a FAIL or WARN; '(a) cmd' and '(b) cmd' are alternatives, '# ...' comments. */
  readonly fix?: readonly string[];
}

const ok = (name: string, detail?: string): CheckResult => ({ name, status: 'ok', detail });

/** Doctor checks a run's setup: its options are a run's, built by config.buildRunOptions. */
export type DoctorOptions = RunOptions;

export async function runDoctor(options: DoctorOptions): Promise<CheckResult[]> {
  // upstream-source relay: relay connects from its own address, so the
  // transparent pieces (privilege, return paths, relay's routes) are not needed.
  const transparent = options.run.upstreamSource === 'client';
  const families = transparent ? [...new Set(options.run.backends.map((b) => b.endpoint.family))] : [];
  const privilege = families.map(checkPrivilege);
  const fileLimit = checkFileLimit(options.run);
  const returnPaths = transparent ? judgeReturnPaths(options) : [];
  const listens = await checkListenBinds(options.run);
  const privileged = privilege.every((r) => r.status === 'ok');
  const probes: ProbeOutcome[] = [];
  for (const backend of options.run.backends.map((b) => b.endpoint)) {
    for (const protocol of options.run.protocols) {
      for (const source of clientSources(backend.family, options)) {
        probes.push(privileged ? await checkEndToEnd(backend, protocol, options, returnPaths, source)
          : { backend, protocol, result: { name: `end to end ${protocol} ${formatEndpoint(backend.address, backend.port)}`,
            status: 'fail', detail: 'skipped: transparent sockets are not allowed (see above)' } });
      }
    }
  }
  // Relay's own pieces are judged last: a probe may have shown replies delivered by rules doctor cannot read.
  settleWithProbes(returnPaths, probes);
  const throughRelay = privileged ? await checkThroughRelay(options) : [];
  return [
    ...checkProxyProtocol(options.run),
    ...privilege,
    fileLimit,
    ...(transparent ? checkRelayRoutes(options.routes, families, returnPaths) : []),
    ...checkMapPrefix(options.run),
    ...checkRawEngine(options.run),
    ...returnPaths.map((p) => p.result),
    ...options.run.listeners.map(checkListenAddress),
    ...families.map(checkForwarding),
    ...listens,
    ...gradePartial(probes, returnPaths).map((p) => p.result),
    ...throughRelay,
  ];
}

/**
 * Where clients of a backend family come from, as relay would connect for
 * them: the probe source of the family; for IPv6 backends with
 * --map-ipv4-prefix also the IPv4 probe source mapped into it, and only that
 * when relay listens on no IPv6 address (no IPv6 client can come).
 */
function clientSources(family: Family, options: DoctorOptions): string[] {
  const prefix = options.run.mapIpv4Prefix;
  if (family === 4 || !prefix) return [options.probeSources[family]];
  const mapped = mapIpv4(prefix, options.probeSources[4]);
  return options.run.listeners.some((l) => l.family === 6) ? [options.probeSources[6], mapped] : [mapped];
}

/** The prefix is used only with an IPv6 backend; the well-known one is accepted, with RFC 6052's reasons against it. */
function checkMapPrefix(config: RelayConfig): CheckResult[] {
  const prefix = config.mapIpv4Prefix;
  if (!prefix) return [];
  const name = `map-ipv4-prefix ${prefix.text}`;
  if (isWellKnownPrefix(prefix)) {
    return [{ name, status: 'warn', detail: WELL_KNOWN_WARNING,
      fix: ['choose a /96 of your own IPv6 space for --map-ipv4-prefix, and route it via relay on the backends'] }];
  }
  const hasV6Backend = config.backends.some((b) => b.endpoint.family === 6);
  return [ok(name, hasV6Backend ? 'IPv4 clients of IPv6 backends are relayed from it (see the end-to-end lines from it)'
    : 'not used: no backend is IPv6')];
}

function checkPrivilege(family: Family): CheckResult {
  const name = `privilege: IP${family === 6 ? 'V6' : ''}_TRANSPARENT`;
  try {
    assertTransparentAllowed(family);
    return ok(name, 'allowed (CAP_NET_RAW or CAP_NET_ADMIN held)');
  } catch (err) {
    return { name, status: 'fail', detail: describeError(err), fix: [
      'run relay with CAP_NET_RAW: systemd AmbientCapabilities=CAP_NET_RAW (see docs/setup.md),',
      'or: setpriv --inh-caps=+net_raw --ambient-caps=+net_raw ... relay ..., or run as root',
    ] };
  }
}

function checkFileLimit(config: RelayConfig): CheckResult {
  const needed = fdsNeeded(config);
  const limit = raiseFileLimit(needed);
  const name = 'open-file limit';
  if (limit.soft >= needed) return ok(name, `${limit.soft} >= ${needed} needed by the configured limits`);
  const socketSessions = config.protocols.includes('udp') && config.udpEngine !== 'raw';
  return { name, status: 'fail', detail: `${limit.soft} (hard ${getFileLimit().hard}) < ${needed} needed`, fix: [
    'raise it: LimitNOFILE= in the systemd unit, or ulimit -Hn; or lower --max-conns / --max-sessions',
    ...(socketSessions ? ['or hold UDP sessions with no fd each: --udp-engine raw (docs/udp.md, "Which engine")'] : []),
  ] };
}

/** One backend's return path on the relay host: the kernel's verdict, and the line it prints. */
interface ReturnPath {
  readonly backend: Endpoint;
  readonly verdict: ReturnPathVerdict;
  /** The kernel's verdict, or a probe's answer where they disagree. */
  delivered: boolean;
  result: CheckResult;
}

/** Per backend address (ports share the answer), graded: a backend left out while others of its family pass is a WARN. */
function judgeReturnPaths(options: DoctorOptions): ReturnPath[] {
  const host = hostRouting(readMarkRules);
  const byAddress = new Map<string, { backend: Endpoint; verdict: ReturnPathVerdict }>();
  for (const { endpoint } of options.run.backends) {
    if (byAddress.has(endpoint.address)) continue;
    // The relay host's verdict is the same for every client of a family (relay's local route covers all).
    const verdict = judgeReturnPath(endpoint, clientSources(endpoint.family, options)[0], options.routes.fwmark, host);
    byAddress.set(endpoint.address, { backend: endpoint, verdict });
  }
  const judged = [...byAddress.values()];
  return judged.map(({ backend, verdict }) => {
    const name = `relay host: return path from ${backend.address}`;
    const othersPass = judged.some((j) => j.backend.family === backend.family && j.verdict.delivered);
    const rpWarning = verdict.delivered ? rpFilterWarning(backend, verdict.iif) : undefined;
    const result: CheckResult = verdict.delivered
      ? rpWarning ? { name, status: 'warn', detail: `${verdict.detail}; ${rpWarning.detail}`, fix: [rpWarning.fix] } : ok(name, verdict.detail)
      : { name, status: othersPass ? 'warn' : 'fail',
        detail: othersPass ? `${verdict.detail}; other backends' are, so relaying works, but clients balanced to this ` +
          'one wait --connect-timeout before relay tries another' : verdict.detail,
        fix: othersPass ? coverLikeOthers(backend, verdict, judged.map((j) => j.verdict))
          : returnPathFix(backend, verdict, options.routes) };
    return { backend, verdict, delivered: verdict.delivered, result };
  });
}

/**
 * A backend the operator's rules by source leave out: the same rule for its
 * address, or relay's own routes, which cover every backend.
 */
function coverLikeOthers(backend: Endpoint, verdict: ReturnPathVerdict, all: readonly ReturnPathVerdict[]): string[] {
  if (verdict.fix !== 'relay routes apply') return verdict.fix ? [verdict.fix] : [];
  const bySource = all.find((v) => v.delivered && v.rule?.src !== undefined && v.rule.src !== 'all')?.rule;
  if (!bySource) return [verdict.fix];
  return [`# one of: (a) a rule for it like the others', (b) relay's own routes, which cover every backend`,
    `(a) ip -${backend.family} rule add from ${backend.address} lookup ${bySource.table} priority ${bySource.priority}`,
    '(b) relay routes apply'];
}

/**
 * A backend on this host sends its replies from the host itself: relay's
 * routes (the nft mark) never see them, its own rule by source does.
 */
function returnPathFix(backend: Endpoint, verdict: ReturnPathVerdict, routes: RoutesConfig): string[] {
  if (!verdict.fix) return [];
  if (verdict.iif !== undefined || verdict.incompleteTable !== undefined) return [verdict.fix];
  // relay's own local route, if missing too, is its own line's fix.
  return recipeFor(backend, routes);
}

/** Rules that set a packet mark, from nftables; undefined when this process cannot read them. */
function readMarkRules(): ReturnType<typeof markRules> | undefined {
  try {
    return markRules(listNft(['ruleset']) ?? []);
  } catch {
    return undefined;
  }
}

/**
 * relay's own routes. Missing is a FAIL only where replies are not delivered
 * by other means: an operator's working set of rules needs no second one.
 */
function checkRelayRoutes(routes: RoutesConfig, families: readonly Family[], returnPaths: readonly ReturnPath[]): CheckResult[] {
  // Delivered, or the operator's own rules are there with one piece missing (named on their line). Rules
  // that cover only some backends are a WARN on those backends' lines, not a FAIL here.
  const othersInUse = (p: ReturnPath) => p.delivered ||
    (p.verdict.incompleteTable !== undefined && p.verdict.incompleteTable !== String(routes.table));
  const deliveredOtherwise = (family?: Family) => returnPaths
    .filter((p) => family === undefined || p.backend.family === family).some(othersInUse);
  return relayHostSteps(routes, families).map((step) => {
    const name = `relay host: ${step.name}`;
    let present: boolean;
    try {
      present = step.isPresent();
    } catch (err) {
      // Reading nftables needs CAP_NET_ADMIN, which a least-privilege relay
      // does not hold; the end-to-end checks below test what the table does.
      return ok(name, `not readable here (${describeError(err)}): the end-to-end checks test it`);
    }
    if (present) return ok(name);
    // The raw UDP engine's replies find their process by relay's own map: no operator rule stands in for it.
    if (deliveredOtherwise(step.family) && routes.udpEngine !== 'raw') {
      return ok(name, 'not present, and not needed: other rules deliver replies (see the return path lines)' +
        '; `relay routes check` checks relay\'s own');
    }
    return { name, status: 'fail', detail: 'missing: backends\' replies to clients will not reach relay',
      fix: [routes.udpEngine === 'raw' ? 'relay routes apply --udp-engine raw' : 'relay routes apply'] };
  });
}

/** Whether relay's nft table is known to lack the raw engine's rules (unreadable here: not known). */
function rawEngineRulesMissing(routes: RoutesConfig, family: Family): boolean {
  try {
    return !relayHostSteps(routes, [family])[0].isPresent();
  } catch {
    return false;
  }
}

function checkListenAddress(listener: Endpoint): CheckResult {
  const name = `listen address ${formatEndpoint(listener.address, listener.port)}`;
  const wildcard = listener.address === '0.0.0.0' || listener.address === '::';
  const local = wildcard || Object.values(os.networkInterfaces()).flat().some((i) => i?.address === listener.address);
  return local ? ok(name, wildcard ? 'wildcard' : 'on this host')
    : { name, status: 'fail', detail: 'not an address of this host',
      fix: [`ip addr add ${listener.address}/${listener.family === 4 ? 32 : 128} dev lo`] };
}

/**
 * Bind every listener as relay would, in relay's order and with relay's
 * IPV6_V6ONLY choice, holding each until all are bound: a clash between two
 * of relay's own listeners shows here as it would at start. Then let go.
 * For UDP a listener stands for each address of relay's listen plan (a
 * wildcard: every address of the host now, one socket each, docs/udp.md):
 * one line per listener, naming the address that failed.
 */
async function checkListenBinds(config: RelayConfig): Promise<CheckResult[]> {
  const held: { close(): void }[] = [];
  const results: CheckResult[] = [];
  const plan = config.protocols.includes('udp') ? udpListenPlan(config.listeners) : [];
  try {
    for (const protocol of config.protocols) {
      for (const listener of config.listeners) {
        const addresses = protocol === 'tcp' ? [listener.address]
          : plan.filter((b) => b.endpoint === listener).map((b) => b.address);
        results.push(await bindAll(listener, addresses, protocol, config.listeners, held));
      }
    }
  } finally {
    for (const socket of held) socket.close();
  }
  return results;
}

/** Bind each address a listener stands for, keeping what bound in held; one result for the listener. */
async function bindAll(listener: Endpoint, addresses: readonly string[], protocol: 'tcp' | 'udp',
  listeners: readonly Endpoint[], held: { close(): void }[]): Promise<CheckResult> {
  for (const address of addresses) {
    const endpoint = { ...listener, address, family: familyOfAddress(address) };
    const v6Only = listensV6Only(endpoint, protocol, listeners);
    const outcome = await tryListen(endpoint, protocol, v6Only);
    if (!('close' in outcome)) return listenResult(listener, endpoint, protocol, outcome, listeners);
    held.push(outcome);
  }
  const each = protocol === 'udp' && isWildcard(listener.address)
    ? ` (each of the ${addresses.length} addresses relay binds now: ${addresses.join(', ')})` : '';
  const v6Only = listensV6Only(listener, protocol, listeners);
  const mode = listener.address === '::' && protocol === 'tcp'
    ? v6Only ? ' (IPv6 only: relay also listens on IPv4 there)' : ' (IPv4 and IPv6)' : '';
  return ok(`listen ${protocol} ${formatEndpoint(listener.address, listener.port)}`, `free, and relay may bind it${mode}${each}`);
}

/** A listener that failed to bind at endpoint (the listener itself, or one address a UDP wildcard stands for). */
function listenResult(listener: Endpoint, endpoint: Endpoint, protocol: 'tcp' | 'udp',
  err: NodeJS.ErrnoException, listeners: readonly Endpoint[]): CheckResult {
  const name = `listen ${protocol} ${formatEndpoint(listener.address, listener.port)}`;
  if (err.code === 'EADDRINUSE') {
    const owners = findListenerOwners(protocol, listener.port);
    const relays = owners.filter((o) => o.isRelay);
    if (relays.length > 0 && relays.length === owners.length) {
      return ok(name, `in use by relay itself (${describeOwner(relays[0])}): the service is up`);
    }
    const mine = listeners.filter((l) => l !== listener && l.port === listener.port);
    if (owners.length === 0 && mine.length > 0) {
      const others = mine.map((l) => formatEndpoint(l.address, l.port)).join(', ');
      return { name, status: 'fail', detail: `${err.syscall ?? 'listen'} EADDRINUSE: it clashes with relay's own listen on ${others}`,
        fix: [`drop one of --listen ${formatEndpoint(listener.address, listener.port)} and --listen ${others}`] };
    }
    return { name, status: 'fail', detail: `${describeError(listenError(err, endpoint))}` +
      `${owners.length > 0 ? `; held by ${owners.map(describeOwner).join(', ')}` : ''}`,
    fix: ['stop what listens there (ss -lntup), or choose another --listen'] };
  }
  return { name, status: 'fail', detail: describeError(listenError(err, endpoint)),
    fix: err.code === 'EACCES' ? ['grant CAP_NET_BIND_SERVICE (AmbientCapabilities= in the unit), or listen on a port >= 1024'] : [] };
}

function describeOwner(owner: ListenerOwner): string {
  const command = owner.command.length > 100 ? `${owner.command.slice(0, 100)}...` : owner.command;
  return `pid ${owner.pid}${command ? ` '${command}'` : ''}`;
}

/** Bind (and listen, for TCP) as relay would; the caller closes what is returned. */
function tryListen(listener: Endpoint, protocol: 'tcp' | 'udp', v6Only: boolean): Promise<{ close(): void } | NodeJS.ErrnoException> {
  return new Promise((resolve) => {
    if (protocol === 'tcp') {
      const server = net.createServer();
      server.once('error', (err) => resolve(err as NodeJS.ErrnoException));
      server.listen({ host: listener.address, port: listener.port, ipv6Only: v6Only, exclusive: true }, () =>
        resolve({ close: () => server.close() }));
    } else {
      const socket = dgram.createSocket({ type: listener.family === 4 ? 'udp4' : 'udp6', ipv6Only: v6Only });
      socket.once('error', (err) => { socket.close(); resolve(err as NodeJS.ErrnoException); });
      socket.bind({ address: listener.address, port: listener.port, exclusive: true }, () =>
        resolve({ close: () => socket.close() }));
    }
  });
}

/**
 * relay itself never needs forwarding (replies are delivered locally); a
 * relay host that is also its backends' gateway (recipe b) does, for their
 * other traffic. Informational, so always OK.
 */
function checkForwarding(family: Family): CheckResult {
  const file = family === 4 ? '/proc/sys/net/ipv4/ip_forward' : '/proc/sys/net/ipv6/conf/all/forwarding';
  const on = readSysctl(file) === 1;
  return ok(`forwarding (IPv${family})`, `${on ? 'on' : 'off'}: relay does not need it; ` +
    'a relay host that is also the backends\' gateway needs it on for their other traffic');
}

/**
 * The raw UDP engine's flows are conntrack entries (its rules read their
 * mark there): a conntrack table smaller than the session table drops new
 * flows once full, whatever --max-sessions says.
 */
function checkRawEngine(config: RelayConfig): CheckResult[] {
  if (config.udpEngine !== 'raw' || !config.protocols.includes('udp')) return [];
  const name = 'udp-engine raw: conntrack table';
  const max = readSysctl('/proc/sys/net/netfilter/nf_conntrack_max');
  if (max === undefined) {
    return [{ name, status: 'warn', detail: 'nf_conntrack_max cannot be read: conntrack is not loaded in this namespace yet',
      fix: ['relay routes apply --udp-engine raw (its rules load conntrack), then run doctor again'] }];
  }
  if (max > config.maxSessions) return [ok(name, `nf_conntrack_max ${max} > --max-sessions ${config.maxSessions}`)];
  return [{ name, status: 'warn',
    detail: `nf_conntrack_max ${max} <= --max-sessions ${config.maxSessions}: new flows are dropped once conntrack is full`,
    fix: [`sysctl -w net.netfilter.nf_conntrack_max=${Math.max(2 * config.maxSessions, 65_536)} (and in /etc/sysctl.d/ to keep it)`] }];
}

function readSysctl(file: string): number | undefined {
  try {
    return Number(fs.readFileSync(file, 'utf8').trim());
  } catch {
    return undefined;
  }
}

/**
 * Strict reverse-path filtering on the interface a backend's replies arrive
 * on passes them only while the route back to the backend leaves by that same
 * interface: it works, by luck of a symmetric path. Loose (2) keeps the check
 * without that dependence. IPv6 has no rp_filter sysctl.
 */
function rpFilterWarning(backend: Endpoint, iif: string | undefined): { detail: string; fix: string } | undefined {
  if (backend.family !== 4 || iif === undefined) return undefined;
  const strict = Math.max(readSysctl('/proc/sys/net/ipv4/conf/all/rp_filter') ?? 0,
    readSysctl(`/proc/sys/net/ipv4/conf/${iif}/rp_filter`) ?? 0) === 1;
  return strict ? { detail: `rp_filter is strict on ${iif}: it passes while the route back to ${backend.address} leaves by ` +
    `${iif}; replies arriving on another interface would be dropped`,
  fix: `rp_filter is strict on ${iif}, loose is enough: sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.${iif}.rp_filter=2` }
    : undefined;
}

interface ProbeOutcome {
  readonly backend: Endpoint;
  readonly protocol: 'tcp' | 'udp';
  result: CheckResult;
  /** Set when the reply did not come back: the symptom of a broken return path. */
  readonly returnPath?: boolean;
}

/**
 * PROXY protocol: who may name a client (proxy-from), and what the
 * deployment needs (upstream-source relay: no return path at all).
 */
export function checkProxyProtocol(run: RelayConfig): CheckResult[] {
  const results: CheckResult[] = [];
  const ingress = run.proxyProtocol;
  if (ingress) {
    const name = `PROXY protocol ${ingress.version} in: proxy-from`;
    const everyone = ingress.from.filter((c) => c.endsWith('/0'));
    if (ingress.from.length === 0) {
      results.push({ name, status: 'fail', detail: 'not set: any sender could make relay spoof any address',
        fix: ["proxy-from = [\"ADDRESS/LEN\"] with your fronts' addresses only (e.g. the load balancer's subnet)"] });
    } else if (everyone.length > 0) {
      results.push({ name, status: 'warn', detail: `${everyone.join(', ')} trusts every sender: anyone who reaches ` +
        'the listener can make relay connect from any address', fix: ["narrow proxy-from to your fronts' addresses"] });
    } else {
      results.push(ok(name, `${ingress.from.join(', ')}: only these fronts may name a client; others are refused`));
    }
  }
  if (run.upstreamSource === 'relay') {
    results.push(ok('upstream-source relay', "relay connects to backends from its own address: they need no return " +
      'path through relay, no routes, no IP_TRANSPARENT' + (run.sendProxy ? `; the client is in the ${run.sendProxy} header` :
      "; backends see relay's address, not the client's (add send-proxy to tell them)")));
  } else if (run.sendProxy) {
    results.push(ok(`send-proxy ${run.sendProxy}`, "backends get a header naming the client and still see the client's " +
      'address (upstream-source client): they need the return path below; upstream-source relay would not'));
  }
  return results;
}

async function checkEndToEnd(backend: Endpoint, protocol: 'tcp' | 'udp', options: DoctorOptions,
  returnPaths: readonly ReturnPath[], source: string): Promise<ProbeOutcome> {
  if (options.run.upstreamSource === 'relay') return probeFromRelay(backend, protocol, options);
  const mapped = source !== options.probeSources[backend.family] ? ` (${options.probeSources[4]} in --map-ipv4-prefix)` : '';
  const name = `end to end ${protocol} ${formatEndpoint(backend.address, backend.port)} from ${source}${mapped}`;
  if (protocol === 'udp' && !options.run.health.udpProbe) {
    // Not a failure: relay cannot guess a datagram the service answers, and
    // `relay --check` must not refuse to start for want of one.
    return { backend, protocol, result: ok(name, 'not checked: give --health-udp-probe HEX (e.g. a DNS query) to check UDP end to end') };
  }
  const failure = protocol === 'tcp' ? await probeTcp(backend, source, options.probeTimeoutMs, options.run.sendProxy)
    : await probeUdp(backend, source, options);
  if (failure === undefined) return { backend, protocol, result: ok(name, 'the backend\'s reply came back through relay') };
  if (!failure.returnPath) return { backend, protocol, result: { name, status: 'fail', detail: failure.detail, fix: failure.fix ?? [] } };
  const hostSide = returnPaths.find((p) => p.backend.address === backend.address)?.verdict;
  if (protocol === 'udp' && options.run.udpEngine === 'raw' && rawEngineRulesMissing(options.routes, backend.family)) {
    return { backend, protocol, returnPath: true, result: { name, status: 'fail', detail: `${failure.detail}; ` +
      "relay's nftables table lacks the raw engine's rules", fix: ['relay routes apply --udp-engine raw'] } };
  }
  if (hostSide && !hostSide.delivered) {
    return { backend, protocol, returnPath: true, result: { name, status: 'fail', detail: `${failure.detail}; ` +
      'the relay host does not deliver such replies locally', fix: ['first the relay host\'s return path (its line above), then run doctor again'] } };
  }
  return { backend, protocol, returnPath: true, result: { name, status: 'fail', detail: `${failure.detail}; the relay host ` +
    'would deliver such replies locally, so the backend did not send them back through it', fix: recipeFor(backend, options.routes) } };
}

/**
 * A PROXY service's front path, as the operator's front will use it: when
 * relay is serving, a TCP connection to its own listener from an address of
 * this host inside proxy-from, with a header naming the probe source as the
 * client (the identity the end-to-end lines above probe from); over UDP a
 * datagram with a v2 header and --health-udp-probe. Where doctor cannot do
 * that (relay not running, no address of this host inside proxy-from, no UDP
 * probe), the line says so rather than pass in silence.
 */
async function checkThroughRelay(options: DoctorOptions): Promise<CheckResult[]> {
  const ingress = options.run.proxyProtocol;
  if (!ingress || ingress.from.length === 0) return [];
  const trusted = trustedSenders(ingress.from);
  const results: CheckResult[] = [];
  for (const listener of options.run.listeners) {
    for (const protocol of options.run.protocols) {
      const name = `through relay ${protocol} ${formatEndpoint(listener.address, listener.port)} with a PROXY header`;
      const front = localAddresses().find((a) => trusted(a) && (isWildcard(listener.address) || familyOfAddress(a) === listener.family));
      const notChecked = (why: string) => results.push(ok(name, `not checked: ${why}`));
      if (protocol === 'udp' && !options.run.health.udpProbe) {
        notChecked('give --health-udp-probe HEX (e.g. a DNS query) to send a datagram through relay');
      } else if (!findListenerOwners(protocol, listener.port).some((o) => o.isRelay)) {
        notChecked('relay is not running; run doctor again while it serves to check the path a front takes');
      } else if (!front) notChecked(`no address of this host is inside proxy-from (${ingress.from.join(', ')}) to send it from`);
      else if (protocol === 'udp') results.push(await probeUdpThroughRelay(name, listener, front, options));
      else results.push(await probeThroughRelay(name, listener, front, ingress.version === 'v1' ? 'v1' : 'v2', options));
    }
  }
  return results;
}

/** This host's addresses (the interfaces' own, loopback included), in the kernel's order. */
function localAddresses(): string[] {
  return Object.values(os.networkInterfaces()).flatMap((list) => (list ?? []).map((i) => i.address));
}

/** How long the probe holds the connection before its FIN: a refused header is closed at once, well within it. */
const HOLD_BEFORE_FIN_MS = 500;

/**
 * Connect from front to relay's listener, send a header naming the probe
 * source, hold, then FIN. relay resets a client whose upstream never
 * connected, and closes at once one whose header it refused; a FIN that comes
 * back after ours went through a connected upstream and the backend's close.
 */
function probeThroughRelay(name: string, listener: Endpoint, front: string, version: 'v1' | 'v2',
  options: DoctorOptions): Promise<CheckResult> {
  const family = familyOfAddress(front);
  const client = options.probeSources[family];
  const target = isWildcard(listener.address) ? front : listener.address;
  const said = `from ${front}, a ${version} header naming ${client}`;
  return new Promise((resolve) => {
    const socket = net.connect({ host: target, port: listener.port, localAddress: front, allowHalfOpen: true });
    let sentFin = false;
    let finTimer: NodeJS.Timeout | undefined;
    const finish = (result: CheckResult) => {
      clearTimeout(finTimer);
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish({ name, status: 'warn', detail: `${said}: no close within ` +
      `${HOLD_BEFORE_FIN_MS + options.probeTimeoutMs} ms (relay may still be connecting to a backend)` }),
    HOLD_BEFORE_FIN_MS + options.probeTimeoutMs);
    socket.once('connect', () => {
      socket.write(writeProxyHeader(version, 'stream', { address: client, port: 0 },
        { address: socket.localAddress ?? target, port: listener.port }));
      finTimer = setTimeout(() => { sentFin = true; socket.end(); }, HOLD_BEFORE_FIN_MS);
    });
    socket.once('data', () => finish(ok(name, `${said}: the backend answered through relay`)));
    socket.once('end', () => finish(sentFin
      ? ok(name, `${said}: relay took the header, connected a backend as ${client} and passed the close both ways`)
      : { name, status: 'fail', detail: `${said}: relay closed it before a byte came back: it refused the header ` +
        '(the running relay trusts other fronts, or reads another version) or the backend closed at once',
      fix: ['compare the running relay\'s proxy-protocol and proxy-from with these flags; its log names the reason'] }));
    // A reset is either: relay could not connect a backend, or it refused the
    // header and closed with the header still unread (the kernel then resets).
    socket.once('error', (err: NodeJS.ErrnoException) => finish(err.code === 'ECONNRESET'
      ? { name, status: 'fail', detail: `${said}: relay reset the connection: it refused the header (the running relay ` +
        `trusts other fronts, or reads another version) or could not connect a backend for ${client}`,
      fix: ['compare the running relay\'s proxy-protocol and proxy-from with these flags; its log names the reason',
        'see the end-to-end lines above for the backend'] }
      : { name, status: 'fail', detail: `${said}: connect ${err.code}` }));
  });
}

/**
 * A datagram from front to relay's UDP listener: a v2 header naming the probe
 * source, then --health-udp-probe. relay sends the backend's reply back to the
 * front as the backend sent it (go-mmproxy's way), so any reply means relay
 * took the header, opened a session as the probe source and the reply found
 * its way back; silence is a refused header, or a backend or return path that
 * did not answer (the end-to-end lines above tell those apart).
 */
function probeUdpThroughRelay(name: string, listener: Endpoint, front: string, options: DoctorOptions): Promise<CheckResult> {
  const family = familyOfAddress(front);
  const client = options.probeSources[family];
  const target = isWildcard(listener.address) ? front : listener.address;
  const said = `from ${front}, a v2 header naming ${client}`;
  return new Promise((resolve) => {
    const socket = dgram.createSocket(family === 4 ? 'udp4' : 'udp6');
    let done = false;
    const finish = (result: CheckResult) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.close();
      resolve(result);
    };
    const timer = setTimeout(() => finish({ name, status: 'fail', detail: `${said}: no reply through relay within ` +
      `${options.probeTimeoutMs} ms: the running relay refused the header (it trusts other fronts) or the backend did not answer`,
    fix: ['compare the running relay\'s proxy-protocol and proxy-from with these flags; its log names the reason',
      'see the end-to-end lines above for the backend'] }), options.probeTimeoutMs);
    socket.once('message', () => finish(ok(name, `${said}: relay took the header and the backend's reply came back through it`)));
    socket.once('error', (err: NodeJS.ErrnoException) => finish({ name, status: 'fail', detail: `${said}: ${err.code}` }));
    socket.bind({ address: front, port: 0 }, () => {
      const header = writeProxyHeader('v2', 'dgram', { address: client, port: 0 }, { address: target, port: listener.port });
      socket.send(Buffer.concat([header, options.run.health.udpProbe!]), listener.port, target);
    });
  });
}

/**
 * Where the kernel's route lookup and a probe disagree, both are printed and
 * the probe decides: a reply that came back was delivered, whatever the
 * lookup said (iptables marks, say, which doctor does not read).
 */
function settleWithProbes(returnPaths: ReturnPath[], probes: readonly ProbeOutcome[]): void {
  for (const path of returnPaths) {
    if (path.verdict.delivered) continue;
    const answered = probes.find((p) => p.backend.address === path.backend.address && p.result.status === 'ok' &&
      p.result.detail?.includes('came back'));
    if (answered) {
      path.delivered = true;
      path.result = ok(path.result.name, `the route lookup says: ${path.verdict.detail}; but the end-to-end ${answered.protocol} ` +
        'probe\'s reply came back through relay, and the probe decides: something the lookup does not see delivers them');
    }
  }
}

/**
 * A probe that failed because the relay host's rules leave its backend out
 * (a WARN on its return path line, as other backends pass) is the same
 * finding: a WARN too, not a FAIL. A backend whose own return path or
 * service fails stays a FAIL: its clients wait --connect-timeout each.
 */
function gradePartial(probes: ProbeOutcome[], returnPaths: readonly ReturnPath[]): ProbeOutcome[] {
  for (const probe of probes) {
    const hostSide = returnPaths.find((p) => p.backend.address === probe.backend.address);
    if (probe.result.status !== 'fail' || !probe.returnPath || hostSide?.result.status !== 'warn' || hostSide.delivered) continue;
    probe.result = { ...probe.result, status: 'warn', detail: `${probe.result.detail} (as its return path line says)` };
  }
  return probes;
}

interface ProbeFailure {
  detail: string;
  /** The symptom of a missing backend return route: print the recipe. */
  returnPath?: boolean;
  fix?: string[];
}

/**
 * The backend's recipe, its alternatives labelled: '(a) cmd' and '(b) cmd'
 * are one or the other, never both (pasting (b) after (a) sends all of the
 * backend's traffic to a relay host that may not forward).
 */
function recipeFor(backend: Endpoint, routes: RoutesConfig): string[] {
  const recipe = backendRecipes({ ...routes, backends: [backend] }).filter((l) => l !== '');
  let label = '';
  return recipe.map((line) => {
    const alternative = /^# \((\w)\)/.exec(line);
    if (alternative) label = alternative[1];
    return line.startsWith('#') || label === '' ? line : `(${label}) ${line}`;
  });
}

/** upstream-source relay: the probe is an ordinary connect (or datagram) from relay's own address. */
async function probeFromRelay(backend: Endpoint, protocol: 'tcp' | 'udp', options: DoctorOptions): Promise<ProbeOutcome> {
  const name = `end to end ${protocol} ${formatEndpoint(backend.address, backend.port)} from relay's own address`;
  if (protocol === 'udp' && !options.run.health.udpProbe) {
    return { backend, protocol, result: ok(name, 'not checked: give --health-udp-probe HEX to check UDP end to end') };
  }
  const failure = protocol === 'tcp' ? await probeTcp(backend, undefined, options.probeTimeoutMs, options.run.sendProxy)
    : await probeUdp(backend, undefined, options);
  return { backend, protocol, result: failure ? { name, status: 'fail', detail: failure.detail, fix: failure.fix ?? [] }
    : ok(name, "the backend answered") };
}

/**
 * With send-proxy, what the backend expects first: a header naming the probe's
 * source as the client (the probe is a client like any other).
 */
function probeHeader(sendProxy: 'v1' | 'v2', transport: 'stream' | 'dgram', source: string | undefined, backend: Endpoint): Buffer {
  const client = source ?? (backend.family === 4 ? '0.0.0.0' : '::');
  return writeProxyHeader(sendProxy, transport, { address: client, port: 0 }, backend);
}

/** source undefined: from relay's own address (upstream-source relay). */
function probeTcp(backend: Endpoint, source: string | undefined, timeoutMs: number,
  sendProxy?: 'v1' | 'v2'): Promise<ProbeFailure | undefined> {
  return new Promise((resolve) => {
    let socket: net.Socket;
    try {
      socket = source === undefined ? net.connect({ host: backend.address, port: backend.port })
        : connectTransparent({ transport: 'tcp', address: source, port: 0 }, backend);
    } catch (err) {
      resolve({ detail: describeError(err) });
      return;
    }
    const finish = (failure: ProbeFailure | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(failure);
    };
    const timer = setTimeout(() => finish({ returnPath: source !== undefined,
      detail: source === undefined ? `no answer to a connect within ${timeoutMs} ms`
        : `no answer to a connect from ${source} within ${timeoutMs} ms: the SYN-ACK did not come back through relay` }),
    timeoutMs);
    socket.once('connect', () => {
      // A backend that reads PROXY headers logs a connection without one as an error: send what relay would.
      if (sendProxy) socket.end(probeHeader(sendProxy, 'stream', source, backend), () => finish(undefined));
      else finish(undefined);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => finish(err.code === 'ECONNREFUSED'
      ? { detail: 'connection refused: the backend answered through relay, but nothing listens on that port',
        fix: [`start the service on ${formatEndpoint(backend.address, backend.port)}`] }
      : { detail: `connect ${err.code}`, returnPath: err.code === 'ETIMEDOUT' }));
  });
}

/**
 * An unconnected socket, so a reply from another source address (a service on
 * a wildcard address answering from the host's primary address) is seen and named.
 */
function probeUdp(backend: Endpoint, source: string | undefined, options: DoctorOptions): Promise<ProbeFailure | undefined> {
  const probe = options.run.health.udpProbe;
  if (!probe) {
    return Promise.resolve(undefined);
  }
  return new Promise((resolve) => {
    let socket: ProbeSocket;
    try {
      socket = source !== undefined && options.run.udpEngine === 'raw' ? rawEngineProbeSocket(source, backend)
        : datagramProbeSocket(backend, source);
    } catch (err) {
      resolve({ detail: describeError(err) });
      return;
    }
    const finish = (failure: ProbeFailure | undefined) => {
      clearTimeout(timer);
      socket.close();
      resolve(failure);
    };
    const timer = setTimeout(() => finish({ returnPath: true,
      detail: source === undefined ? `no reply to the probe within ${options.probeTimeoutMs} ms`
        : `no reply to the probe from ${source} within ${options.probeTimeoutMs} ms: the reply did not come back ` +
        'through relay (no return route, or the service answered from another address)' +
        (options.run.udpEngine === 'raw' ? ", or relay's raw-engine rules are missing (relay routes apply --udp-engine raw)" : '') }),
    options.probeTimeoutMs);
    socket.onMessage((address, port) => {
      if (address === backend.address && port === backend.port) return finish(undefined);
      finish({ detail: `the reply came from ${formatEndpoint(address, port)}, not ${formatEndpoint(backend.address, backend.port)}: ` +
        'the service listens on a wildcard address and answers from another source', fix: [
        `bind the service to ${backend.address} itself (dnsmasq: --bind-interfaces --listen-address=${backend.address})`,
      ] });
    });
    socket.onError((code) => finish({ detail: `probe ${code}` }));
    // send-proxy: the backend reads a v2 header before each datagram, the probe's too.
    socket.send(options.run.sendProxy ? Buffer.concat([probeHeader('v2', 'dgram', source, backend), probe]) : probe);
  });
}

/** What the UDP probe needs of its socket, whichever path it takes. */
interface ProbeSocket {
  send(datagram: Buffer): void;
  onMessage(handler: (address: string, port: number) => void): void;
  onError(handler: (code: string) => void): void;
  close(): void;
}

/**
 * A socket of the probe's own, transparent from source (the socket engine's
 * path), or relay's own address when source is undefined. Unconnected, so a
 * reply from another source address (a service on a wildcard address
 * answering from the host's primary address) is seen and named.
 */
function datagramProbeSocket(backend: Endpoint, source: string | undefined): ProbeSocket {
  const socket = source === undefined ? dgram.createSocket(backend.family === 4 ? 'udp4' : 'udp6')
    : bindTransparentUdp({ address: source, port: 0 });
  return {
    send: (datagram) => socket.send(datagram, backend.port, backend.address),
    onMessage: (handler) => socket.on('message', (_msg, rinfo) => handler(rinfo.address, rinfo.port)),
    onError: (handler) => socket.on('error', (err: NodeJS.ErrnoException) => handler(err.code ?? 'error')),
    close: () => socket.close(),
  };
}

/**
 * --udp-engine raw: the probe takes the raw engine's own path (a raw socket
 * sends from source, relay's nft rules bring the reply to the engine's
 * receive socket), so it checks those rules end to end. A running relay holds
 * a slot of its own: the probe takes another.
 */
function rawEngineProbeSocket(source: string, backend: Endpoint): ProbeSocket {
  const engine = acquireRawUdpEngine();
  let flow;
  try {
    flow = engine.flowFrom(source, 0);
  } catch (err) {
    releaseRawUdpEngine();
    throw err;
  }
  flow.connect(backend.address, backend.port);
  let onMessage: (address: string, port: number) => void = () => undefined;
  let onError: (code: string) => void = () => undefined;
  flow.receive({ message: (_datagram, address, port) => onMessage(address, port), error: (err) => onError(err.code) });
  return {
    send: (datagram) => {
      flow.send(datagram);
    },
    onMessage: (handler) => {
      onMessage = handler;
    },
    onError: (handler) => {
      onError = handler;
    },
    close: () => {
      flow.close();
      releaseRawUdpEngine();
    },
  };
}

const STATUS_WORD: Record<CheckStatus, string> = { ok: 'OK  ', warn: 'WARN', fail: 'FAIL' };

export function formatResults(results: readonly CheckResult[]): string {
  const lines: string[] = [];
  for (const r of results) {
    lines.push(`${STATUS_WORD[r.status]}  ${r.name}${r.detail ? `: ${r.detail}` : ''}`);
    // Commands get a "fix:" each, alternatives "fix (a):"; the recipe's comment lines are indented under them.
    if (r.status === 'ok') continue;
    for (const fix of r.fix ?? []) {
      const alternative = /^\((\w)\) (.*)$/.exec(fix);
      lines.push(fix.startsWith('#') ? `           ${fix}` : alternative ? `  fix (${alternative[1]}): ${alternative[2]}` : `      fix: ${fix}`);
    }
  }
  lines.push(summary(results));
  return lines.join('\n') + '\n';
}

function summary(results: readonly CheckResult[]): string {
  const failed = results.filter((r) => r.status === 'fail').length;
  const warned = results.filter((r) => r.status === 'warn').length;
  const warnings = warned === 0 ? '' : `, ${warned} with a warning`;
  return failed === 0 ? `all ${results.length} checks passed${warnings}` : `${failed} of ${results.length} checks failed${warnings}`;
}

/** relay doctor's exit status, and --check's verdict: only a FAIL stops. */
export function anyFailed(results: readonly CheckResult[]): boolean {
  return results.some((r) => r.status === 'fail');
}
