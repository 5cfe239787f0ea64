// `relay --config relay.toml`: many services in one process. Every run flag is
// a key of the same name. Global keys sit at the top level; everything else
// belongs to a service, one `[[service]]` table each. A service's keys become
// the same values its flags would, and go through the same builder
// (buildRunConfig), so a file and the command line refuse exactly the same
// things; errors name the file, the line and the key path instead of the flag.
import * as fs from 'node:fs';
import { parse as parseToml, TomlError } from 'smol-toml';
import { ConfigError, echo } from './errors';
import {
  DATA_PATH_FLAGS, LogLevel, ParsedValues, RelayConfig, RoutesConfig, RunOptions, buildRunConfig, parseLogLevel,
  buildRoutesConfig, buildProbeOptions, DEFAULT_PID_FILE, ADMIN_FLAGS, AdminOptions, buildAdminOptions,
} from './config';
import { Endpoint, formatEndpoint, isWildcard, listenAddressProblem, parseEndpoint, backendAddressProblem } from './addr';
import { parseBackend } from './balance';
import { formatDuration } from './duration';
import { assertLimitsSplit, parseWorkers } from './workers';


/** Keys of the top level: the process's, not any one service's. */
export const GLOBAL_KEYS = [
  'log-level', 'fwmark', 'table', 'priority', 'pid-file', 'probe-source', 'probe-timeout', 'workers', 'admin',
  'admin-allow-remote', 'admin-token-file', 'udp-engine',
] as const;

/** Data-path flags that are the process's, so global keys in a file. */
const PROCESS_WIDE = new Set(['log-level', 'udp-engine']);

/** A service's keys: the data-path flags, less the process-wide ones, plus its name. */
const SERVICE_KEYS = ['name', ...Object.keys(DATA_PATH_FLAGS).filter((k) => !PROCESS_WIDE.has(k))];

export interface ServiceConfig {
  readonly name: string;
  readonly run: RelayConfig;
}

export interface GlobalConfig {
  readonly logLevel: LogLevel;
  readonly pidFile: string;
  /** Worker processes (workers = N or "auto"; default 1). */
  readonly workers: number;
  /** The routing keys, for doctor and `relay routes --config`. */
  readonly routes: RoutesConfig;
  /** The end-to-end probes' options (probe-source, probe-timeout). */
  readonly probes: Pick<RunOptions, 'probeSources' | 'probeTimeoutMs'>;
  /** The admin listener (admin, admin-allow-remote, admin-token-file); undefined: none. */
  readonly admin?: AdminOptions;
  /** The raw global values, as flags would give them (for `relay routes --config`). */
  readonly values: ParsedValues;
}

export interface FileConfig {
  readonly path: string;
  readonly global: GlobalConfig;
  readonly services: readonly ServiceConfig[];
}

/** Read and validate a configuration file; throws ConfigError naming the file, line and key. */
export function loadConfigFile(path: string): FileConfig {
  return parseConfigText(readConfigText(path), path);
}

/** The file's text, or a ConfigError naming it. */
export function readConfigText(path: string): string {
  try {
    return fs.readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new ConfigError(`${echo(path)}: cannot read the configuration file (${code})`);
  }
}

/** Pure: the text of a configuration file to a validated configuration. */
export function parseConfigText(text: string, path: string): FileConfig {
  const where = new Locator(text, path);
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(text) as Record<string, unknown>;
  } catch (err) {
    if (err instanceof TomlError) {
      throw new ConfigError(`${echo(path)}:${err.line}: ${echo(err.message.split('\n')[0])}`);
    }
    throw err;
  }
  const global = globalConfig(doc, where);
  const rawServices = doc.service;
  if (rawServices === undefined) throw where.error(-1, undefined, 'no [[service]] table: a configuration needs at least one service');
  if (!Array.isArray(rawServices)) throw where.error(-1, 'service', 'service must be an array of tables: write [[service]]');
  // The UDP engine is the process's: every service's run config carries it.
  const inherited: ParsedValues = global.values['udp-engine'] === undefined ? {} : { 'udp-engine': global.values['udp-engine'] };
  const services = rawServices.map((raw, i) => serviceConfig(raw, i, where, inherited));
  refuseDuplicateNames(services, where);
  refuseListenClashes(services, where);
  services.forEach((s, i) => where.wrap(i, undefined, () => assertLimitsSplit([s.run], global.workers)));
  return Object.freeze({ path, global, services: Object.freeze(services) });
}

