// Flags -> a frozen, typed config. Each flag is declared once, in FLAGS: the
// parser, the defaults and `relay --help` are all built from that table.
import { parseArgs } from 'node:util';
import { ConfigError, echo } from './errors';
import * as net from 'node:net';
import {
  Endpoint, parseEndpoint, normalize, formatEndpoint, backendAddressProblem, listenAddressProblem, relayAddressProblem,
  isWildcard, isLoopback,
} from './addr';
import { parseDuration, formatDuration } from './duration';
import { Algorithm, ALGORITHMS, WeightedBackend, parseAlgorithm, parseBackend } from './balance';
import type { HealthOptions } from './health';
import type { Family } from './sys/sockaddr';
import { MapPrefix, parseMapPrefix } from './map-prefix';
import type { ProxyVersionMode, SendProxyVersion } from './proxy-protocol';
import { parseCidrList } from './proxy-protocol/trust';

export type Protocol = 'tcp' | 'udp';
export type FamilyMismatchPolicy = 'reject' | 'masquerade';
/** Where an upstream connection comes from: the client's address (transparent) or relay's own. */
export type UpstreamSource = 'client' | 'relay';

/** A service that reads a PROXY protocol header from its fronts before anything else. */
export interface ProxyIngress {
  readonly version: ProxyVersionMode;
  /** The fronts trusted to name a client: CIDRs, canonical ("192.0.2.0/24"). */
  readonly from: readonly string[];
  readonly headerTimeoutMs: number;
  /** UDP: put a v2 header before each reply to the front too. */
  readonly replyHeader: boolean;
}

export type UdpEngine = 'socket' | 'raw';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface RelayConfig {
  readonly protocols: readonly Protocol[];
  readonly listeners: readonly Endpoint[];
  readonly backends: readonly WeightedBackend[];
  readonly balance: Algorithm;
  readonly health: HealthOptions;
  readonly keepClientPort: boolean;
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly drainTimeoutMs: number;
  readonly onFamilyMismatch: FamilyMismatchPolicy;
  /** IPv4 clients of IPv6 backends are relayed from this prefix + their address (RFC 6052); none: --on-family-mismatch. */
  readonly mapIpv4Prefix?: MapPrefix;
  readonly maxConns: number;
  readonly maxSessions: number;
  readonly sessionTimeoutMs: number;
  /** Close a UDP session after this many replies; 0 = no limit. */
  readonly udpResponses: number;
  /** How UDP sessions reach backends: a socket each, or the raw engine (one raw socket, tproxy for replies). Process-wide. */
  readonly udpEngine: UdpEngine;
  readonly mark: number;
  /** PROXY protocol in (proxy-protocol); absent: the service reads no header. */
  readonly proxyProtocol?: ProxyIngress;
  /** PROXY protocol out (send-proxy): a header before each connection's (datagram's) bytes to the backend. */
  readonly sendProxy?: SendProxyVersion;
  readonly upstreamSource: UpstreamSource;
  readonly logLevel: LogLevel;
  /**
   * Set in worker processes (--workers): every listener joins a SO_REUSEPORT
   * group with the other workers' (not a flag of its own).
   */
  readonly reusePort?: boolean;
}

export interface RoutesConfig {
  readonly fwmark: number;
  readonly table: number;
  readonly rulePriority: number;
  readonly backends: readonly Endpoint[];
  readonly relayAddresses: readonly string[];
  /** --map-ipv4-prefix: the relay host delivers replies to them locally; backends route them via relay. */
  readonly mapIpv4Prefixes?: readonly MapPrefix[];
  /** udp-engine raw: the nftables table also steers the raw engine's replies to its receive socket. */
  readonly udpEngine?: UdpEngine;
}

/** A run's config with what its --check (and doctor) needs: the routes to look for and the probes. */
export interface RunOptions {
  readonly run: RelayConfig;
  readonly routes: RoutesConfig;
  /** Client-like source addresses for the end-to-end probes, one per family. */
  readonly probeSources: Readonly<Record<Family, string>>;
  readonly probeTimeoutMs: number;
}

/** What the host checks read from the host: given, so that building a config stays pure. */
export interface HostFacts {
  /** This host's own addresses. */
  readonly addresses: readonly string[];
  /** `ip -j rule show`, both families: the rules that might route relay's upstream packets. */
  readonly rules: readonly IpRule[];
}

