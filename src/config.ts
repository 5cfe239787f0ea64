// Flags -> a frozen, typed config. Each flag is declared once, in FLAGS: the
// parser, the defaults and `relay --help` are all built from that table.
import { parseArgs } from 'node:util';
import { ConfigError } from './errors';
import * as net from 'node:net';
import { Endpoint, parseEndpoint, normalize, formatEndpoint } from './addr';
import { parseDuration, formatDuration } from './duration';
import { Algorithm, ALGORITHMS, WeightedBackend, parseAlgorithm, parseBackend } from './balance';
import type { HealthOptions } from './health';

export type Protocol = 'tcp' | 'udp';
export type FamilyMismatchPolicy = 'reject' | 'masquerade';
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
  readonly maxConns: number;
  readonly maxSessions: number;
  readonly sessionTimeoutMs: number;
  /** Close a UDP session after this many replies; 0 = no limit. */
  readonly udpResponses: number;
  readonly mark: number;
  readonly logLevel: LogLevel;
}

export interface RoutesConfig {
  readonly fwmark: number;
  readonly table: number;
  readonly rulePriority: number;
  readonly backends: readonly Endpoint[];
  readonly relayAddresses: readonly string[];
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
};

interface FlagSpec {
  type: 'string' | 'boolean';
  multiple?: boolean;
  short?: string;
  value?: string;
  help: string;
}

/** What a relay does: shared by a run and by doctor, which checks a run's setup. */
const DATA_PATH_FLAGS: Record<string, FlagSpec> = {
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
    help: `on SIGTERM/SIGINT, wait this long for open connections (default ${formatDuration(DEFAULTS.drainTimeoutMs)})` },
  'on-family-mismatch': { type: 'string', value: 'reject|masquerade',
    help: "client and backend families differ, so the client's address cannot be kept: " +
      "reject closes the client (TCP) or drops its datagrams (UDP), the default; masquerade connects from relay's own address" },
  'max-conns': { type: 'string', value: 'N',
    help: `close new clients at once past N open connections (default ${DEFAULTS.maxConns})` },
  'max-sessions': { type: 'string', value: 'N',
    help: `UDP: at most N client sessions (one upstream socket each); the least recently used is closed past it (default ${DEFAULTS.maxSessions})` },
  'session-timeout': { type: 'string', value: 'DURATION',
    help: `UDP: close a session with no datagram either way for this long (default ${formatDuration(DEFAULTS.sessionTimeoutMs)})` },
  'udp-responses': { type: 'string', value: 'N',
    help: 'UDP: close a session once the backend sent N replies per client datagram, e.g. 1 for DNS (default 0: no limit)' },
  mark: { type: 'string', value: 'N',
    help: `SO_MARK for upstream packets, e.g. for the operator's own policy routing; must differ from the routes fwmark (default none)` },
  'log-level': { type: 'string', value: 'LEVEL', help: 'fatal|error|warn|info|debug|trace|silent (default info)' },
};

const HELP_FLAG: FlagSpec = { type: 'boolean', short: 'h', help: 'show this help' };

export const ROUTES_FLAGS: Record<string, FlagSpec> = {
  fwmark: { type: 'string', value: 'N', help: `firewall mark relay's rule matches (default 0x${DEFAULTS.fwmark.toString(16)})` },
  table: { type: 'string', value: 'N', help: `routing table for the local routes (default ${DEFAULTS.table})` },
  priority: { type: 'string', value: 'N', help: `ip rule priority (default ${DEFAULTS.rulePriority})` },
  backend: { type: 'string', multiple: true, value: 'ADDR:PORT',
    help: 'a backend to print the return-path recipe for; repeatable' },
  'relay-address': { type: 'string', multiple: true, value: 'ADDR',
    help: "relay's own address facing the backends, for the backend recipes; one per family " +
      '(default: looked up with ip route get)' },
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
  'probe-timeout': { type: 'string', value: 'DURATION', help: 'how long an end-to-end probe waits for its answer (default 2s)' },
};

