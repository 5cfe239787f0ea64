// The TCP cases: single-stream throughput (iperf3), new connections per second
// with a short reply (wrk, Connection: close), and the proxy's memory per idle
// proxied connection. Each checks that the backend saw the client's address,
// so a proxy that quietly stopped being transparent cannot post a number.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Namespace, SpawnedProcess, waitForListener } from '../../src/lab/netns';
import { formatEndpoint } from '../../src/addr';
import { BenchCase, BenchOptions, DerivedCase, PreparedCase, measureWindow } from './case';
import { ADDR, LOAD_CPU, TUNED_CLIENT_SYSCTLS, runBounded, sleep, spawnPinned, stopWithin, waitUntil } from './lab';
import {
  BenchContext, HostPort, ProxyUnderTest, TARGETS, haproxyTarget, kernelTarget, relayTarget, nginxTarget, relayAdminTarget, BENCH_ADMIN,
  relayProxyV2Target,
} from './targets';
import { writeProxyHeader } from '../../src/proxy-protocol';
import { httpBackendConfig, startNginx } from './nginx';
import { openFds, totalCpuSeconds, totalRssKiB } from './proc';

const IPERF_PORT = 5201;
const HTTP_PORT = 80;
const IDLE_PORT = 7000;
/** Allowance on top of a run's own length for start-up and teardown of the load generator. */
const SLACK_MS = 20_000;

export const tcpThroughput: BenchCase = {
  id: 'tcp-throughput',
  title: 'TCP single-stream throughput',
  unit: 'Gbit/s',
  decimals: 2,
  perCore: true,
  targets: TARGETS,
  goal: { kind: 'ratio-at-least', min: 1.1 }, // issue 21
  method: (o) => `\`iperf3 -c ENTRY -p PORT -t ${o.seconds} -J\` in the client namespace against \`iperf3 -s\` in the ` +
    'backend namespace, both on CPU 0; the figure is iperf3\'s receiver-side rate (end.sum_received). The iperf3 ' +
    'server\'s log must show the data stream coming from the client\'s address. Two things in the runs below are ' +
    'iperf3 and the lab, not the proxies: at the end of a test the iperf3 server closes its data socket while the ' +
    'client still sends, so the stream ends in a reset (nginx logs `recv() failed (104...)`; relay logs it at info, ' +
    'not shown at warn); and the proxied paths show retransmits although nothing is dropped: softnet_stat and the ' +
    'veth counters show no drops, and the client\'s nstat counts them as spurious (DSACKs received, SACK ' +
    'reordering). Most likely a flow\'s packets are queued on both CPUs\' backlogs (sent from the proxy\'s CPU and ' +
    'from softirq on the other) and arrive out of order; kernel routing, all on CPU 0, shows none.',
  prepare: prepareThroughput,
};

async function prepareThroughput(ctx: BenchContext, options: BenchOptions): Promise<PreparedCase> {
  const server = spawnPinned(ctx.lab, ctx.net.backend, LOAD_CPU,
    ['iperf3', '-s', '-B', ADDR.backend4, '-p', String(IPERF_PORT), '--forceflush']);
  await waitForListener(ctx.net.backend, 'tcp', IPERF_PORT);
  return {
    backend: { host: ADDR.backend4, port: IPERF_PORT },
    async measure(proxy) {
      const logStart = server.stdout().length;
      const argv = ['iperf3', '-c', proxy.entry.host, '-p', String(proxy.entry.port), '-t', String(options.seconds), '-J'];
      const window = await measureWindow(proxy, () =>
        runBounded(ctx.lab, ctx.net.client, LOAD_CPU, argv, options.seconds * 1000 + SLACK_MS));
      const report = parseIperf(window.result.stdout, window.result.stderr);
      await sleep(100); // the server's lines for this test may trail the client's exit
      const peers = [...server.stdout().slice(logStart).matchAll(/connected to (\S+) port/g)].map((m) => m[1]);
      return {
        ...window,
        value: report.bitsPerSecond / 1e9,
        sawClient: peers.length > 0 && peers.every((p) => p === ADDR.client4),
        details: { retransmits: report.retransmits, backendSaw: [...new Set(peers)].join(' ') || 'nothing' },
      };
    },
    close: () => stopWithin(server, 2_000),
  };
}

