// The system-call budget: how many system calls the proxy makes per proxied
// TCP connection and per one-reply UDP session, by call, relay beside nginx.
// `strace -f -c` is attached to the running proxy after its start and a
// warm-up, and detached before it stops, so start-up and shutdown are not
// counted; a fixed number of connections or sessions runs in between, and the
// counts are divided by it. strace slows the proxy down a lot: these cases
// count calls, they say nothing about speed.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SpawnedProcess } from '../../src/lab/netns';
import { formatEndpoint } from '../../src/addr';
import { BenchCase, BenchOptions, PreparedCase, Sample } from './case';
import { ADDR, LOAD_CPU, PROXY_CPU, runBounded, sleep, spawnPinned, stopWithin, waitUntil } from './lab';
import { BenchContext, ProxyUnderTest, nginxTarget, relayTarget, udpNginxTarget, udpRelayTarget } from './targets';
import { httpBackendConfig, startNginx } from './nginx';
import { holdSessions, startEcho, UDP_MAX_SESSIONS } from './udp';

const HTTP_PORT = 8000;
const UDP_PORT = 9003;
/** Connections or sessions counted, and run before counting (the warm-up). */
const COUNTED = 2_000;
const WARM_UP = 200;
/** At most this many at a time: the proxy's calls per connection, not its batching under load. */
const PARALLEL = 4;
/** After the load, before detaching: the last closes (FIN, session end) are the connections' calls too. */
const TAIL_MS = 500;
const STRACE_WAIT_MS = 10_000;

type Measured = Omit<Sample, 'target' | 'run' | 'problems' | 'busyBefore' | 'foreignCores' | 'proxyCpuOthers'>;

/** What strace -c printed: calls and failed calls by name (total excluded). */
export function parseStraceSummary(text: string): Record<string, { calls: number; errors: number }> {
  const counts: Record<string, { calls: number; errors: number }> = {};
  // "% time     seconds  usecs/call     calls    errors syscall"; errors is blank when none failed.
  for (const line of text.split('\n')) {
    const m = /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?([a-z_0-9]+)\s*$/.exec(line);
    if (!m || m[3] === 'total') continue;
    counts[m[3]] = { calls: Number(m[1]), errors: Number(m[2] ?? 0) };
  }
  return counts;
}

/**
 * Attach `strace -f -c` to every process of the proxy (-f: every thread, and
 * any process it forks), run load, detach with SIGINT (strace stops tracing and
 * prints its summary when it attached with -p) and return the summary.
 */
async function countCalls(ctx: BenchContext, proxy: ProxyUnderTest, load: () => Promise<void>):
  Promise<{ counts: Record<string, { calls: number; errors: number }>; wallSeconds: number }> {
  const pids = proxy.pids();
  const out = fs.mkdtempSync(path.join(ctx.lab.dir, 'strace-'));
  const file = path.join(out, 'summary.txt');
  const strace = spawnPinned(ctx.lab, ctx.net.relay, PROXY_CPU,
    ['strace', '-f', '-c', '-o', file, ...pids.flatMap((p) => ['-p', String(p)])]);
  try {
    // "strace: Process N attached" (with "with K threads" for a threaded process), once per pid.
    await waitUntil(() => (strace.stderr().match(/Process \d+ attached/g) ?? []).length >= pids.length, STRACE_WAIT_MS,
      () => `strace attached to ${(strace.stderr().match(/Process \d+ attached/g) ?? []).length} of ${pids.length} ` +
        `processes: ${strace.stderr().trim()}`);
    await sleep(200);
    const t0 = process.hrtime.bigint();
    await load();
    await sleep(TAIL_MS);
    const wallSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
    strace.child.kill('SIGINT');
    await strace.exited(STRACE_WAIT_MS);
    return { counts: parseStraceSummary(fs.readFileSync(file, 'utf8')), wallSeconds };
  } finally {
    // Killing strace detaches it; the proxy goes on.
    await stopWithin(strace, 1_000);
  }
}

