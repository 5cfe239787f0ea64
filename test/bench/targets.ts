// The paths a benchmark case drives traffic through: relay, nginx's stream
// proxy (the transparent proxy to beat) and plain kernel routing (the
// ceiling). Each starts fresh for every run, on the proxy CPU, and says which
// processes to charge CPU time and memory to.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Lab, SpawnedProcess, waitForListener } from '../../src/lab/netns';
import { applyRelayRoutes, cliPath } from '../../src/lab/topology';
import { formatEndpoint } from '../../src/addr';
import { ADDR, BenchLab, FD_HARD_LIMIT, PROXY_CPU, setForwarding, spawnPinned, stopWithin, waitUntil } from './lab';
import { DEFAULT_WORKER_CONNECTIONS, UdpProxyOptions, WorkerProcesses, startNginx, streamProxyConfig, udpStreamProxyConfig } from './nginx';
import { descendants, exePath } from './proc';

/** relay-wildcard: relay listening on 0.0.0.0 rather than on the address the client uses (UDP). */
/** relay-admin: relay with --admin (metrics and the admin API on). */
/**
 * relay-proxy-v2: relay reading a PROXY v2 header in front of every connection.
 * relay-workers: relay with --workers 2, beside relay with one (issue 13's scaling).
 * relay-raw: relay with --udp-engine raw, no socket per UDP session (issues 15 and 16).
 */
export type TargetName = 'relay' | 'relay-wildcard' | 'relay-admin' | 'relay-proxy-v2' | 'relay-workers' | 'relay-raw' | 'nginx' | 'haproxy' | 'kernel';

export interface HostPort {
  host: string;
  port: number;
}

export interface BenchContext {
  lab: Lab;
  net: BenchLab;
}

/** One running path from the client to a backend. */
export interface ProxyUnderTest {
  readonly name: TargetName;
  /** Where the client connects. */
  readonly entry: HostPort;
  /** The processes doing the proxying; empty for kernel routing, which has none. */
  pids(): number[];
  /** Warnings and errors it has logged so far, one message each. */
  problems(): string[];
  stop(): Promise<void>;
}

export interface Target {
  readonly name: TargetName;
  /** What sets this configuration apart when a name has several (UDP cases), for the report. */
  readonly variant?: string;
  /** How it is set up, for docs/benchmarks.md. */
  readonly setup: string;
  start(ctx: BenchContext, backend: HostPort): Promise<ProxyUnderTest>;
}

const RELAY_PORT = 8080;
const NGINX_PORT = 8081;
const HAPROXY_PORT = 8082;
const STOP_GRACE_MS = 3_000;

/**
 * Each TCP connection costs relay 2 fds (client and upstream) under the hard
 * open-file limit of 20,000 here: 9,000 connections fit with room to spare,
 * so relay does not warn that the limit is too low for --max-conns.
 */
const RELAY_MAX_CONNS = 9_000;

export const relayTarget: Target = {
  name: 'relay',
  setup: `\`taskset -c ${PROXY_CPU} node dist/src/cli.js --proto tcp --listen ${ADDR.relayClientSide4}:${RELAY_PORT} ` +
    `--backend BACKEND --log-level warn --max-conns ${RELAY_MAX_CONNS}\` in the relay namespace`,
  start: (ctx, backend) => startRelayTarget(ctx, backend, 'tcp', ['--max-conns', String(RELAY_MAX_CONNS)]),
};

/** Where relay-admin serves /metrics, inside the relay namespace. */
export const BENCH_ADMIN = '127.0.0.1:9901';

/** relay as relayTarget runs it, with --admin: what metrics and the admin API cost the data path. */
export const relayAdminTarget: Target = {
  name: 'relay-admin',
  variant: `--admin ${BENCH_ADMIN}`,
  setup: `as relay, with \`--admin ${BENCH_ADMIN}\``,
  start: async (ctx, backend) => ({
    ...await startRelayTarget(ctx, backend, 'tcp', ['--max-conns', String(RELAY_MAX_CONNS), '--admin', BENCH_ADMIN]),
    name: 'relay-admin',
  }),
};

/**
 * relay as relayTarget runs it, reading a PROXY v2 header in front of every
 * connection from the client, the only trusted sender: what the header costs.
 */
export const relayProxyV2Target: Target = {
  name: 'relay-proxy-v2',
  variant: `--proxy-protocol v2 --proxy-from ${ADDR.client4}/32`,
  setup: `as relay, with \`--proxy-protocol v2 --proxy-from ${ADDR.client4}/32\``,
  start: async (ctx, backend) => ({
    ...await startRelayTarget(ctx, backend, 'tcp', ['--max-conns', String(RELAY_MAX_CONNS),
      '--proxy-protocol', 'v2', '--proxy-from', `${ADDR.client4}/32`]),
    name: 'relay-proxy-v2',
  }),
};