/** One rule as `ip -j rule show` lists it (the fields relay reads). */
export interface IpRule {
  readonly priority?: number;
  readonly fwmark?: string;
  readonly fwmask?: string;
  readonly table?: string;
  /** Source selector: 'all', or an address with srclen. */
  readonly src?: string;
  readonly srclen?: number;
  readonly iif?: string;
  /** Present (null) on a negated rule ('not from ...'). */
  readonly not?: null;
}

export const DEFAULTS = {
  connectTimeoutMs: 5_000,
  idleTimeoutMs: 600_000,
  drainTimeoutMs: 30_000,
  maxConns: 4096,
  maxSessions: 8192,
  healthIntervalMs: 2000,
  healthTimeoutMs: 1000,
  healthRise: 2,
  healthFall: 3,
  sessionTimeoutMs: 30_000,
  onFamilyMismatch: 'reject' as FamilyMismatchPolicy,
  // Distinctive values so relay's rule and table never collide with an
  // operator's own and `routes remove` can tell which ones are relay's.
  fwmark: 0x5e1a,
  table: 2017,
  rulePriority: 2017,
  probeTimeoutMs: 2000,
  proxyHeaderTimeoutMs: 3000,
};

/** Not the relay's own and not a real client's: TEST-NET-1's last address, and its IPv6 counterpart. */
export const DEFAULT_PROBE_SOURCES: Readonly<Record<Family, string>> = { 4: '192.0.2.254', 6: '2001:db8:ffff::fe' };

export interface FlagSpec {
  type: 'string' | 'boolean';
  multiple?: boolean;
  short?: string;
  value?: string;
  help: string;
}

/** What a relay does: shared by a run and by doctor, which checks a run's setup. */
export const DATA_PATH_FLAGS: Record<string, FlagSpec> = {
  proto: { type: 'string', value: 'tcp|udp|tcp,udp', help: 'protocols to relay on every --listen (default tcp)' },
  listen: { type: 'string', multiple: true, value: 'ADDR:PORT',
    help: 'where clients connect; repeatable. [::]:PORT also takes IPv4 clients' },
  backend: { type: 'string', multiple: true, value: 'ADDR:PORT[,weight=N]',
    help: "where to relay to; repeatable. Clients go to backends of their own address family when one is up" },
  balance: { type: 'string', value: ALGORITHMS.join('|'),
    help: 'how to choose a backend (default roundrobin, weighted); source and maglev keep a client on one backend' },
  'health-interval': { type: 'string', value: 'DURATION',
    help: `active health checks every DURATION; 0 turns them off (default ${formatDuration(DEFAULTS.healthIntervalMs)}). ` +
      'TCP: a connect; UDP: only with --health-udp-probe' },
  'health-timeout': { type: 'string', value: 'DURATION',
    help: `a check fails after this (default ${formatDuration(DEFAULTS.healthTimeoutMs)})` },
  'health-rise': { type: 'string', value: 'N', help: `a down backend is up after N passed checks in a row (default ${DEFAULTS.healthRise})` },
  'health-fall': { type: 'string', value: 'N',
    help: `an up backend is down after N failures in a row, checks or real traffic (default ${DEFAULTS.healthFall})` },
  'health-udp-probe': { type: 'string', value: 'HEX',
    help: 'UDP: a datagram (hex) the backend must answer, e.g. a DNS query; without it UDP health is passive only' },
  'keep-client-port': { type: 'boolean',
    help: "bind upstream to the client's port too (falls back to an ephemeral port if in use)" },
  'connect-timeout': { type: 'string', value: 'DURATION',
    help: `give up on a backend connect after this (default ${formatDuration(DEFAULTS.connectTimeoutMs)})` },
  'idle-timeout': { type: 'string', value: 'DURATION',
    help: `close a connection with no traffic either way for this long; 0 disables (default ${formatDuration(DEFAULTS.idleTimeoutMs)})` },
  'drain-timeout': { type: 'string', value: 'DURATION',
    help: `on SIGTERM/SIGINT, wait this long for open connections; 0 closes them at once (default ${formatDuration(DEFAULTS.drainTimeoutMs)})` },
  'on-family-mismatch': { type: 'string', value: 'reject|masquerade',
    help: "client and backend families differ, so the client's address cannot be kept: " +
      "reject closes the client (TCP) or drops its datagrams (UDP), the default; masquerade connects from relay's own address" },
  'map-ipv4-prefix': { type: 'string', value: 'PREFIX/96',
    help: 'an IPv4 client going to an IPv6 backend is relayed from PREFIX + its IPv4 address (RFC 6052; /32, /40, /48, ' +
      '/56 and /64 too), so the backend sees it; the backends route PREFIX via relay (docs/ipv6.md)' },
  'max-conns': { type: 'string', value: 'N',
    help: `close new clients at once past N open connections (default ${DEFAULTS.maxConns})` },
  'max-sessions': { type: 'string', value: 'N',
    help: `UDP: at most N client sessions (one upstream socket each); the least recently used is closed past it (default ${DEFAULTS.maxSessions})` },
  'session-timeout': { type: 'string', value: 'DURATION',
    help: `UDP: close a session with no datagram either way for this long (default ${formatDuration(DEFAULTS.sessionTimeoutMs)})` },
  'udp-responses': { type: 'string', value: 'N',
    help: 'UDP: close a session once the backend sent N replies per client datagram, e.g. 1 for DNS (default 0: no limit)' },
  'udp-engine': { type: 'string', value: 'socket|raw',
    help: 'UDP: socket (an upstream socket per session, the default) or raw (no socket per session: one raw socket sends, ' +
      'replies come back by nftables tproxy; needs `relay routes apply --udp-engine raw`; docs/udp.md)' },
  mark: { type: 'string', value: 'N',
    help: "SO_MARK for upstream packets, e.g. for the operator's own policy routing; must differ from --fwmark " +
      "and from the fwmark of any rule that looks up --table (default none)" },
  'proxy-protocol': { type: 'string', value: 'v1|v2|any',
    help: "read a PROXY protocol header from the front first; its client becomes the connection's client " +
      '(TCP: v1, v2 or any; UDP: v2 before each datagram). Needs --proxy-from' },
  'proxy-from': { type: 'string', multiple: true, value: 'CIDR',
    help: 'with --proxy-protocol: the fronts trusted to send a header; repeatable. Others are refused' },
  'proxy-header-timeout': { type: 'string', value: 'DURATION',
    help: `close a front's connection whose header is not complete after this (default ${formatDuration(DEFAULTS.proxyHeaderTimeoutMs)})` },
  'proxy-reply-header': { type: 'boolean',
    help: 'UDP with --proxy-protocol: put a v2 header before each reply to the front (default: replies as the backend sent them)' },
  'send-proxy': { type: 'string', value: 'v1|v2',
    help: "write a PROXY protocol header with the client's address to every backend (UDP: v2 before each datagram)" },
  'upstream-source': { type: 'string', value: 'client|relay',
    help: "connect to backends from the client's address (client, the default) or from relay's own (relay: " +
      'with --send-proxy, backends then need no return path)' },
  'log-level': { type: 'string', value: 'LEVEL', help: 'fatal|error|warn|info|debug|trace|silent (default info)' },
};