function perUnit(counts: Record<string, { calls: number; errors: number }>, n: number): Sample['perCall'] {
  return Object.fromEntries(Object.entries(counts).map(([call, c]) => [call, { calls: c.calls / n, errors: c.errors / n }]));
}

function total(counts: Record<string, { calls: number; errors: number }>): number {
  return Object.values(counts).reduce((sum, c) => sum + c.calls, 0);
}

const STRACE_METHOD = '`strace -f -c -o FILE -p PID...` runs in the relay namespace, attached to every process of the ' +
  'proxy (relay: the node process, -f following all its threads, the libuv pool and V8\'s included; nginx: master ' +
  'and worker) after the proxy has started and served a warm-up; it is detached (SIGINT to strace, which then ' +
  `prints its summary) ${TAIL_MS} ms after the last counted reply, before the proxy is stopped, so neither start-up ` +
  'nor shutdown is counted. The figure is all calls counted, divided by the connections or sessions; the table ' +
  'of calls gives them by name. Calls not made for any connection fall in the window too (timers, relay\'s ' +
  'health check connect every 2 s, GC threads): a few in total, well under 0.1 per connection. strace slows the ' +
  'proxy down many times over: the figure is a count, not a speed.';

/* -------------------------------------------------------------------- TCP */

export const tcpSyscalls: BenchCase = {
  id: 'tcp-syscalls',
  title: 'System calls per proxied TCP connection (short HTTP reply)',
  unit: 'calls/conn',
  decimals: 2,
  perCore: false,
  countOnly: true,
  targets: [relayTarget, nginxTarget],
  goal: { kind: 'ratio-at-most', max: 1 }, // issue 21
  method: () => `\`node short-conns.js\` (test/bench/short-conns.ts) in the client namespace on CPU ${LOAD_CPU} opens ` +
    `${COUNTED.toLocaleString('en-US')} TCP connections through the proxy, at most ${PARALLEL} at a time, each sending ` +
    'one `GET /` with `Connection: close` to nginx (HTTP) in the backend namespace, which replies with the address it ' +
    `saw (a body of a dozen bytes) and closes; a warm-up of ${WARM_UP} connections comes first. ${STRACE_METHOD} ` +
    '"backend saw client": every counted reply named the client\'s address.',
  prepare: prepareTcpSyscalls,
};

async function prepareTcpSyscalls(ctx: BenchContext, _options: BenchOptions): Promise<PreparedCase> {
  const backend = { host: ADDR.backend4, port: HTTP_PORT };
  const nginx = await startNginx(ctx.lab, ctx.net.backend, LOAD_CPU, 'http-syscalls', (dir) => httpBackendConfig(dir, backend), HTTP_PORT);
  return {
    backend,
    async measure(proxy): Promise<Measured> {
      await shortConns(ctx, proxy, WARM_UP);
      let done: ShortConnsResult | undefined;
      const { counts, wallSeconds } = await countCalls(ctx, proxy, async () => { done = await shortConns(ctx, proxy, COUNTED); });
      const result = done as ShortConnsResult;
      return {
        value: total(counts) / result.ok,
        wallSeconds,
        hostBusy: [],
        sawClient: result.ok === COUNTED && result.saw[ADDR.client4] === COUNTED,
        perCall: perUnit(counts, result.ok),
        details: { connections: result.ok, failed: result.failed, calls: total(counts),
          backendSaw: Object.entries(result.saw).map(([addr, n]) => `${addr} ${n}`).join(', ') || 'nothing' },
      };
    },
    close: () => stopWithin(nginx.proc, 2_000),
  };
}

interface ShortConnsResult {
  ok: number;
  failed: number;
  errors: Record<string, number>;
  saw: Record<string, number>;
  ms: number;
}