function parseIperf(stdout: string, stderr: string): { bitsPerSecond: number; retransmits: number } {
  let json: { error?: string; end?: { sum_received?: { bits_per_second: number }; sum_sent?: { retransmits?: number } } };
  try {
    json = JSON.parse(stdout);
  } catch {
    throw new Error(`iperf3 printed no JSON: ${stderr.trim() || stdout.slice(0, 300)}`);
  }
  const received = json.end?.sum_received?.bits_per_second;
  if (json.error || received === undefined) throw new Error(`iperf3 failed: ${json.error ?? 'no end.sum_received'}`);
  return { bitsPerSecond: received, retransmits: json.end?.sum_sent?.retransmits ?? 0 };
}

/** The connection rate is the case HAProxy is measured in too (when installed: run.ts drops it otherwise). */
const CONN_RATE_TARGETS = [relayTarget, nginxTarget, haproxyTarget, kernelTarget];

/** TIME_WAIT figures are per this many connections. */
const PER_CONNS = 10_000;

export interface ConnRateVariant {
  id: string;
  title: string;
  /** sysctls set in the series' fresh client namespace; none: the kernel's defaults. */
  clientSysctls: readonly string[];
  goal: BenchCase['goal'];
  timeWaitGoal: BenchCase['goal'];
  note: string;
}

export function connRateCase(v: ConnRateVariant): BenchCase {
  const timeWait: DerivedCase = {
    id: `${v.id}-time-wait`,
    source: v.id,
    title: `TIME_WAIT left on the client per ${PER_CONNS.toLocaleString('en-US')} connections${v.clientSysctls.length > 0 ? ' (tuned client)' : ''}`,
    unit: `TIME_WAIT/${PER_CONNS / 1000}k conns`,
    decimals: 0,
    perCore: false,
    targets: CONN_RATE_TARGETS,
    series: {},
    goal: v.timeWaitGoal,
    method: () => `From the runs of ${v.id}: the client namespace\'s TIME_WAIT sockets entered during a run, per ` +
      `${PER_CONNS.toLocaleString('en-US')} requests wrk completed. Entered = the change in \`ss -tanH state time-wait\` ` +
      'in the client namespace over the run, plus those that left TIME_WAIT during it (the namespace\'s TcpExt ' +
      'TW, TWRecycled and TWKilled counters: expired, reused by a connect, or killed); sockets refused a TIME_WAIT ' +
      'because the table was full (TCPTimeWaitOverflow) are counted too. Whoever closes first keeps the TIME_WAIT: ' +
      'through kernel routing or nginx the backend does (it closes on `Connection: close`), so the client keeps ' +
      'almost none. details also give the same figure for the relay and backend namespaces.',
    valueOf: (s) => Number(s.details.clientTimeWaitPer10k),
  };
  return {
    id: v.id,
    title: v.title,
    unit: 'conn/s',
    decimals: 0,
    perCore: true,
    targets: CONN_RATE_TARGETS,
    goal: v.goal,
    series: { clientSysctls: v.clientSysctls },
    derived: [timeWait],
    method: (o) => `\`wrk -t1 -c${o.rateConns} -d${o.seconds}s --timeout 2s -H 'Connection: close' http://ENTRY/\` in the ` +
      'client namespace on CPU 0, against nginx (HTTP, one worker, access log off) in the backend namespace on CPU 0, ' +
      'which replies with the address it saw. Connection: close makes every request a new TCP connection, so ' +
      'requests/s is connections/s. Before each run one `curl` through the path must get the client\'s address back. ' +
      `Each target\'s ${o.runs} run(s) go back to back (the proxy restarted for each, the client not) in a client ` +
      'namespace made fresh for that target, so TIME_WAIT one run leaves on the client weighs on the next run of ' +
      'the same target, and on no other target. A run repeated because other jobs disturbed it stays in the ' +
      'series (its TIME_WAIT weighs on the runs after it; runInSeries in details counts every run the client ' +
      `namespace saw). ${v.note} The target asks for the ratio in every run, not only the ` +
      'first: the table of runs gives relay/nginx run by run, and the verdict takes the lowest.',
    prepare: (ctx, options) => prepareConnRate(ctx, options),
  };
}