export const RUN_FLAGS: Record<string, FlagSpec> = {
  ...DATA_PATH_FLAGS,
  check: { type: 'boolean', help: "run relay doctor's checks first and refuse to start on a FAIL" },
  'check-continue': { type: 'boolean', help: 'with --check: print the failures and start anyway' },
  ...CHECK_FLAGS,
  help: HELP_FLAG,
};

export const DOCTOR_FLAGS: Record<string, FlagSpec> = { ...DATA_PATH_FLAGS, ...CHECK_FLAGS, help: HELP_FLAG };

export type ParsedValues = Record<string, string | boolean | string[] | undefined>;

export function parseFlags(argv: string[], flags: Record<string, FlagSpec>): ParsedValues {
  const options = Object.fromEntries(
    Object.entries(flags).map(([name, spec]) => [name, {
      type: spec.type,
      ...(spec.multiple ? { multiple: true } : {}),
      ...(spec.short ? { short: spec.short } : {}),
    }]),
  );
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values as ParsedValues;
  } catch (err) {
    // parseArgs may explain over several lines; the operator gets one.
    throw new ConfigError((err as Error).message.split('\n').join(' '));
  }
}

export function buildRunConfig(values: ParsedValues): RelayConfig {
  const listeners = endpoints(values.listen, '--listen');
  const backends = weightedBackends(values.backend);
  return Object.freeze({
    protocols: parseProtocols(values.proto),
    listeners,
    backends,
    balance: typeof values.balance === 'string' ? parseAlgorithm(values.balance) : 'roundrobin',
    health: healthOptions(values),
    keepClientPort: values['keep-client-port'] === true,
    connectTimeoutMs: durationFlag(values, 'connect-timeout', DEFAULTS.connectTimeoutMs, { min: 1 }),
    idleTimeoutMs: durationFlag(values, 'idle-timeout', DEFAULTS.idleTimeoutMs, { min: 0 }),
    drainTimeoutMs: durationFlag(values, 'drain-timeout', DEFAULTS.drainTimeoutMs, { min: 0 }),
    onFamilyMismatch: parseMismatch(values['on-family-mismatch']),
    maxConns: integerFlag(values, 'max-conns', DEFAULTS.maxConns, 1, 1_000_000),
    maxSessions: integerFlag(values, 'max-sessions', DEFAULTS.maxSessions, 1, 1_000_000),
    sessionTimeoutMs: durationFlag(values, 'session-timeout', DEFAULTS.sessionTimeoutMs, { min: 1 }),
    udpResponses: integerFlag(values, 'udp-responses', 0, 0, 1_000_000),
    mark: upstreamMark(values),
    logLevel: parseLogLevel(values['log-level']),
  });
}