const HELP_FLAG: FlagSpec = { type: 'boolean', short: 'h', help: 'show this help' };

export const ROUTES_FLAGS: Record<string, FlagSpec> = {
  config: { type: 'string', value: 'FILE', help: 'take the backends and the routing keys from this configuration file' },
  fwmark: { type: 'string', value: 'N', help: `firewall mark relay's rule matches (default 0x${DEFAULTS.fwmark.toString(16)})` },
  table: { type: 'string', value: 'N', help: `routing table for the local routes (default ${DEFAULTS.table})` },
  priority: { type: 'string', value: 'N', help: `ip rule priority (default ${DEFAULTS.rulePriority})` },
  backend: { type: 'string', multiple: true, value: 'ADDR:PORT',
    help: 'a backend to print the return-path recipe for; repeatable' },
  'relay-address': { type: 'string', multiple: true, value: 'ADDR',
    help: "relay's own address facing the backends, for the backend recipes; one per family " +
      '(default: looked up with ip route get)' },
  'map-ipv4-prefix': { type: 'string', multiple: true, value: 'PREFIX/96',
    help: "a service's --map-ipv4-prefix: checked on the relay host, and routed via relay in the backend recipes; repeatable" },
  'udp-engine': { type: 'string', value: 'socket|raw',
    help: "relay's --udp-engine: raw adds the rules that bring the raw engine's replies to it (default socket)" },
  help: HELP_FLAG,
};