export const tcpConnRate = connRateCase({
  id: 'tcp-conn-rate',
  title: 'New TCP connections per second (short HTTP reply)',
  clientSysctls: [],
  goal: { kind: 'ratio-at-least', min: 0.8, everyRun: true }, // issue 21
  timeWaitGoal: { kind: 'ratio-at-most', max: 1 }, // issue 21
  note: 'Every namespace runs with the kernel\'s default sysctls (tcp_tw_reuse=2: TIME_WAIT reused on loopback ' +
    'only; ports 32768-60999).',
});

export const tcpConnRateTunedClient = connRateCase({
  id: 'tcp-conn-rate-tuned-client',
  title: 'New TCP connections per second, tuned client (not a target)',
  clientSysctls: TUNED_CLIENT_SYSCTLS,
  goal: { kind: 'none', why: `the client runs ${TUNED_CLIENT_SYSCTLS.join(', ')}, under which its TIME_WAIT costs nothing; the target is judged with the kernel\'s defaults` },
  timeWaitGoal: { kind: 'none', why: 'tuned client: reported beside the default-sysctl figure, not judged' },
  note: `Tuned client (--tuned-client): ${TUNED_CLIENT_SYSCTLS.map((x) => `\`${x}\``).join(', ')} in this case\'s ` +
    'client namespaces only, as a load generator is often tuned; TIME_WAIT on the client then costs nothing, which ' +
    'hides a proxy that leaves it there. Reported beside the main case, not judged.',
});

/**
 * What --admin costs new connections: relay with and without it, runs
 * interleaved (relay, relay-admin, relay, ...) so drift on the machine falls
 * on both alike. The data path bumps the same counters either way; --admin
 * adds the listener, prom-client's default metrics (an event-loop delay
 * monitor, a GC observer) and the scrapes. The client is tuned so that the
 * TIME_WAIT of earlier runs does not slow later ones.
 */
/** Issue 12 asks for medians of at least 5 interleaved runs, with the spread. */
const ADMIN_RUNS = 5;