export function buildRoutesConfig(values: ParsedValues): RoutesConfig {
  const relayAddresses = (values['relay-address'] as string[] | undefined ?? []).map((a) => {
    if (net.isIP(a) === 0) throw new ConfigError(`--relay-address: '${a}' is not an IP address`);
    return normalize(a);
  });
  return Object.freeze({
    fwmark: integerFlag(values, 'fwmark', DEFAULTS.fwmark, 1, 0xffffffff),
    rulePriority: integerFlag(values, 'priority', DEFAULTS.rulePriority, 1, 32765),
    table: routingTable(values),
    // Weights mean nothing to a recipe, but the same --backend values are accepted.
    backends: values.backend ? weightedBackends(values.backend).map((b) => b.endpoint) : [],
    relayAddresses,
  });
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

function upstreamMark(values: ParsedValues): number {
  const mark = integerFlag(values, 'mark', 0, 0, 0xffffffff);
  if (mark === DEFAULTS.fwmark) {
    // Upstream packets with the routes mark would be routed by relay's
    // `local` table back into the host: every connect would time out.
    throw new ConfigError(`--mark 0x${mark.toString(16)} is the mark relay's routes use for replies: choose another`);
  }
  return mark;
}

function weightedBackends(raw: ParsedValues[string]): WeightedBackend[] {
  const list = Array.isArray(raw) ? raw : [];
  if (list.length === 0) throw new ConfigError('--backend is required');
  const backends = list.map((text) => parseBackend(text));
  const seen = new Set<string>();
  for (const b of backends) {
    const name = formatEndpoint(b.endpoint.address, b.endpoint.port);
    if (seen.has(name)) throw new ConfigError(`--backend ${name} is given twice`);
    seen.add(name);
  }
  return backends;
}

function healthOptions(values: ParsedValues): HealthOptions {
  const probe = values['health-udp-probe'];
  if (probe !== undefined && !/^([0-9a-f]{2})+$/i.test(String(probe))) {
    throw new ConfigError(`--health-udp-probe must be hex bytes, e.g. 0a0b0c: got '${probe}'`);
  }
  return Object.freeze({
    intervalMs: durationFlag(values, 'health-interval', DEFAULTS.healthIntervalMs, { min: 0 }),
    timeoutMs: durationFlag(values, 'health-timeout', DEFAULTS.healthTimeoutMs, { min: 1 }),
    rise: integerFlag(values, 'health-rise', DEFAULTS.healthRise, 1, 100),
    fall: integerFlag(values, 'health-fall', DEFAULTS.healthFall, 1, 100),
    udpProbe: probe === undefined ? undefined : Buffer.from(String(probe), 'hex'),
  });
}

function endpoints(raw: ParsedValues[string], flag: string): Endpoint[] {
  const list = Array.isArray(raw) ? raw : [];
  if (list.length === 0) throw new ConfigError(`${flag} is required`);
  return list.map((text) => parseEndpoint(text, flag));
}

function parseProtocols(raw: ParsedValues[string]): Protocol[] {
  const text = typeof raw === 'string' ? raw : 'tcp';
  const protocols = text.split(',').map((p) => p.trim());
  for (const p of protocols) {
    if (p !== 'tcp' && p !== 'udp') throw new ConfigError(`--proto: unknown protocol '${p}' (tcp, udp or tcp,udp)`);
  }
  return [...new Set(protocols)] as Protocol[];
}

function parseMismatch(raw: ParsedValues[string]): FamilyMismatchPolicy {
  if (raw === undefined) return DEFAULTS.onFamilyMismatch;
  if (raw === 'reject' || raw === 'masquerade') return raw;
  throw new ConfigError(`--on-family-mismatch must be reject or masquerade: got '${raw}'`);
}

const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

function parseLogLevel(raw: ParsedValues[string]): LogLevel {
  if (raw === undefined) return 'info';
  if (LOG_LEVELS.includes(raw as LogLevel)) return raw as LogLevel;
  throw new ConfigError(`--log-level must be one of ${LOG_LEVELS.join('|')}: got '${raw}'`);
}

function durationFlag(values: ParsedValues, flag: string, fallback: number, range: { min: number }): number {
  const raw = values[flag];
  if (raw === undefined) return fallback;
  const ms = parseDuration(String(raw), `--${flag}`);
  if (ms < range.min) throw new ConfigError(`--${flag} must be at least ${range.min}ms`);
  return ms;
}

export function integerFlag(values: ParsedValues, flag: string, fallback: number, min: number, max: number): number {
  const raw = values[flag];
  if (raw === undefined) return fallback;
  const text = String(raw);
  const n = /^0x[0-9a-f]+$/i.test(text) ? parseInt(text, 16) : /^\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(`--${flag} must be an integer from ${min} to ${max}: got '${text}'`);
  }
  return n;
}

export function usage(command: string, flags: Record<string, FlagSpec>): string {
  const rows = Object.entries(flags).map(([name, spec]) => {
    const left = `${spec.short ? `-${spec.short}, ` : '    '}--${name}${spec.value ? ` ${spec.value}` : ''}`;
    return `  ${left.padEnd(38)} ${spec.help}`;
  });
  return `usage: ${command}\n\n${rows.join('\n')}\n`;
}