function globalConfig(doc: Record<string, unknown>, where: Locator): GlobalConfig {
  const values: ParsedValues = {};
  for (const [key, value] of Object.entries(doc)) {
    if (key === 'service') continue;
    if (!(GLOBAL_KEYS as readonly string[]).includes(key)) {
      const hint = SERVICE_KEYS.includes(key) ? `${key} belongs to a service: move it into a [[service]] table`
        : `unknown key: the top level takes ${GLOBAL_KEYS.join(', ')} and [[service]] tables`;
      throw where.error(-1, key, hint);
    }
    values[key] = flagValue(value, key, key === 'probe-source', where, -1);
  }
  return Object.freeze({
    logLevel: where.wrap(-1, 'log-level', () => parseLogLevel(values['log-level'])),
    pidFile: typeof values['pid-file'] === 'string' && values['pid-file'] !== '' ? values['pid-file'] : DEFAULT_PID_FILE,
    workers: where.wrap(-1, 'workers', () => parseWorkers(values.workers, 'workers')),
    routes: where.wrap(-1, undefined, () => buildRoutesConfig(values)),
    probes: where.wrap(-1, undefined, () => buildProbeOptions(values)),
    admin: where.wrap(-1, undefined, () => buildAdminOptions(values)),
    values,
  });
}

function serviceConfig(raw: unknown, index: number, where: Locator, inherited: ParsedValues): ServiceConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw where.error(index, undefined, 'a service must be a table: write [[service]] and its keys below it');
  }
  const table = raw as Record<string, unknown>;
  const name = serviceName(table.name, index, where);
  const values: ParsedValues = { ...inherited };
  for (const [key, value] of Object.entries(table)) {
    if (key === 'name') continue;
    if (!SERVICE_KEYS.includes(key)) {
      const hint = (GLOBAL_KEYS as readonly string[]).includes(key)
        ? `${key} is a global key: put it at the top level, before the first [[service]]`
        : `unknown key: a service takes ${SERVICE_KEYS.join(', ')}`;
      throw where.error(index, key, hint);
    }
    values[key] = flagValue(value, key, DATA_PATH_FLAGS[key].multiple === true, where, index);
  }
  checkListItems(values, index, where);
  const run = where.wrap(index, undefined, () => buildRunConfig(values));
  return Object.freeze({ name, run });
}

const NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/i;

function serviceName(raw: unknown, index: number, where: Locator): string {
  if (raw === undefined) throw where.error(index, undefined, 'a service needs a name, e.g. name = "dns"');
  if (typeof raw !== 'string' || !NAME.test(raw)) {
    throw where.error(index, 'name', `must be letters, digits, '.', '_' or '-', at most 63, starting with a letter or digit: got ${shown(raw)}`);
  }
  return raw;
}

/**
 * A TOML value as the flag's parser takes it: lists stay lists (of strings),
 * proto may be a list joined with commas, a boolean stays boolean, numbers
 * become their text (a duration then asks for its unit, as on the command line).
 */
function flagValue(value: unknown, key: string, multiple: boolean, where: Locator, index: number): string | boolean | string[] {
  if (multiple) {
    const list = Array.isArray(value) ? value : [value];
    return list.map((item, i) => {
      if (typeof item !== 'string') throw where.error(index, `${key}[${i}]`, `must be a string: got ${shown(item)}`);
      return item;
    });
  }
  if (key === 'proto' && Array.isArray(value) && value.every((v) => typeof v === 'string')) return value.join(',');
  const spec = DATA_PATH_FLAGS[key] ?? ADMIN_FLAGS[key];
  if (spec?.type === 'boolean') {
    if (typeof value !== 'boolean') throw where.error(index, key, `must be true or false: got ${shown(value)}`);
    return value;
  }
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'bigint') return String(value);
  throw where.error(index, key, `must be a string${key === 'proto' ? ' or a list of strings' : ' or a number'}: got ${shown(value)}`);
}