/** What doctor (and a run's --check) needs beyond the data path: the routes to look for, and the probes. */
const CHECK_FLAGS: Record<string, FlagSpec> = {
  fwmark: ROUTES_FLAGS.fwmark,
  table: ROUTES_FLAGS.table,
  priority: ROUTES_FLAGS.priority,
  'probe-source': { type: 'string', multiple: true, value: 'ADDR',
    help: 'client-like source for the end-to-end probes, one per family; not relay\'s own address ' +
      '(default 192.0.2.254 and 2001:db8:ffff::fe)' },
  'probe-timeout': { type: 'string', value: 'DURATION',
    help: `how long an end-to-end probe waits for its answer (default ${formatDuration(DEFAULTS.probeTimeoutMs)})` },
};

/** Where relay writes its pid with --config, and where `relay reload` looks, unless pid-file says otherwise. */
export const DEFAULT_PID_FILE = '/run/relay/relay.pid';

const CONFIG_FLAG: FlagSpec = { type: 'string', value: 'FILE',
  help: 'serve the services of a TOML file (docs/configuration.md); service flags are refused with it' };
const PID_FILE_FLAG: FlagSpec = { type: 'string', value: 'FILE',
  help: `where relay writes its pid and relay reload looks (default with --config: ${DEFAULT_PID_FILE})` };

/** The admin listener: global keys in a file, flags on a run. */
export const ADMIN_FLAGS: Record<string, FlagSpec> = {
  admin: { type: 'string', value: 'ADDR:PORT|PATH',
    help: 'serve GET /metrics (Prometheus), /healthz, /status and POST /backends/SERVICE/ADDR:PORT/drain|enable here; ' +
      'a loopback address or a unix socket path unless --admin-allow-remote (default: none)' },
  'admin-allow-remote': { type: 'boolean',
    help: 'let --admin listen on an address other than loopback; POST then needs the token of --admin-token-file' },
  'admin-token-file': { type: 'string', value: 'FILE',
    help: 'a file holding the bearer token every admin POST must carry (Authorization: Bearer TOKEN)' },
};

/** Where the admin API listens, and who may change things through it. */
export interface AdminOptions {
  readonly listen: { readonly kind: 'tcp'; readonly endpoint: Endpoint } | { readonly kind: 'unix'; readonly path: string };
  readonly allowRemote: boolean;
  /**
   * POST requires the bearer token this file holds. Undefined: on loopback or
   * a unix socket POST needs none; on a remote address every POST is refused.
   */
  readonly tokenFile?: string;
}

/**
 * --admin and its companions, or undefined when there is no admin listener.
 * Off loopback the API can be reached by anyone who can route to relay, and
 * its POSTs take backends out of rotation: so a remote address must be asked
 * for (admin-allow-remote), and then POST always needs the token.
 */
export function buildAdminOptions(values: ParsedValues): AdminOptions | undefined {
  const raw = values.admin;
  const allowRemote = values['admin-allow-remote'] === true;
  const tokenFile = typeof values['admin-token-file'] === 'string' && values['admin-token-file'] !== ''
    ? values['admin-token-file'] : undefined;
  if (typeof raw !== 'string' || raw === '') {
    if (allowRemote || tokenFile) throw new ConfigError('--admin-allow-remote and --admin-token-file need --admin ADDR:PORT');
    return undefined;
  }
  if (raw.startsWith('/')) return Object.freeze({ listen: { kind: 'unix' as const, path: raw }, allowRemote, tokenFile });
  const endpoint = parseEndpoint(raw, '--admin');
  if (!isLoopback(endpoint.address) && !allowRemote) {
    throw new ConfigError(`--admin ${formatEndpoint(endpoint.address, endpoint.port)} is not a loopback address: ` +
      'the admin API can drain backends, so by default it listens only on loopback or a unix socket',
      'use 127.0.0.1:PORT or a socket path, or set --admin-allow-remote with --admin-token-file (POST then needs the token)');
  }
  return Object.freeze({ listen: { kind: 'tcp' as const, endpoint }, allowRemote, tokenFile });
}

export const RUN_FLAGS: Record<string, FlagSpec> = {
  config: CONFIG_FLAG,
  'check-config': { type: 'boolean', help: 'with --config: validate the file, print the effective configuration and exit' },
  'pid-file': PID_FILE_FLAG,
  workers: { type: 'string', value: 'N|auto',
    help: 'N worker processes sharing every listener (SO_REUSEPORT), supervised by a primary; auto: one per CPU (default 1)' },
  ...ADMIN_FLAGS,
  ...DATA_PATH_FLAGS,
  check: { type: 'boolean', help: "run relay doctor's checks first and refuse to start on a FAIL" },
  'check-continue': { type: 'boolean', help: 'with --check: print the failures and start anyway' },
  ...CHECK_FLAGS,
  help: HELP_FLAG,
};