async function shortConns(ctx: BenchContext, proxy: ProxyUnderTest, n: number): Promise<ShortConnsResult> {
  const argv = [process.execPath, path.join(__dirname, 'short-conns.js'), '--target',
    formatEndpoint(proxy.entry.host, proxy.entry.port), '--conns', String(n), '--parallel', String(PARALLEL)];
  const out = await runBounded(ctx.lab, ctx.net.client, LOAD_CPU, argv, 120_000);
  const line = out.stdout.split('\n').find((l) => l.startsWith('{"event":"done"'));
  if (!line) throw new Error(`short-conns printed no result: ${out.stderr.trim() || out.stdout.trim()}`);
  const result = JSON.parse(line) as ShortConnsResult;
  if (result.failed > 0) {
    throw new Error(`${result.failed} of ${n} connections through ${proxy.name} failed: ${JSON.stringify(result.errors)}`);
  }
  return result;
}

/* -------------------------------------------------------------------- UDP */

const ONE_REPLY = { sessionTimeout: '30s', responses: 1, variant: 'UDP, one reply per session, system calls counted' };

export const udpSyscalls: BenchCase = {
  id: 'udp-syscalls-1reply',
  title: 'System calls per one-reply UDP session',
  unit: 'calls/session',
  decimals: 2,
  perCore: false,
  countOnly: true,
  targets: [
    udpRelayTarget({ maxSessions: UDP_MAX_SESSIONS, ...ONE_REPLY }),
    udpRelayTarget({ maxSessions: UDP_MAX_SESSIONS, ...ONE_REPLY, variant: `${ONE_REPLY.variant}, raw engine`, rawEngine: true }),
    udpNginxTarget({ timeout: ONE_REPLY.sessionTimeout, responses: 1, variant: ONE_REPLY.variant }),
  ],
  goal: { kind: 'ratio-at-most', max: 1 }, // issue 21
  method: () => `\`udp-peers hold\` in the client namespace on CPU ${LOAD_CPU} opens ${COUNTED.toLocaleString('en-US')} ` +
    `UDP sockets (so client ports, so sessions), at most ${PARALLEL * 4} waiting at a time, each sending one 64-byte ` +
    'request through the proxy to `udp-peers echo` in the backend namespace and waiting for its one reply (a request ' +
    'unanswered for 300 ms is sent again, and counted in retries). Both proxies end a session at its first reply ' +
    '(relay --udp-responses 1, nginx `proxy_responses 1`), as for DNS. A warm-up of ' +
    `${WARM_UP} sessions comes first. ${STRACE_METHOD} "backend saw client": every session's reply was marked by ` +
    'the backend as coming from the client\'s own address and port.',
  prepare: prepareUdpSyscalls,
};

async function prepareUdpSyscalls(ctx: BenchContext, _options: BenchOptions): Promise<PreparedCase> {
  const echo = await startEcho(ctx, UDP_PORT, false);
  return {
    backend: echo.backend,
    async measure(proxy): Promise<Measured> {
      const holders: SpawnedProcess[] = [];
      try {
        await holdSessions(ctx, proxy, WARM_UP, holders, PARALLEL * 4);
        let held: Awaited<ReturnType<typeof holdSessions>> | undefined;
        const { counts, wallSeconds } = await countCalls(ctx, proxy, async () => {
          held = await holdSessions(ctx, proxy, COUNTED, holders, PARALLEL * 4);
        });
        const h = held as Awaited<ReturnType<typeof holdSessions>>;
        return {
          value: total(counts) / h.answered,
          wallSeconds,
          hostBusy: [],
          sawClient: h.same === h.sockets,
          perCall: perUnit(counts, h.answered),
          details: { sessions: h.answered, retries: h.retries, calls: total(counts),
            backendSaw: `client address and port for ${h.same} of ${h.sockets} sessions` },
        };
      } finally {
        await Promise.all(holders.map((x) => x.stop('SIGKILL')));
      }
    },
    close: () => stopWithin(echo.proc, 2_000),
  };
}

export const SYSCALL_CASES: readonly BenchCase[] = [tcpSyscalls, udpSyscalls];