/**
 * relay with --workers N|auto on the CPUs listed (a taskset list): the
 * processes charged are the primary and every worker. count is what
 * --workers gets; listening is how many workers to wait for.
 */
export interface RelayWorkers {
  name: 'relay' | 'relay-workers';
  count: string;
  listening: number;
  cpus: string;
}

/** relay relaying TCP as relayTarget, with workers. */
export function relayWorkersTarget(w: RelayWorkers): Target {
  const flags = ['--max-conns', String(RELAY_MAX_CONNS), '--workers', w.count];
  return {
    name: w.name,
    variant: `--workers ${w.count}`,
    setup: `\`taskset -c ${w.cpus} node dist/src/cli.js --proto tcp --listen ${ADDR.relayClientSide4}:${RELAY_PORT} ` +
      `--backend BACKEND --log-level warn ${flags.join(' ')}\` in the relay namespace`,
    start: (ctx, backend) => startRelayTarget(ctx, backend, 'tcp', flags, ADDR.relayClientSide4, w),
  };
}

export interface UdpRelayOptions {
  maxSessions: number;
  /** --session-timeout, e.g. '30s'. */
  sessionTimeout: string;
  /** --udp-responses: end a session after this many replies (unset: relay's default, no limit). */
  responses?: number;
  /** How this variant differs, for the report. */
  variant?: string;
  /**
   * Listen on 0.0.0.0 (target relay-wildcard): relay then binds each of the
   * host's addresses and follows them as they change; the client still sends
   * to the same address.
   */
  wildcard?: boolean;
  /** --workers, and the CPUs they may use (issue 13). */
  workers?: RelayWorkers;
  /**
   * --udp-engine raw (target relay-raw): relay's routes get the raw engine's
   * rules for the run only, since they turn conntrack on in the relay
   * namespace, which the other targets must not pay for.
   */
  rawEngine?: boolean;
  /** --admin BENCH_ADMIN: the case reads relay's own session count from /metrics. */
  admin?: boolean;
}

/** relay relaying UDP, configured for one case. */
export function udpRelayTarget(o: UdpRelayOptions): Target {
  const flags = ['--max-sessions', String(o.maxSessions), '--session-timeout', o.sessionTimeout,
    ...(o.responses !== undefined ? ['--udp-responses', String(o.responses)] : []),
    ...(o.workers ? ['--workers', o.workers.count] : []),
    ...(o.rawEngine ? ['--udp-engine', 'raw'] : []),
    ...(o.admin ? ['--admin', BENCH_ADMIN] : [])];
  const listen = o.wildcard ? '0.0.0.0' : ADDR.relayClientSide4;
  return {
    name: o.workers?.name ?? (o.rawEngine ? 'relay-raw' : o.wildcard ? 'relay-wildcard' : 'relay'),
    variant: o.variant,
    setup: `\`taskset -c ${o.workers?.cpus ?? PROXY_CPU} node dist/src/cli.js --proto udp --listen ${listen}:${RELAY_PORT} ` +
      `--backend BACKEND --log-level warn ${flags.join(' ')}\` in the relay namespace` +
      (o.rawEngine ? ', after `relay routes apply --udp-engine raw` there (the plain routes are applied again when it stops)' : ''),
    start: o.rawEngine ? (ctx, backend) => startRawEngineTarget(ctx, backend, flags, listen)
      : (ctx, backend) => startRelayTarget(ctx, backend, 'udp', flags, listen, o.workers),
  };
}

/** relay-raw: the raw engine's rules for this run only (they turn conntrack on in the relay namespace). */
async function startRawEngineTarget(ctx: BenchContext, backend: HostPort, flags: string[], listen: string): Promise<ProxyUnderTest> {
  applyRelayRoutes(ctx.net.relay, '--udp-engine', 'raw');
  const plainRoutes = () => {
    applyRelayRoutes(ctx.net.relay);
  };
  let proxy: ProxyUnderTest;
  try {
    proxy = await startRelayTarget(ctx, backend, 'udp', flags, listen);
  } catch (err) {
    plainRoutes();
    throw err;
  }
  return { ...proxy, name: 'relay-raw', stop: () => proxy.stop().finally(plainRoutes) };
}