export const DOCTOR_FLAGS: Record<string, FlagSpec> = { config: CONFIG_FLAG, ...DATA_PATH_FLAGS, ...CHECK_FLAGS, help: HELP_FLAG };

export const RELOAD_FLAGS: Record<string, FlagSpec> = {
  config: { type: 'string', value: 'FILE', help: 'validate this file first (nothing is sent if it fails) and take pid-file from it' },
  'pid-file': PID_FILE_FLAG,
  help: HELP_FLAG,
};

/** What may go with --config on a run: the file is the one source of truth for services. */
export const WITH_CONFIG_FLAGS = ['config', 'check-config', 'log-level', 'check', 'check-continue', 'help'];

export type ParsedValues = Record<string, string | boolean | string[] | undefined>;

export function parseFlags(argv: string[], flags: Record<string, FlagSpec>): ParsedValues {
  const options = Object.fromEntries(
    Object.entries(flags).map(([name, spec]) => [name, {
      type: spec.type,
      ...(spec.multiple ? { multiple: true } : {}),
      ...(spec.short ? { short: spec.short } : {}),
    }]),
  );
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, strict: true, allowPositionals: false, tokens: true });
  } catch (err) {
    // parseArgs echoes what it did not understand, uncut, and may explain over several lines.
    throw new ConfigError(echo((err as Error).message.split('\n')[0]));
  }
  refuseRepeats(parsed.tokens, flags);
  return parsed.values as ParsedValues;
}

/** parseArgs keeps the last of a repeated flag: refuse, so an invalid first value is never dropped unseen. */
function refuseRepeats(tokens: readonly { kind: string; name?: string; value?: string }[], flags: Record<string, FlagSpec>): void {
  const given = new Map<string, string[]>();
  for (const token of tokens) {
    if (token.kind !== 'option' || token.name === undefined || flags[token.name]?.multiple) continue;
    given.set(token.name, [...given.get(token.name) ?? [], token.value ?? '']);
  }
  for (const [name, values] of given) {
    if (values.length < 2) continue;
    const shown = flags[name].type === 'string' ? ` (${values.map((v) => `'${echo(v)}'`).join(', ')})` : '';
    throw new ConfigError(`--${name} is given ${values.length} times${shown}: give it once`);
  }
}

/**
 * A run's config, and the routes and probe options its --check uses, from its
 * flags: one function for a run and for doctor, so both refuse the same values.
 */
export function buildRunOptions(values: ParsedValues): RunOptions {
  return Object.freeze({
    run: buildRunConfig(values),
    routes: buildRoutesConfig(values),
    ...buildProbeOptions(values),
  });
}

/** The end-to-end probes' options (doctor, --check): flags on a run, global keys in a file. */
export function buildProbeOptions(values: ParsedValues): Pick<RunOptions, 'probeSources' | 'probeTimeoutMs'> {
  return {
    probeSources: probeSources(values['probe-source']),
    probeTimeoutMs: durationFlag(values, 'probe-timeout', DEFAULTS.probeTimeoutMs, 1),
  };
}

export function buildRunConfig(values: ParsedValues): RelayConfig {
  const listeners = listenEndpoints(values.listen);
  const backends = weightedBackends(values.backend);
  for (const b of backends) refuseLoop(b.endpoint, listeners, []);
  return Object.freeze({
    protocols: parseProtocols(values.proto),
    listeners,
    backends,
    // echo() leaves a valid name as it is, and cuts and escapes what the error quotes.
    balance: typeof values.balance === 'string' ? parseAlgorithm(echo(values.balance)) : 'roundrobin',
    health: healthOptions(values),
    keepClientPort: values['keep-client-port'] === true,
    connectTimeoutMs: durationFlag(values, 'connect-timeout', DEFAULTS.connectTimeoutMs, 1),
    idleTimeoutMs: durationFlag(values, 'idle-timeout', DEFAULTS.idleTimeoutMs, 0),
    drainTimeoutMs: durationFlag(values, 'drain-timeout', DEFAULTS.drainTimeoutMs, 0),
    onFamilyMismatch: parseMismatch(values['on-family-mismatch']),
    ...(typeof values['map-ipv4-prefix'] === 'string' ? { mapIpv4Prefix: parseMapPrefix(values['map-ipv4-prefix']) } : {}),
    maxConns: integerFlag(values, 'max-conns', DEFAULTS.maxConns, 1, 1_000_000),
    maxSessions: integerFlag(values, 'max-sessions', DEFAULTS.maxSessions, 1, 1_000_000),
    sessionTimeoutMs: durationFlag(values, 'session-timeout', DEFAULTS.sessionTimeoutMs, 1),
    udpResponses: integerFlag(values, 'udp-responses', 0, 0, 1_000_000),
    udpEngine: oneOf(values, 'udp-engine', ['socket', 'raw'] as const) ?? 'socket',
    mark: upstreamMark(values),
    ...proxyOptions(values),
    logLevel: parseLogLevel(values['log-level']),
  });
}