export const tcpConnRateAdmin: BenchCase = {
  ...connRateCase({
    id: 'tcp-conn-rate-admin',
    title: 'New TCP connections per second, with --admin against without',
    clientSysctls: [],
    goal: { kind: 'variant-at-least', variant: 'relay-admin', min: 0.97 }, // issue 12: --admin costs under 3%
    timeWaitGoal: { kind: 'none', why: 'not measured here' },
    note: '',
  }),
  targets: [relayTarget, relayAdminTarget],
  minRuns: ADMIN_RUNS,
  series: undefined,
  derived: undefined,
  clientSysctls: TUNED_CLIENT_SYSCTLS,
  method: (o) => `As tcp-conn-rate (wrk, \`Connection: close\`, nginx backend), relay alone against relay with ` +
    `\`--admin ${BENCH_ADMIN}\`, ${Math.max(o.runs, ADMIN_RUNS)} runs each, interleaved, in one client namespace tuned with ` +
    `${TUNED_CLIENT_SYSCTLS.map((x) => `\`${x}\``).join(', ')} (the TIME_WAIT of earlier runs would otherwise slow later ` +
    'ones). During each relay-admin run /metrics is scraped once a second (curl in the relay namespace, off the proxy CPU), ' +
    'harsher than a usual 15 s scrape interval. The verdict gives both medians and the lowest and highest run of each.',
};

/**
 * What a PROXY v2 header costs new connections (issue 14: under 5%): relay
 * alone against relay reading a v2 header in front of every connection,
 * interleaved, wrk sending the header through a Lua script (its request() is
 * the header and the GET in one write, as a front sends them; both targets
 * run a script, so wrk's own cost is the same). More runs than --runs' default:
 * a 5% difference hides in the drift between 3 runs on this machine, and
 * the medians of 5 runs still moved from 0.945x to 1.03x from one set to the next.
 */
const PROXY_V2_RUNS = 9;

const proxyV2CpuPerConn: DerivedCase = {
  id: 'tcp-conn-rate-proxy-v2-cpu',
  source: 'tcp-conn-rate-proxy-v2',
  title: 'relay CPU time per new connection, with a PROXY v2 header against without',
  unit: 'µs/conn',
  decimals: 1,
  perCore: false,
  targets: [relayTarget, relayProxyV2Target],
  goal: { kind: 'none', why: 'beside the rate: if the load generator bounds the rate, the header\'s cost shows here' },
  method: () => 'From the runs of tcp-conn-rate-proxy-v2: relay\'s CPU time (user + system) during a run divided by ' +
    'the requests wrk completed in it, in microseconds.',
  valueOf: (s) => Number(s.details.requests) > 0 ? (s.proxyCpuSeconds ?? 0) / Number(s.details.requests) * 1e6 : NaN,
};

export const tcpConnRateProxyV2: BenchCase = {
  ...connRateCase({
    id: 'tcp-conn-rate-proxy-v2',
    title: 'New TCP connections per second, with a PROXY v2 header in front against without',
    clientSysctls: [],
    goal: { kind: 'variant-at-least', variant: 'relay-proxy-v2', min: 0.95 }, // issue 14: the header costs under 5%
    timeWaitGoal: { kind: 'none', why: 'not measured here' },
    note: '',
  }),
  targets: [relayTarget, relayProxyV2Target],
  minRuns: PROXY_V2_RUNS,
  series: undefined,
  derived: [proxyV2CpuPerConn],
  clientSysctls: TUNED_CLIENT_SYSCTLS,
  method: (o) => `As tcp-conn-rate (wrk, \`Connection: close\`, nginx backend), relay alone against relay with ` +
    `\`--proxy-protocol v2 --proxy-from CLIENT/32\`, ${Math.max(o.runs, PROXY_V2_RUNS)} runs each, interleaved, in one ` +
    `client namespace tuned with ${TUNED_CLIENT_SYSCTLS.map((x) => `\`${x}\``).join(', ')}. wrk runs a Lua script ` +
    'for both (`-s`, a request() function, so wrk calls it for every connection): for relay-proxy-v2 it returns a ' +
    '28-byte PROXY v2 header (TCP over IPv4, source the client\'s address, written by relay\'s own writer) followed ' +
    'by the GET, in one write; for relay the GET alone. Before each run one connection through the path (short-conns.js, ' +
    'with a header for relay-proxy-v2) must get the client\'s address back. The verdict gives both medians and the ' +
    'lowest and highest run of each; tcp-conn-rate-proxy-v2-cpu gives relay\'s CPU time per connection from the same runs.',
  prepare: (ctx, options) => prepareConnRate(ctx, options, proxyV2Load(ctx)),
};

/** How a connection-rate run loads one target: wrk's extra arguments, and which address the backend saw. */
export interface ConnRateLoad {
  wrkArgs(proxy: ProxyUnderTest): string[];
  addressBackendSaw(ctx: BenchContext, proxy: ProxyUnderTest, url: string): Promise<string>;
  /** wrk's connections for this target, when not --conns. */
  conns?(proxy: ProxyUnderTest): number;
}

/**
 * A paced load: each of wrk's connections waits delayMs before each request
 * (wrk's delay() hook), so a target's rate is about its connections / delayMs,
 * well below what it serves flat out. conns: wrk's connections per target.
 */
export function pacedLoad(ctx: BenchContext, delayMs: number, conns: (proxy: ProxyUnderTest) => number): ConnRateLoad {
  const script = path.join(ctx.lab.dir, `wrk-delay-${delayMs}.lua`);
  fs.writeFileSync(script, `-- written by test/bench/tcp.ts: ${delayMs} ms before every request\n` +
    `function delay() return ${delayMs} end\n`);
  return { ...PLAIN_LOAD, wrkArgs: () => ['-s', script], conns };
}

const PLAIN_LOAD: ConnRateLoad = {
  wrkArgs: () => [],
  addressBackendSaw: (ctx, _proxy, url) => addressBackendSaw(ctx, url),
};

/** The source port the header names: any will do, relay binds the client's address with a port of its own choosing. */
const HEADER_SOURCE_PORT = 40_000;

/** wrk with a Lua script for both targets; a v2 header in front of each request for relay-proxy-v2. */
function proxyV2Load(ctx: BenchContext): ConnRateLoad {
  const withHeader = (proxy: ProxyUnderTest) => proxy.name === 'relay-proxy-v2';
  const scriptFor = (proxy: ProxyUnderTest) => {
    const header = withHeader(proxy) ? writeProxyHeader('v2', 'stream', { address: ADDR.client4, port: HEADER_SOURCE_PORT },
      { address: proxy.entry.host, port: proxy.entry.port }) : Buffer.alloc(0);
    const file = path.join(ctx.lab.dir, `wrk-${proxy.name}.lua`);
    fs.writeFileSync(file, wrkPrefixScript(header));
    return file;
  };
  return {
    wrkArgs: (proxy) => ['-s', scriptFor(proxy)],
    addressBackendSaw: (c, proxy, url) => withHeader(proxy) ? addressBackendSawWithHeader(c, proxy.entry) : addressBackendSaw(c, url),
  };
}

/**
 * A wrk script whose every request (so every connection, with Connection:
 * close) starts with prefix. wrk calls request() once before it connects, to
 * check that what it returns parses as HTTP, and exits if not ("invalid HTTP
 * method"): that first call gets the GET alone, every call after it the prefix too.
 */
function wrkPrefixScript(prefix: Buffer): string {
  const bytes = [...prefix].map((b) => `\\${b}`).join('');
  return `-- written by test/bench/tcp.ts: ${prefix.length} bytes in front of every request\n` +
    `local prefix = "${bytes}"\n` +
    'local get\n' +
    'local checked = false\n' +
    'function init(args) get = wrk.format() end\n' +
    'function request()\n' +
    '  if not checked then checked = true; return get end\n' +
    '  return prefix .. get\n' +
    'end\n';
}

/** As addressBackendSaw, through a listener that wants a PROXY v2 header first (short-conns.js --proxy-v2). */
async function addressBackendSawWithHeader(ctx: BenchContext, entry: HostPort): Promise<string> {
  const argv = [process.execPath, path.join(__dirname, 'short-conns.js'), '--target', formatEndpoint(entry.host, entry.port),
    '--conns', '1', '--proxy-v2'];
  let last = '';
  for (let attempt = 0; attempt < 10; attempt++) {
    const out = await runBounded(ctx.lab, ctx.net.client, LOAD_CPU, argv, 10_000);
    const done = JSON.parse(out.stdout.trim().split('\n').at(-1) || '{}') as { ok?: number; saw?: Record<string, number>; errors?: object };
    if (done.ok === 1 && done.saw) return Object.keys(done.saw)[0];
    last = out.stderr.trim() || JSON.stringify(done.errors ?? {});
    await sleep(200);
  }
  throw new Error(`no reply through ${formatEndpoint(entry.host, entry.port)} with a PROXY v2 header: ${last}`);
}

/** TIME_WAIT sockets in ns now, and the counters of sockets that have left TIME_WAIT (or never got one). */
function timeWaitState(ns: Namespace): { now: number; left: number; overflow: number } {
  const now = ns.tryRun('ss', '-tanH', 'state', 'time-wait').stdout.split('\n').filter(Boolean).length;
  const ext = tcpExt(ns);
  return { now, left: (ext.TW ?? 0) + (ext.TWRecycled ?? 0) + (ext.TWKilled ?? 0), overflow: ext.TCPTimeWaitOverflow ?? 0 };
}

/** The TcpExt counters of /proc/net/netstat as seen inside ns (each namespace has its own). */
function tcpExt(ns: Namespace): Record<string, number> {
  const lines = ns.tryRun('cat', '/proc/net/netstat').stdout.split('\n').filter((l) => l.startsWith('TcpExt:'));
  if (lines.length < 2) return {};
  const keys = lines[0].split(/\s+/).slice(1);
  const values = lines[1].split(/\s+/).slice(1).map(Number);
  return Object.fromEntries(keys.map((k, i) => [k, values[i]]));
}

/** TIME_WAIT entered in each namespace between two readings. */
function timeWaitEntered(before: { now: number; left: number; overflow: number }, after: typeof before): number {
  return (after.now - before.now) + (after.left - before.left) + (after.overflow - before.overflow);
}

/** relay-admin: GET /metrics once a second while it runs (curl on the load CPU); returns what stops it. */
function scrapeEverySecond(ctx: BenchContext, proxy: ProxyUnderTest): () => void {
  if (proxy.name !== 'relay-admin') return () => undefined;
  const timer = setInterval(() => {
    spawnPinned(ctx.lab, ctx.net.relay, LOAD_CPU, ['curl', '-s', '-o', '/dev/null', '-m', '1', `http://${BENCH_ADMIN}/metrics`]);
  }, 1000);
  return () => clearInterval(timer);
}