/** Each listen and backend item on its own, so an error names its index. */
function checkListItems(values: ParsedValues, index: number, where: Locator): void {
  for (const [i, text] of ((values.listen as string[] | undefined) ?? []).entries()) {
    where.wrap(index, `listen[${i}]`, () => {
      const endpoint = parseEndpoint(text, 'listen');
      const problem = listenAddressProblem(endpoint.address);
      if (problem) throw new ConfigError(`${formatEndpoint(endpoint.address, endpoint.port)} ${problem}`);
    });
  }
  for (const [i, text] of ((values.backend as string[] | undefined) ?? []).entries()) {
    where.wrap(index, `backend[${i}]`, () => {
      const backend = parseBackend(text, 'backend');
      const problem = backendAddressProblem(backend.endpoint.address);
      if (problem) throw new ConfigError(`${formatEndpoint(backend.endpoint.address, backend.endpoint.port)} ${problem}`);
    });
  }
}

function refuseDuplicateNames(services: readonly ServiceConfig[], where: Locator): void {
  const seen = new Map<string, number>();
  services.forEach((s, i) => {
    const first = seen.get(s.name);
    if (first !== undefined) throw where.error(i, 'name', `"${s.name}" is also the name of service[${first}]: names must differ`);
    seen.set(s.name, i);
  });
}

interface Claim {
  service: number;
  protocol: string;
  endpoint: Endpoint;
}

/**
 * Two services may not claim one protocol, address and port; nor a wildcard
 * and an address it covers on one port (0.0.0.0 covers IPv4, [::] both), which
 * the kernel would refuse at bind or which would leave one service unreached.
 */
function refuseListenClashes(services: readonly ServiceConfig[], where: Locator): void {
  const claims: Claim[] = services.flatMap((s, service) =>
    s.run.protocols.flatMap((protocol) => s.run.listeners.map((endpoint) => ({ service, protocol, endpoint }))));
  for (const [i, a] of claims.entries()) {
    for (const b of claims.slice(i + 1)) {
      if (a.service === b.service || a.protocol !== b.protocol || a.endpoint.port !== b.endpoint.port) continue;
      if (!overlaps(a.endpoint, b.endpoint)) continue;
      const name = (c: Claim) => `service[${c.service}] "${services[c.service].name}" (${c.protocol} ${formatEndpoint(c.endpoint.address, c.endpoint.port)})`;
      throw where.error(b.service, 'listen', `${name(b)} clashes with ${name(a)}: two services cannot share a protocol, address and port`);
    }
  }
}

function overlaps(a: Endpoint, b: Endpoint): boolean {
  if (a.address === b.address) return true;
  const covers = (w: Endpoint, x: Endpoint) => isWildcard(w.address) && (w.family === 6 || x.family === 4);
  return covers(a, b) || covers(b, a);
}

function shown(value: unknown): string {
  if (typeof value === 'string') return `'${echo(value)}'`;
  if (Array.isArray(value)) return 'a list';
  if (value !== null && typeof value === 'object') return 'a table';
  return echo(String(value));
}

/**
 * Names the file, the line (found by scanning the text: the TOML parser gives
 * lines only for syntax errors) and the key path in an error.
 */
class Locator {
  private readonly lines: string[];
  constructor(text: string, private readonly path: string) {
    this.lines = text.split('\n');
  }

  /** service -1: the top level. */
  error(service: number, key: string | undefined, message: string): ConfigError {
    const line = this.lineOf(service, key?.replace(/\[\d+\]$/, ''));
    const at = service < 0 ? (key ?? '') : `service[${service}]${key ? `.${key}` : ''}`;
    return new ConfigError(`${echo(this.path)}${line ? `:${line}` : ''}: ${at}${at ? ': ' : ''}${message}`);
  }

  /** Run a builder; its errors (which speak of --flags) name the key path instead. */
  wrap<T>(service: number, key: string | undefined, build: () => T): T {
    try {
      return build();
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      const flag = /^--([a-z0-9-]+)\b:? ?/.exec(err.message);
      const keyName = key ?? flag?.[1];
      const message = flag && key === undefined ? err.message.slice(flag[0].length) : err.message;
      throw this.error(service, keyName, message.replace(/--([a-z][a-z0-9-]*)/g, '$1'));
    }
  }