async function startRelayTarget(ctx: BenchContext, backend: HostPort, proto: 'tcp' | 'udp', flags: string[],
  listen: string = ADDR.relayClientSide4, workers?: RelayWorkers): Promise<ProxyUnderTest> {
  const entry = { host: ADDR.relayClientSide4, port: RELAY_PORT };
  const proc = spawnPinned(ctx.lab, ctx.net.relay, workers?.cpus ?? PROXY_CPU, [process.execPath, cliPath(),
    '--proto', proto, '--listen', formatEndpoint(listen, entry.port),
    '--backend', formatEndpoint(backend.host, backend.port),
    '--log-level', 'warn', ...flags]);
  // At --log-level warn relay prints no start line: wait for its listening socket.
  await waitForListener(ctx.net.relay, proto, entry.port).catch((err: Error) => {
    throw new Error(`relay did not start: ${proc.stderr().trim() || err.message}`);
  });
  assertExecs(proc, fs.realpathSync(process.execPath));
  const primary = proc.child.pid as number;
  // With workers the first socket is one worker's: wait for every worker's before the run.
  if (workers) {
    await waitUntil(() => listeningPids(ctx.net.relay, proto, entry.port) >= workers.listening, 20_000,
      () => `${listeningPids(ctx.net.relay, proto, entry.port)} of ${workers.listening} relay workers listening`);
  }
  return {
    name: workers?.name ?? 'relay',
    entry,
    pids: () => (workers ? [primary, ...descendants(primary)] : [primary]),
    problems: () => relayProblems(proc.stdout() + proc.stderr()),
    stop: () => stopWithin(proc, STOP_GRACE_MS),
  };
}

/** How many processes hold a listening socket on port in ns (ss -p). */
function listeningPids(ns: BenchLab['relay'], proto: 'tcp' | 'udp', port: number): number {
  const out = ns.tryRun('ss', proto === 'tcp' ? '-Hltnp' : '-Hlunp', `sport = :${port}`).stdout;
  return new Set([...out.matchAll(/pid=(\d+)/g)].map((m) => m[1])).size;
}

export const nginxTarget: Target = {
  name: 'nginx',
  setup: `nginx stream proxy, \`worker_processes 1; user root;\`, \`proxy_bind $remote_addr transparent;\`, ` +
    `master and worker on CPU ${PROXY_CPU}, listening on ${ADDR.relayClientSide4}:${NGINX_PORT}`,
  start: (ctx, backend) => startNginxTarget(ctx, 'stream', (dir, entry) => streamProxyConfig(dir, entry, backend), 'tcp'),
};

/** nginx as nginxTarget with `worker_processes auto` and `listen ... reuseport`, on the CPUs listed (issue 13). */
export function nginxWorkersTarget(cpus: string, workers: WorkerProcesses = { processes: 'auto' }): Target {
  return {
    name: 'nginx',
    variant: `worker_processes ${workers.processes}`,
    setup: `as nginx, with \`worker_processes ${workers.processes};\` and \`listen ... reuseport;\`, master and workers ` +
      `on CPUs ${cpus}`,
    start: (ctx, backend) => startNginxTarget(ctx, 'stream', (dir, entry) => streamProxyConfig(dir, entry, backend, workers), 'tcp', cpus),
  };
}

/** nginx relaying UDP, configured for one case (see udpStreamProxyConfig). */
export function udpNginxTarget(o: UdpProxyOptions & { variant?: string; cpus?: string }): Target {
  const responses = o.responses !== undefined ? ` \`proxy_responses ${o.responses};\`` : ' no `proxy_responses` (sessions kept)';
  return {
    name: 'nginx',
    variant: o.variant,
    setup: `nginx stream proxy, UDP: \`listen ${ADDR.relayClientSide4}:${NGINX_PORT} udp;\`, ` +
      `\`proxy_bind $remote_addr:$remote_port transparent;\`,${responses}, \`proxy_timeout ${o.timeout};\`, ` +
      `\`worker_processes 1; user root; worker_rlimit_nofile ${FD_HARD_LIMIT};\` and ` +
      `\`worker_connections ${o.workerConnections ?? DEFAULT_WORKER_CONNECTIONS};\`, master and worker on CPU ${PROXY_CPU}` +
      (o.workers ? `; here \`worker_processes ${o.workers.processes};\` and \`listen ... udp reuseport;\`, on CPUs ${o.cpus}` : ''),
    start: (ctx, backend) => startNginxTarget(ctx, 'udp', (dir, entry) => udpStreamProxyConfig(dir, entry, backend, o), 'udp', o.cpus),
  };
}