/** Scrapes timed on the idle relay after a relay-admin run, to price one. */
const PRICED_SCRAPES = 20;

/**
 * Where --admin's cost goes: relay's CPU per GET /metrics, timed on the idle
 * relay right after the run, and the share of the run's CPU the run's
 * scrapes (one a second) took at that price. The rest of any gap is the
 * default metrics' event-loop delay monitor and GC observer, which run
 * whether or not anyone scrapes.
 */
function scrapeCost(ctx: BenchContext, proxy: ProxyUnderTest, seconds: number, runCpuSeconds: number | undefined) {
  const pids = proxy.pids();
  const before = totalCpuSeconds(pids);
  ctx.net.relay.run('sh', '-c', `for i in $(seq ${PRICED_SCRAPES}); do curl -s -o /dev/null -m 1 http://${BENCH_ADMIN}/metrics; done`);
  const perScrapeMs = ((totalCpuSeconds(pids) - before) / PRICED_SCRAPES) * 1000;
  return {
    scrapeCpuMs: Number(perScrapeMs.toFixed(2)),
    scrapesShareOfRunCpu: runCpuSeconds ? Number(((seconds * perScrapeMs) / 1000 / runCpuSeconds).toFixed(4)) : undefined,
  };
}

export async function prepareConnRate(ctx: BenchContext, options: BenchOptions, load: ConnRateLoad = PLAIN_LOAD): Promise<PreparedCase> {
  const backend = { host: ADDR.backend4, port: HTTP_PORT };
  const nginx = await startNginx(ctx.lab, ctx.net.backend, LOAD_CPU, 'http', (dir) => httpBackendConfig(dir, backend), HTTP_PORT);
  return {
    backend,
    async measure(proxy) {
      const url = `http://${formatEndpoint(proxy.entry.host, proxy.entry.port)}/`;
      const saw = await load.addressBackendSaw(ctx, proxy, url);
      const spaces = { client: ctx.net.client, relay: ctx.net.relay, backend: ctx.net.backend };
      const before = Object.fromEntries(Object.entries(spaces).map(([k, ns]) => [k, timeWaitState(ns)]));
      const argv = ['wrk', '-t1', `-c${load.conns?.(proxy) ?? options.rateConns}`, `-d${options.seconds}s`, '--timeout', '2s',
        '-H', 'Connection: close', ...load.wrkArgs(proxy), url];
      const stopScraping = scrapeEverySecond(ctx, proxy);
      const window = await measureWindow(proxy, () =>
        runBounded(ctx.lab, ctx.net.client, LOAD_CPU, argv, options.seconds * 1000 + SLACK_MS)).finally(stopScraping);
      const after = Object.fromEntries(Object.entries(spaces).map(([k, ns]) => [k, timeWaitState(ns)]));
      const report = parseWrk(window.result.stdout, window.result.stderr);
      const scrapes = proxy.name === 'relay-admin' ? scrapeCost(ctx, proxy, options.seconds, window.proxyCpuSeconds) : {};
      const per10k = (k: keyof typeof spaces) => report.requests > 0
        ? Math.round(timeWaitEntered(before[k], after[k]) / report.requests * PER_CONNS) : 0;
      return {
        ...window,
        value: report.requestsPerSecond,
        sawClient: saw === ADDR.client4,
        details: { ...(load.conns ? { wrkConns: load.conns(proxy) } : {}),
          requests: report.requests, socketErrors: report.socketErrors, non2xx: report.non2xx,
          clientTimeWaitPer10k: per10k('client'), relayNsTimeWaitPer10k: per10k('relay'),
          backendTimeWaitPer10k: per10k('backend'), clientTimeWaitAfter: after.client.now,
          clientTimeWaitOverflow: after.client.overflow - before.client.overflow, backendSaw: saw, ...scrapes },
      };
    },
    close: async () => {
      await stopWithin(nginx.proc, 2_000);
      const errors = nginx.errors();
      if (errors.length > 0) process.stderr.write(`bench: the HTTP backend logged:\n  ${errors.slice(0, 5).join('\n  ')}\n`);
    },
  };
}