  private lineOf(service: number, key: string | undefined): number | undefined {
    let current = -1;
    let headerLine: number | undefined;
    for (const [i, raw] of this.lines.entries()) {
      const line = raw.trim();
      if (/^\[\[\s*service\s*\]\]/.test(line)) {
        current++;
        if (current === service) headerLine = i + 1;
        continue;
      }
      if (/^\[/.test(line)) current = Number.MAX_SAFE_INTEGER; // another table: not a service's keys
      if (current === service && key !== undefined && new RegExp(`^"?${key.replace(/[.]/g, '\\.')}"?\\s*=`).test(line)) return i + 1;
    }
    return headerLine;
  }
}

/**
 * The effective configuration, as TOML with every default filled in, for
 * --check-config: what relay will run, key by key, in the file's own terms.
 */
export function formatEffective(file: FileConfig): string {
  const g = file.global;
  const lines = [
    `# ${file.path}: valid; ${file.services.length} service${file.services.length === 1 ? '' : 's'}, defaults filled in`,
    `log-level = "${g.logLevel}"`,
    `workers = ${g.workers}`,
    `pid-file = "${g.pidFile}"`,
    `fwmark = 0x${g.routes.fwmark.toString(16)}`,
    `table = ${g.routes.table}`,
    `priority = ${g.routes.rulePriority}`,
    ...adminLines(g.admin),
  ];
  for (const { name, run } of file.services) lines.push('', '[[service]]', `name = "${name}"`, ...serviceLines(run));
  return `${lines.join('\n')}\n`;
}

function adminLines(admin: AdminOptions | undefined): string[] {
  if (admin === undefined) return ['# admin: none (no /metrics, no admin API)'];
  const where = admin.listen.kind === 'unix' ? admin.listen.path : formatEndpoint(admin.listen.endpoint.address, admin.listen.endpoint.port);
  return [`admin = "${where}"`, `admin-allow-remote = ${admin.allowRemote}`,
    ...(admin.tokenFile ? [`admin-token-file = "${admin.tokenFile}"`] : [])];
}

function serviceLines(run: RelayConfig): string[] {
  const list = (items: readonly string[]) => `[${items.map((i) => `"${i}"`).join(', ')}]`;
  const d = (ms: number) => `"${formatDuration(ms)}"`;
  return [
    `proto = ${list(run.protocols)}`,
    `listen = ${list(run.listeners.map((l) => formatEndpoint(l.address, l.port)))}`,
    `backend = ${list(run.backends.map((b) => `${formatEndpoint(b.endpoint.address, b.endpoint.port)}${b.weight !== 1 ? `,weight=${b.weight}` : ''}`))}`,
    `balance = "${run.balance}"`,
    `health-interval = ${d(run.health.intervalMs)}`,
    `health-timeout = ${d(run.health.timeoutMs)}`,
    `health-rise = ${run.health.rise}`,
    `health-fall = ${run.health.fall}`,
    ...(run.health.udpProbe ? [`health-udp-probe = "${run.health.udpProbe.toString('hex')}"`] : []),
    `keep-client-port = ${run.keepClientPort}`,
    `connect-timeout = ${d(run.connectTimeoutMs)}`,
    `idle-timeout = ${d(run.idleTimeoutMs)}`,
    `drain-timeout = ${d(run.drainTimeoutMs)}`,
    `on-family-mismatch = "${run.onFamilyMismatch}"`,
    ...(run.mapIpv4Prefix ? [`map-ipv4-prefix = "${run.mapIpv4Prefix.text}"`] : []),
    `max-conns = ${run.maxConns}`,
    `max-sessions = ${run.maxSessions}`,
    `session-timeout = ${d(run.sessionTimeoutMs)}`,
    `udp-responses = ${run.udpResponses}`,
    ...(run.mark ? [`mark = 0x${run.mark.toString(16)}`] : []),
    ...(run.proxyProtocol ? [
      `proxy-protocol = "${run.proxyProtocol.version}"`,
      `proxy-from = ${list(run.proxyProtocol.from)}`,
      `proxy-header-timeout = ${d(run.proxyProtocol.headerTimeoutMs)}`,
      ...(run.protocols.includes('udp') ? [`proxy-reply-header = ${run.proxyProtocol.replyHeader}`] : []),
    ] : []),
    ...(run.sendProxy ? [`send-proxy = "${run.sendProxy}"`] : []),
    `upstream-source = "${run.upstreamSource}"`,
  ];
}