async function startNginxTarget(ctx: BenchContext, name: string,
  config: (dir: string, entry: HostPort) => string, proto: 'tcp' | 'udp', cpus: number | string = PROXY_CPU): Promise<ProxyUnderTest> {
  const entry = { host: ADDR.relayClientSide4, port: NGINX_PORT };
  const nginx = await startNginx(ctx.lab, ctx.net.relay, cpus, name, (dir) => config(dir, entry), entry.port, proto);
  assertExecs(nginx.proc, fs.realpathSync('/usr/sbin/nginx'));
  const master = nginx.proc.child.pid as number;
  return {
    name: 'nginx',
    entry,
    pids: () => [master, ...descendants(master)],
    // "2026/.. [error] 12#12: *3 recv() failed (104...) while proxying..., client: ..." -> "error: recv() failed ..."
    problems: () => nginx.errors().map((l) => l.replace(/^.*?\[(\w+)\] \d+#\d+: (\*\d+ )?/, '$1: ').replace(/, client: .*$/, '')),
    stop: () => stopWithin(nginx.proc, STOP_GRACE_MS),
  };
}

/**
 * HAProxy in TCP mode, transparent (`source 0.0.0.0 usesrc clientip`): one
 * process, one thread, as nginx and relay run; root, so it may set
 * IP_TRANSPARENT. No log section: nothing is logged per connection.
 * Optional: cases leave it out when haproxy is not installed.
 */
export const haproxyTarget: Target = {
  name: 'haproxy',
  setup: `HAProxy TCP mode, \`nbthread 1\`, \`source 0.0.0.0 usesrc clientip\` in the backend, run as root in the ` +
    `foreground (\`haproxy -db -f FILE\`), on CPU ${PROXY_CPU}, listening on ${ADDR.relayClientSide4}:${HAPROXY_PORT}`,
  start: (ctx, backend) => startHaproxyTarget(ctx, backend),
};

function haproxyConfig(entry: HostPort, backend: HostPort): string {
  return `global
  nbthread 1
  maxconn ${RELAY_MAX_CONNS}
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend bench
  bind ${formatEndpoint(entry.host, entry.port)}
  default_backend backends
backend backends
  source 0.0.0.0 usesrc clientip
  server backend ${formatEndpoint(backend.host, backend.port)}
`;
}

async function startHaproxyTarget(ctx: BenchContext, backend: HostPort): Promise<ProxyUnderTest> {
  const entry = { host: ADDR.relayClientSide4, port: HAPROXY_PORT };
  const dir = fs.mkdtempSync(path.join(ctx.lab.dir, 'haproxy-'));
  const file = path.join(dir, 'haproxy.cfg');
  fs.writeFileSync(file, haproxyConfig(entry, backend));
  const proc = spawnPinned(ctx.lab, ctx.net.relay, PROXY_CPU, ['haproxy', '-db', '-f', file]);
  await waitForListener(ctx.net.relay, 'tcp', entry.port).catch((err: Error) => {
    throw new Error(`haproxy did not start: ${proc.stderr().trim() || err.message}`);
  });
  assertExecs(proc, fs.realpathSync(HAPROXY_BINARY));
  return {
    name: 'haproxy',
    entry,
    pids: () => [proc.child.pid as number],
    // "[WARNING]  (123) : message" -> "warn: message"
    problems: () => (proc.stdout() + proc.stderr()).split('\n').filter((l) => /\[(WARNING|ALERT)\]/.test(l))
      .map((l) => l.replace(/^.*?\[(WARNING|ALERT)\]\s*(\(\d+\)\s*:\s*)?/, (_m, level: string) => `${level === 'ALERT' ? 'error' : 'warn'}: `)),
    stop: () => stopWithin(proc, STOP_GRACE_MS),
  };
}

const HAPROXY_BINARY = '/usr/sbin/haproxy';

/** Is HAProxy installed here? (Debian: apt-get install haproxy.) */
export function haproxyInstalled(): boolean {
  return fs.existsSync(HAPROXY_BINARY);
}

export const kernelTarget: Target = {
  name: 'kernel',
  setup: 'plain IPv4 forwarding in the relay namespace (net.ipv4.ip_forward=1 there only, for the run); ' +
    'the client connects to the backend directly',
  async start(ctx, backend) {
    setForwarding(ctx.net.relay, true);
    return {
      name: 'kernel',
      entry: backend,
      pids: () => [],
      problems: () => [],
      stop: async () => setForwarding(ctx.net.relay, false),
    };
  },
};

export const TARGETS: readonly Target[] = [relayTarget, nginxTarget, kernelTarget];

/**
 * The pid we measure must be the program itself, not `ip`, env or taskset
 * waiting for it: all of them exec, which this checks.
 */
function assertExecs(proc: SpawnedProcess, exe: string): void {
  const pid = proc.child.pid as number;
  const actual = exePath(pid);
  if (actual !== exe) throw new Error(`pid ${pid} runs ${actual}, not ${exe}: CPU and RSS would be the wrong process's`);
}

/** relay logs JSON lines; at --log-level warn every line is a warning or an error. */
function relayProblems(output: string): string[] {
  return output.split('\n').filter(Boolean).map((line) => {
    try {
      const entry = JSON.parse(line) as { level?: number; msg?: string; code?: string; reason?: string; why?: string };
      const level = (entry.level ?? 0) >= 50 ? 'error' : 'warn';
      const detail = entry.reason ?? entry.why ?? entry.code;
      return `${level}: ${entry.msg ?? line}${detail ? ` (${detail})` : ''}`;
    } catch {
      return `stderr: ${line}`;
    }
  });
}