/** One request through url from the client; the backend's reply is the address it saw. Retries while a proxy starts. */
async function addressBackendSaw(ctx: BenchContext, url: string): Promise<string> {
  let last = '';
  for (let attempt = 0; attempt < 10; attempt++) {
    const out = await runBounded(ctx.lab, ctx.net.client, LOAD_CPU, ['curl', '-sS', '--max-time', '2', url], 5_000);
    if (out.code === 0) return out.stdout.trim();
    last = out.stderr.trim();
    await sleep(200);
  }
  throw new Error(`no reply through ${url}: ${last}`);
}

function parseWrk(stdout: string, stderr: string): { requestsPerSecond: number; requests: number; socketErrors: string; non2xx: number } {
  const rate = /Requests\/sec:\s+([\d.]+)/.exec(stdout);
  const total = /(\d+) requests in/.exec(stdout);
  if (!rate || !total) throw new Error(`wrk printed no result: ${stderr.trim() || stdout.trim()}`);
  const errors = /Socket errors: (.*)/.exec(stdout);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(stdout);
  return {
    requestsPerSecond: Number(rate[1]),
    requests: Number(total[1]),
    socketErrors: errors ? errors[1] : 'none',
    non2xx: non2xx ? Number(non2xx[1]) : 0,
  };
}