/** The PROXY protocol keys, checked together: each needs the others it depends on. */
function proxyOptions(values: ParsedValues): Pick<RelayConfig, 'proxyProtocol' | 'sendProxy' | 'upstreamSource'> {
  const protocols = parseProtocols(values.proto);
  const sendProxy = oneOf(values, 'send-proxy', ['v1', 'v2'] as const);
  if (sendProxy === 'v1' && protocols.includes('udp')) {
    throw new ConfigError('--send-proxy v1 is for TCP only: UDP carries v2 before each datagram (use v2)');
  }
  const upstreamSource = oneOf(values, 'upstream-source', ['client', 'relay'] as const) ?? 'client';
  return { proxyProtocol: proxyIngress(values, protocols), sendProxy, upstreamSource };
}

function proxyIngress(values: ParsedValues, protocols: readonly Protocol[]): ProxyIngress | undefined {
  const version = oneOf(values, 'proxy-protocol', ['v1', 'v2', 'any'] as const);
  const from = values['proxy-from'] as string[] | undefined ?? [];
  if (version === undefined) {
    const stray = ['proxy-from', 'proxy-header-timeout', 'proxy-reply-header'].find((k) => values[k] !== undefined);
    if (stray) throw new ConfigError(`--${stray} needs --proxy-protocol`);
    return undefined;
  }
  if (from.length === 0) {
    throw new ConfigError('--proxy-protocol needs --proxy-from CIDR: only trusted fronts may name a client address');
  }
  if (version !== 'v2' && protocols.includes('udp')) {
    throw new ConfigError(`--proxy-protocol ${version}: UDP takes v2 only (go-mmproxy's format, a header before each datagram)`);
  }
  if (values['proxy-reply-header'] === true && !protocols.includes('udp')) {
    throw new ConfigError('--proxy-reply-header is for UDP only');
  }
  return Object.freeze({
    version,
    from: Object.freeze(parseCidrList(from, '--proxy-from')),
    headerTimeoutMs: durationFlag(values, 'proxy-header-timeout', DEFAULTS.proxyHeaderTimeoutMs, 1),
    replyHeader: values['proxy-reply-header'] === true,
  });
}

/** A string flag that takes one of a few words, or undefined when not given. */
function oneOf<T extends string>(values: ParsedValues, flag: string, allowed: readonly T[]): T | undefined {
  const raw = values[flag];
  if (raw === undefined) return undefined;
  if ((allowed as readonly unknown[]).includes(raw)) return raw as T;
  throw new ConfigError(`--${flag} must be ${allowed.join(', ').replace(/, ([^,]*)$/, ' or $1')}: got '${echo(String(raw))}'`);
}

export function buildRoutesConfig(values: ParsedValues): RoutesConfig {
  const relayAddresses = (values['relay-address'] as string[] | undefined ?? []).map((a) => {
    if (net.isIP(a) === 0) throw new ConfigError(`--relay-address: '${echo(a)}' is not an IP address`);
    const problem = relayAddressProblem(a);
    if (problem) throw new ConfigError(`--relay-address ${echo(a)} ${problem}`);
    return normalize(a);
  });
  return Object.freeze({
    fwmark: fwmarkFlag(values),
    rulePriority: integerFlag(values, 'priority', DEFAULTS.rulePriority, 1, 32765),
    table: routingTable(values),
    // Weights mean nothing to a recipe, but the same --backend values are accepted.
    backends: values.backend ? weightedBackends(values.backend).map((b) => b.endpoint) : [],
    relayAddresses,
    ...mapPrefixes(values['map-ipv4-prefix']),
    ...(values['udp-engine'] === undefined ? {} : { udpEngine: oneOf(values, 'udp-engine', ['socket', 'raw'] as const) }),
  });
}