const WARM_UP_CONNS = 200;
const SETTLE_MS = 2_000;

export const tcpIdleMemory: BenchCase = {
  id: 'tcp-idle-memory',
  title: 'Proxy memory per idle proxied TCP connection',
  unit: 'KiB/conn',
  decimals: 2,
  perCore: false,
  targets: [relayTarget, nginxTarget], // kernel routing holds no per-connection state in a process
  goal: { kind: 'at-most', max: 4.0 }, // issue 21: no higher than when it was filed
  method: (o) => `The proxy starts fresh; ${WARM_UP_CONNS} connections are opened through it and closed again ` +
    '(so code paths and allocator pools that every first connection pays for are not charged to the connections); ' +
    `baseline RSS is read; then a client in the client namespace opens ${o.idleConns} connections (at most 200 ` +
    'connecting at a time) to a server in the backend namespace that accepts and holds them and never sends. Once the ' +
    `backend holds all ${o.idleConns}, and after ${SETTLE_MS / 1000} s to settle, RSS is read again. The figure is ` +
    `(RSS after - baseline) / ${o.idleConns}. RSS is VmRSS from /proc/PID/status, summed over the proxy's processes ` +
    '(relay: the node process, whose pid is checked to be node itself, not `ip netns exec`, env or taskset; nginx: ' +
    'master and worker). Kernel socket buffers are not in RSS and not counted, for either proxy. Connections are ' +
    'released by the backend closing them (FIN), so TIME_WAIT stays in the backend namespace and the proxy\'s ' +
    'ephemeral ports toward the backend are free for the next run. "backend saw client": the backend accepted exactly ' +
    `${o.idleConns} connections from the client's address while they were opened, and nothing else but relay's own ` +
    'active health checks (a connect from relay\'s backend-side address every 2 s, on by default; counted in ' +
    'healthChecks).',
  prepare: prepareIdleMemory,
};

interface ServerStatus {
  accepted: number;
  open: number;
  remotes: Record<string, number>;
}

async function prepareIdleMemory(ctx: BenchContext, options: BenchOptions): Promise<PreparedCase> {
  const backend = { host: ADDR.backend4, port: IDLE_PORT };
  const server = spawnPinned(ctx.lab, ctx.net.backend, LOAD_CPU,
    [process.execPath, idlePeersPath(), 'serve', '--listen', formatEndpoint(backend.host, backend.port)]);
  await waitForListener(ctx.net.backend, 'tcp', IDLE_PORT);
  const status = (): ServerStatus => lastStatus(server) ?? { accepted: 0, open: 0, remotes: {} };
  return {
    backend,
    async measure(proxy) {
      const pids = proxy.pids();
      const rssFresh = totalRssKiB(pids);
      await holdAndRelease(ctx, proxy, WARM_UP_CONNS, server, status);
      const rssBase = totalRssKiB(pids);
      const before = status();
      const start = process.hrtime.bigint();
      const holder = await openAndHold(ctx, proxy.entry, options.idleConns, () => status().open);
      await sleep(SETTLE_MS);
      const rssLoaded = totalRssKiB(pids);
      const fds = pids.reduce((n, pid) => n + openFds(pid), 0);
      const after = status();
      const wallSeconds = Number(process.hrtime.bigint() - start) / 1e9;
      await release(holder, server, status);
      const delta = (addr: string) => (after.remotes[addr] ?? 0) - (before.remotes[addr] ?? 0);
      const fromClient = delta(ADDR.client4);
      // relay's active health checks (a connect every couple of seconds, on by
      // default) come from its own address: allowed, and counted; anything else is not.
      const healthChecks = delta(ADDR.relayBackendSide4);
      return {
        value: (rssLoaded - rssBase) / options.idleConns,
        wallSeconds,
        hostBusy: [],
        sawClient: fromClient === options.idleConns && fromClient + healthChecks === after.accepted - before.accepted,
        details: { rssFreshKiB: rssFresh, rssBaselineKiB: rssBase, rssLoadedKiB: rssLoaded, fds,
          backendHeld: after.open, healthChecks,
          backendSaw: Object.entries(after.remotes).map(([addr, n]) => `${addr} ${n - (before.remotes[addr] ?? 0)}`).join(', '), perConnFromFreshKiB: Number(((rssLoaded - rssFresh) / options.idleConns).toFixed(2)) },
      };
    },
    close: () => stopWithin(server, 2_000),
  };
}

/** Open n connections through the proxy, wait until the backend holds them all. */
async function openAndHold(ctx: BenchContext, entry: HostPort, n: number, backendOpen: () => number): Promise<SpawnedProcess> {
  const holder = spawnPinned(ctx.lab, ctx.net.client, LOAD_CPU, [process.execPath, idlePeersPath(), 'hold',
    '--target', formatEndpoint(entry.host, entry.port), '--conns', String(n), '--parallel', '200']);
  const held = JSON.parse(await holder.waitFor(/\{"event":"held".*\}/, 120_000)) as
    { open: number; closed: number; failed: number; errors: object };
  if (held.open !== n) {
    await holder.stop('SIGKILL');
    throw new Error(`${held.open} of ${n} connections open: ${held.closed} closed by the other side after connecting, ` +
      `${held.failed} failed to connect ${JSON.stringify(held.errors)}`);
  }
  // The client's connect completes at the proxy's kernel; the upstream may still be on its way.
  await waitUntil(() => backendOpen() >= n, 30_000, () => `backend holds ${backendOpen()} of ${n}`);
  return holder;
}

/**
 * Close the held connections from the backend's side (see idle-peers.ts for
 * why), wait until they are gone, then stop the holder.
 */
async function release(holder: SpawnedProcess, server: SpawnedProcess, status: () => ServerStatus): Promise<void> {
  server.child.kill('SIGUSR2');
  await waitUntil(() => status().open === 0, 30_000, () => `backend still holds ${status().open} connections`);
  await holder.stop('SIGKILL');
}

async function holdAndRelease(ctx: BenchContext, proxy: ProxyUnderTest, n: number, server: SpawnedProcess,
  status: () => ServerStatus): Promise<void> {
  await release(await openAndHold(ctx, proxy.entry, n, () => status().open), server, status);
  await sleep(500);
}

function lastStatus(proc: SpawnedProcess): ServerStatus | undefined {
  const lines = proc.stdout().split('\n').filter((l) => l.startsWith('{"event":"status"'));
  return lines.length > 0 ? JSON.parse(lines[lines.length - 1]) as ServerStatus : undefined;
}

function idlePeersPath(): string {
  return path.join(__dirname, 'idle-peers.js');
}

/** In running order; the tuned-client case runs only when asked for (--tuned-client, or by --only). */
export const TCP_CASES: readonly BenchCase[] = [tcpThroughput, tcpConnRate, tcpConnRateTunedClient, tcpConnRateAdmin, tcpConnRateProxyV2,
  tcpIdleMemory];