/** A run's --map-ipv4-prefix (one), or routes' (repeatable), each once; no key when none is given. */
function mapPrefixes(raw: ParsedValues[string]): Pick<RoutesConfig, 'mapIpv4Prefixes'> {
  const given = typeof raw === 'string' ? [raw] : Array.isArray(raw) ? raw : [];
  if (given.length === 0) return {};
  const parsed = given.map((text) => parseMapPrefix(text));
  return { mapIpv4Prefixes: parsed.filter((p, i) => parsed.findIndex((q) => q.text === p.text) === i) };
}

/** The kernel reserves 253 (default), 254 (main) and 255 (local): a local 0/0 route there breaks the host. */
const RESERVED_TABLES = new Set([253, 254, 255]);

function routingTable(values: ParsedValues): number {
  const table = integerFlag(values, 'table', DEFAULTS.table, 1, 0xfffffffe);
  if (RESERVED_TABLES.has(table)) {
    throw new ConfigError(`--table ${table} is one of the kernel's own tables (253 default, 254 main, 255 local): choose another`);
  }
  return table;
}

function fwmarkFlag(values: ParsedValues): number {
  return integerFlag(values, 'fwmark', DEFAULTS.fwmark, 1, 0xffffffff);
}

// Upstream packets carrying the mark of a rule that looks up relay's table
// are routed by its `local` routes back into this host: every connect would
// time out. Checked against --fwmark here, and against the host's own rules
// (which a pure config cannot see) by checkAgainstHost.
function upstreamMark(values: ParsedValues): number {
  const mark = integerFlag(values, 'mark', 0, 0, 0xffffffff);
  // Not against the default fwmark alone: an operator with routes of their
  // own may use that value freely. Where relay's routes are applied, their
  // rule is on the host, and checkAgainstHost refuses the mark there.
  const fwmark = fwmarkFlag(values);
  if (values.fwmark !== undefined && mark === fwmark) {
    throw new ConfigError(`--mark ${hex(mark)} is the mark of relay's routes (--fwmark ${hex(fwmark)}): ` +
      'upstream packets would be routed back into this host: choose another');
  }
  return mark;
}

/**
 * What a config cannot see: refuse a --mark that a rule on this host routes
 * to relay's table, and a backend that is this host on a wildcard listen's port.
 */
export function checkAgainstHost(options: RunOptions, host: HostFacts): void {
  const { mark } = options.run;
  const rule = mark === 0 ? undefined : host.rules.find((r) => r.fwmark !== undefined &&
    r.table === String(options.routes.table) && ((mark ^ Number(r.fwmark)) & Number(r.fwmask ?? 0xffffffff)) === 0);
  if (rule) {
    throw new ConfigError(`--mark ${hex(mark)} matches this host's rule 'fwmark ${rule.fwmark}${rule.fwmask ? `/${rule.fwmask}` : ''} ` +
      `lookup ${rule.table}': upstream packets would be routed back into this host: choose another`);
  }
  for (const b of options.run.backends) refuseLoop(b.endpoint, options.run.listeners, host.addresses);
}

/**
 * A backend relay would reach itself at: a listen address, or a wildcard
 * listen's port on loopback or on one of hostAddresses ([::] takes IPv4 too).
 */
function refuseLoop(backend: Endpoint, listeners: readonly Endpoint[], hostAddresses: readonly string[]): void {
  const local = isLoopback(backend.address) || hostAddresses.includes(backend.address);
  const listener = listeners.find((l) => l.port === backend.port && (l.address === backend.address ||
    (isWildcard(l.address) && (l.family === 6 || l.family === backend.family) && local)));
  if (listener) {
    throw new ConfigError(`--backend ${formatEndpoint(backend.address, backend.port)} is relay itself ` +
      `(--listen ${formatEndpoint(listener.address, listener.port)}): relay would connect to itself`);
  }
}

function weightedBackends(raw: ParsedValues[string]): WeightedBackend[] {
  const list = Array.isArray(raw) ? raw : [];
  if (list.length === 0) throw new ConfigError('--backend is required');
  const backends = list.map((text) => parseBackend(text, '--backend'));
  const seen = new Set<string>();
  for (const b of backends) {
    const name = formatEndpoint(b.endpoint.address, b.endpoint.port);
    const problem = backendAddressProblem(b.endpoint.address);
    if (problem) throw new ConfigError(`--backend ${name} ${problem}`);
    if (seen.has(name)) throw new ConfigError(`--backend ${name} is given twice`);
    seen.add(name);
  }
  return backends;
}

function listenEndpoints(raw: ParsedValues[string]): Endpoint[] {
  const list = Array.isArray(raw) ? raw : [];
  if (list.length === 0) throw new ConfigError('--listen is required');
  return list.map((text) => {
    const endpoint = parseEndpoint(text, '--listen');
    const problem = listenAddressProblem(endpoint.address);
    if (problem) throw new ConfigError(`--listen ${formatEndpoint(endpoint.address, endpoint.port)} ${problem}`);
    return endpoint;
  });
}

function probeSources(raw: ParsedValues[string]): Record<Family, string> {
  const sources = { ...DEFAULT_PROBE_SOURCES };
  for (const address of Array.isArray(raw) ? raw : []) {
    const family = net.isIP(address);
    if (family === 0) throw new ConfigError(`--probe-source: '${echo(address)}' is not an IP address`);
    sources[family as Family] = normalize(address);
  }
  return sources;
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

function healthOptions(values: ParsedValues): HealthOptions {
  const probe = values['health-udp-probe'];
  if (probe !== undefined && !/^([0-9a-f]{2})+$/i.test(String(probe))) {
    throw new ConfigError(`--health-udp-probe must be hex bytes, e.g. 0a0b0c: got '${echo(String(probe))}'`);
  }
  return Object.freeze({
    intervalMs: durationFlag(values, 'health-interval', DEFAULTS.healthIntervalMs, 0),
    timeoutMs: durationFlag(values, 'health-timeout', DEFAULTS.healthTimeoutMs, 1),
    rise: integerFlag(values, 'health-rise', DEFAULTS.healthRise, 1, 100),
    fall: integerFlag(values, 'health-fall', DEFAULTS.healthFall, 1, 100),
    udpProbe: probe === undefined ? undefined : Buffer.from(String(probe), 'hex'),
  });
}

function parseProtocols(raw: ParsedValues[string]): Protocol[] {
  const text = typeof raw === 'string' ? raw : 'tcp';
  const protocols = text.split(',').map((p) => p.trim());
  for (const p of protocols) {
    if (p !== 'tcp' && p !== 'udp') throw new ConfigError(`--proto: unknown protocol '${echo(p)}' (tcp, udp or tcp,udp)`);
  }
  return [...new Set(protocols)] as Protocol[];
}

function parseMismatch(raw: ParsedValues[string]): FamilyMismatchPolicy {
  if (raw === undefined) return DEFAULTS.onFamilyMismatch;
  if (raw === 'reject' || raw === 'masquerade') return raw;
  throw new ConfigError(`--on-family-mismatch must be reject or masquerade: got '${echo(String(raw))}'`);
}

const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export function parseLogLevel(raw: ParsedValues[string]): LogLevel {
  if (raw === undefined) return 'info';
  if (LOG_LEVELS.includes(raw as LogLevel)) return raw as LogLevel;
  throw new ConfigError(`--log-level must be one of ${LOG_LEVELS.join('|')}: got '${echo(String(raw))}'`);
}

/** min 0 only where 0 turns the feature off. */
function durationFlag(values: ParsedValues, flag: string, fallback: number, min: 0 | 1): number {
  const raw = values[flag];
  return raw === undefined ? fallback : parseDuration(String(raw), `--${flag}`, min);
}

export function integerFlag(values: ParsedValues, flag: string, fallback: number, min: number, max: number): number {
  const raw = values[flag];
  if (raw === undefined) return fallback;
  const text = String(raw);
  const n = /^0x[0-9a-f]+$/i.test(text) ? parseInt(text, 16) : /^\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(`--${flag} must be an integer from ${min} to ${max}: got '${echo(text)}'`);
  }
  return n;
}

export function usage(command: string, flags: Record<string, FlagSpec>): string {
  const rows = Object.entries(flags).map(([name, spec]) => {
    const left = `${spec.short ? `-${spec.short}, ` : '    '}--${name}${spec.value ? ` ${spec.value}` : ''}`;
    return `  ${left.padEnd(38)} ${spec.help}`;
  });
  const durations = Object.values(flags).some((spec) => spec.value === 'DURATION')
    ? '\nDURATION is a number with its unit: 250ms, 5s, 10m, 2h (0 alone where it turns a feature off).\n' : '';
  return `usage: ${command}\n\n${rows.join('\n')}\n${durations}`;
}
