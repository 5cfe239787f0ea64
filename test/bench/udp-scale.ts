// The UDP scale case (issue 16): as many live sessions as each proxy can hold,
// from many client addresses and ports, with no socket per session on the
// client either. `udp-peers spread` sends each source's requests from a raw
// socket with the source written into the IP header (addresses of
// SPOOF_PREFIX, local to the client namespace by an AnyIP route), and an
// nftables tproxy rule hands every reply, whatever address and port it was
// sent to, to its one receive socket. It fills the sessions step by step;
// at each step the runner reads the proxy (RSS, fds, sessions held), then
// the client runs request/response across every source for a while.
//
// The raw engine's sessions are conntrack entries in the relay namespace, and
// nf_conntrack_max is the host's (read-only inside a namespace on the kernels
// this was written on): that, not relay's memory, is what bounds its size here.
import { formatEndpoint } from '../../src/addr';
import { runCommand } from '../../src/shell';
import { Namespace, SpawnedProcess } from '../../src/lab/netns';
import { BenchCase, BenchOptions, DerivedCase, PreparedCase, Sample, measureWindow } from './case';
import { ADDR, FD_HARD_LIMIT, LOAD_CPU, sleep, spawnPinned, stopWithin } from './lab';
import { BENCH_ADMIN, BenchContext, ProxyUnderTest, udpNginxTarget, udpRelayTarget } from './targets';
import { openFds, totalRssKiB } from './proc';
import { countingDrops, dropDetails, errorsText, peersBinary, startEcho } from './udp';

const SCALE_PORT = 9003;
/** The client's sources: addresses of this documentation range, FIRST_PORT.. on each. */
const SPOOF_PREFIX = '203.0.113.0/24';
const SPOOF_BASE = '203.0.113.1';
const FIRST_PORT = 1024;
const PORTS_PER_ADDRESS = 64_000;
/** Where tproxy hands the client its replies, in the client namespace. */
const CLIENT_RECV_PORT = 7999;
/** The proxies' listening ports (targets.ts): their traffic is left out of conntrack (see untrackListeners). */
const LISTEN_PORTS = '8080, 8081';
/** The first step is a warm-up: what every first session pays for is not charged to the sessions. */
const WARM_UP = 500;
/** The raw engine: the trend, and the issue's 200,000 at the end. */
export const RAW_STEPS = [WARM_UP, 50_000, 100_000, 200_000];
/** A socket per session: as many as the hard open-file limit lets the proxy hold beside its own fds. */
const FD_BOUND_SESSIONS = Math.min(18_000, FD_HARD_LIMIT - 2_000);
const SOCKET_STEPS = [WARM_UP, FD_BOUND_SESSIONS];
/** Longer than the case: no session may expire during it. */
const SESSION_TIMEOUT = '10m';
/** relay-raw's table: the largest step with room. */
const RAW_MAX_SESSIONS = 250_000;
const SETTLE_MS = 1_000;
/** The share of a step's sources that must get an answer for the step to count. */
const MIN_ANSWERED = 0.99;
/** Requests outstanding while filling, and while measuring the rate. */
const FILL_PARALLEL = 256;
const RR_WINDOW = 256;
/** A step's fill is bounded in udp-peers (300 s); the runner gives up a little later. */
const STEP_WAIT_MS = 320_000;
/** Conntrack's UDP timeouts in the relay namespace for the case (the kernel's 30 s and 120 s would end sessions filled early). */
const CONNTRACK_UDP_TIMEOUT_S = 600;
const NGINX_WORKER_CONNECTIONS = 2 * FD_BOUND_SESSIONS + 1_000;

interface Filled {
  sessions: number;
  answered: number;
  failed: number;
  same: number;
  /** Replies the backend marked as from another address or port, or unchecked: over the whole run so far. */
  wrong: number;
  misdelivered: number;
  retries: number;
  ms: number;
  errors: Record<string, number>;
}

interface SpreadRr {
  sessions: number;
  seconds: number;
  completed: number;
  rate: number;
  same: number;
  wrong: number;
  lost: number;
  errors: Record<string, number>;
}

/** What the runner read at one step. */
interface Step {
  sessions: number;
  rssKiB: number;
  fds: number;
  /** Sessions the proxy says it holds: relay's gauge, else conntrack entries or fds, whichever tells. */
  held: string;
  rate: number;
  lost: number;
  fill: Filled;
}

const scaleCase: Omit<BenchCase, 'derived'> = {
  id: 'udp-scale',
  title: 'UDP at scale: proxy memory per live session, raw engine at 200,000 sessions',
  unit: 'KiB/session',
  decimals: 3,
  perCore: false,
  // A run fills 200,000 sessions and measures four steps (~1 min over the three targets): one is what the full bench affords.
  maxRuns: 1,
  targets: [
    udpRelayTarget({ maxSessions: RAW_MAX_SESSIONS, sessionTimeout: SESSION_TIMEOUT, rawEngine: true, admin: true,
      variant: `UDP, ${RAW_STEPS[RAW_STEPS.length - 1].toLocaleString('en-US')} live sessions, raw engine` }),
    udpRelayTarget({ maxSessions: FD_BOUND_SESSIONS + 1_000, sessionTimeout: SESSION_TIMEOUT, admin: true,
      variant: `UDP, ${FD_BOUND_SESSIONS.toLocaleString('en-US')} live sessions (fd limit)` }),
    udpNginxTarget({ timeout: SESSION_TIMEOUT, workerConnections: NGINX_WORKER_CONNECTIONS,
      variant: `UDP, ${FD_BOUND_SESSIONS.toLocaleString('en-US')} live sessions (fd limit)` }),
  ],
  goal: { kind: 'variant-at-most', variant: 'relay-raw', max: 1 }, // issue 16: <= 1 KiB per session at 200,000 sessions
  method: (o) => `\`udp-peers spread\` in the client namespace on CPU ${LOAD_CPU}: sources are addresses of ` +
    `${SPOOF_PREFIX} (made local there by \`ip route add local ${SPOOF_PREFIX} dev lo\`) times ports ${FIRST_PORT}-` +
    `${FIRST_PORT + PORTS_PER_ADDRESS - 1}; each request leaves a raw socket (IP_HDRINCL) with its source written in ` +
    `the header, and an nftables \`tproxy\` rule there hands every reply to one IP_TRANSPARENT socket, which reads ` +
    'the address and port it was sent to (IP_ORIGDSTADDR): no socket per source. The client fills sessions step by ' +
    `step (relay-raw: ${RAW_STEPS.slice(1).map((n) => n.toLocaleString('en-US')).join(', ')}; relay and nginx: ` +
    `${FD_BOUND_SESSIONS.toLocaleString('en-US')}, all a socket per session fits under the hard open-file limit of ` +
    `${FD_HARD_LIMIT.toLocaleString('en-US')}), after a warm-up of ${WARM_UP}: each source sends one 64-byte request ` +
    `until answered (${FILL_PARALLEL} outstanding, 10 tries 300 ms apart). ${SETTLE_MS / 1000} s after a step is ` +
    'full the runner reads the proxy\'s RSS (VmRSS, summed over its processes), its open fds and the sessions it ' +
    'holds (relay: `relay_udp_sessions_open` from --admin /metrics; nginx: its fds); then, after every step but the ' +
    'warm-up, the client runs ' +
    `request/response across every source in turn for ${o.seconds} s, ${RR_WINDOW} requests outstanding (a request ` +
    'unanswered for 500 ms is counted lost). The figure is (RSS at the largest step - RSS after the warm-up) / ' +
    'sessions added; the rate is the request rate at the largest step, the table full. One run per target, whatever ' +
    '--runs says (maxRuns): a run fills every step. Every reply is checked: ' +
    'its stamp (the source that sent the request) must name the address and port it came back to, and the backend ' +
    '(`udp-peers echo`) must have seen that same address and port. relay runs with --session-timeout ' +
    `${SESSION_TIMEOUT} (nginx \`proxy_timeout ${SESSION_TIMEOUT};\`, \`worker_connections ` +
    `${NGINX_WORKER_CONNECTIONS};\`). The raw engine's flows are conntrack entries in the relay namespace, whose ` +
    'limit, nf_conntrack_max, is the host\'s (read-only in a namespace): the case leaves the proxies\' listening ' +
    `ports (${LISTEN_PORTS}) out of conntrack there (\`notrack\`), or each session would take two entries, and sets ` +
    `conntrack's UDP timeouts to ${CONNTRACK_UDP_TIMEOUT_S} s there for the case.`,
  prepare: prepareScale,
};

function stepsOf(proxy: ProxyUnderTest): number[] {
  return proxy.name === 'relay-raw' ? RAW_STEPS : SOCKET_STEPS;
}

async function prepareScale(ctx: BenchContext, options: BenchOptions): Promise<PreparedCase> {
  const echo = await startEcho(ctx, SCALE_PORT, false);
  const undo = routeSpoofedSources(ctx);
  return {
    backend: echo.backend,
    measure: (proxy) => measureScale(ctx, proxy, options),
    close: async () => {
      undo();
      await stopWithin(echo.proc, 2_000);
    },
  };
}

/**
 * The lab's additions for the case, and a function that takes them away:
 * the spoofed range local in the client namespace with its tproxy rule, a
 * route back to it from the relay namespace, and conntrack there told to
 * leave the listeners alone and keep UDP entries for the case's length.
 */
function routeSpoofedSources(ctx: BenchContext): () => void {
  const { client, relay } = ctx.net;
  client.ip('route', 'add', 'local', SPOOF_PREFIX, 'dev', 'lo');
  nft(client, `table ip relay_bench_spread {
  chain prerouting {
    type filter hook prerouting priority mangle; policy accept;
    ip daddr ${SPOOF_PREFIX} meta l4proto udp tproxy to :${CLIENT_RECV_PORT} accept
  }
}`);
  relay.ip('route', 'add', SPOOF_PREFIX, 'via', ADDR.client4);
  nft(relay, `table ip relay_bench_notrack {
  chain prerouting {
    type filter hook prerouting priority raw; policy accept;
    ip daddr ${ADDR.relayClientSide4} udp dport { ${LISTEN_PORTS} } notrack
  }
  chain output {
    type filter hook output priority raw; policy accept;
    ip saddr ${ADDR.relayClientSide4} udp sport { ${LISTEN_PORTS} } notrack
  }
}`);
  const timeouts = ['nf_conntrack_udp_timeout', 'nf_conntrack_udp_timeout_stream'];
  const before = timeouts.map((t) => relay.tryRun('sysctl', '-n', `net.netfilter.${t}`).stdout.trim());
  timeouts.forEach((t) => relay.tryRun('sysctl', '-qw', `net.netfilter.${t}=${CONNTRACK_UDP_TIMEOUT_S}`));
  return () => {
    timeouts.forEach((t, i) => before[i] && relay.tryRun('sysctl', '-qw', `net.netfilter.${t}=${before[i]}`));
    relay.tryRun('nft', 'delete', 'table', 'ip', 'relay_bench_notrack');
    relay.tryRun('ip', 'route', 'del', SPOOF_PREFIX);
    client.tryRun('nft', 'delete', 'table', 'ip', 'relay_bench_spread');
    client.tryRun('ip', 'route', 'del', 'local', SPOOF_PREFIX, 'dev', 'lo');
  };
}

function nft(ns: Namespace, ruleset: string): void {
  runCommand(['ip', 'netns', 'exec', ns.name, 'nft', '-f', '-'], ruleset, 'ERR_LAB');
}

async function measureScale(ctx: BenchContext, proxy: ProxyUnderTest, options: BenchOptions):
  Promise<Omit<Sample, 'target' | 'run' | 'problems' | 'busyBefore' | 'foreignCores' | 'proxyCpuOthers'>> {
  const steps = stepsOf(proxy);
  const pids = proxy.pids();
  const fdsFresh = countFds(pids);
  const fdsBefore = fdsFresh;
  const spread = spawnPinned(ctx.lab, ctx.net.client, LOAD_CPU, [peersBinary(ctx), 'spread',
    '--target', formatEndpoint(proxy.entry.host, proxy.entry.port), '--spoof-base', SPOOF_BASE,
    '--addresses', String(Math.ceil(steps[steps.length - 1] / PORTS_PER_ADDRESS)), '--first-port', String(FIRST_PORT),
    '--ports', String(PORTS_PER_ADDRESS), '--steps', steps.join(','), '--seconds', String(options.seconds),
    '--recv-port', String(CLIENT_RECV_PORT), '--parallel', String(FILL_PARALLEL), '--window', String(RR_WINDOW),
    '--measure-from', String(steps[1])]);
  try {
    const read: Step[] = [];
    let last: Awaited<ReturnType<typeof measureWindow<SpreadRr>>> | undefined;
    const { drops } = await countingDrops(ctx, async () => {
      for (const n of steps) {
        const fill = await event<Filled>(spread, 'filled', n, STEP_WAIT_MS);
        // A few sources never answered (the proxy's queue overflowed ten times over) are counted, not fatal.
        if (fill.answered < n * MIN_ANSWERED) {
          throw new Error(`${fill.answered} of ${n} UDP sessions answered through ${proxy.name} (${fill.failed} never ` +
            `answered after ${fill.retries} retries; send errors ${errorsText(fill.errors)}; the proxy holds ` +
            `${sessionsHeld(ctx, proxy, countFds(pids) - fdsBefore)})`);
        }
        await sleep(SETTLE_MS);
        const rssKiB = totalRssKiB(pids);
        const fds = countFds(pids);
        const held = sessionsHeld(ctx, proxy, fds - fdsBefore);
        spread.child.kill('SIGUSR1');
        // The warm-up step runs no requests: the client goes straight on filling.
        if (n !== steps[0]) {
          last = await measureWindow(proxy, () => event<SpreadRr>(spread, 'spread-rr', n, options.seconds * 1000 + 30_000));
        }
        const step = { sessions: fill.answered, rssKiB, fds, held, rate: last?.result.rate ?? 0, lost: last?.result.lost ?? 0, fill };
        read.push(step);
        say(`  ${proxy.name} at ${n.toLocaleString('en-US')} sessions: RSS ${rssKiB} KiB, ${fds} fds, held ${held}, ` +
          (last ? `${Math.round(step.rate).toLocaleString('en-US')} req/s (${step.lost} lost), ` : '') +
          `filled in ${fill.ms} ms (${fill.retries} retries so far)`);
      }
    });
    await spread.waitFor(/\{"event":"spread-done"[^\n]*\}/, 10_000);
    return scaleSample(read, fdsFresh, last as NonNullable<typeof last>, drops);
  } finally {
    await spread.stop('SIGKILL');
  }
}

function scaleSample(read: Step[], fdsFresh: number, last: { result: SpreadRr; proxyCpuSeconds?: number; wallSeconds: number;
  hostBusy: number[] }, drops: Record<string, number>): ReturnType<typeof measureScale> extends Promise<infer T> ? T : never {
  const base = read[0];
  const top = read[read.length - 1];
  const perSession = (s: Step) => (s.rssKiB - base.rssKiB) / (s.sessions - base.sessions);
  const done = read.slice(1);
  const rr = last.result;
  return {
    value: perSession(top),
    proxyCpuSeconds: last.proxyCpuSeconds,
    wallSeconds: last.wallSeconds,
    hostBusy: last.hostBusy,
    sawClient: top.fill.wrong === 0 && top.fill.misdelivered === 0 && rr.wrong === 0 && rr.same > 0,
    details: {
      sessions: top.sessions,
      sessionsHeld: top.held,
      bytesPerSession: Math.round(perSession(top) * 1024),
      // After the warm-up, against the full table: what the sessions themselves cost in fds.
      fdsFresh, fdsWarm: base.fds, fdsFull: top.fds, fdsAdded: top.fds - base.fds,
      rssWarmKiB: base.rssKiB, rssFullKiB: top.rssKiB,
      rateFull: Math.round(top.rate), lostFull: top.lost,
      fillSessionsPerSecond: Math.round((top.sessions - read[read.length - 2].sessions) / (top.fill.ms / 1000)),
      retries: top.fill.retries, failed: top.fill.failed,
      trend: done.map((s) => `${s.sessions.toLocaleString('en-US')}: ${Math.round(perSession(s) * 1024)} B/session, ` +
        `${s.fds} fds, held ${s.held}, ${Math.round(s.rate).toLocaleString('en-US')} req/s (${s.lost} lost)`).join('; '),
      ...dropDetails(drops), sendErrors: errorsText(top.fill.errors),
      backendSaw: `client address and port in ${rr.same} of ${rr.completed} replies at the largest step; over the ` +
        `whole run ${top.fill.wrong} replies said otherwise and ${top.fill.misdelivered} came back to another source`,
    },
  };
}

function countFds(pids: number[]): number {
  return pids.reduce((n, pid) => n + openFds(pid), 0);
}

/** relay's own count of open sessions (its --admin /metrics); for nginx, the fds the sessions added. */
function sessionsHeld(ctx: BenchContext, proxy: ProxyUnderTest, fdsAdded: number): string {
  if (proxy.name === 'nginx') return `${fdsAdded} (fds added)`;
  const metrics = ctx.net.relay.tryRun('curl', '-s', '--max-time', '5', `http://${BENCH_ADMIN}/metrics`).stdout;
  const open = [...metrics.matchAll(/^relay_udp_sessions_open(?:\{[^}]*\})? (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
  const conntrack = ctx.net.relay.tryRun('cat', '/proc/sys/net/netfilter/nf_conntrack_count').stdout.trim();
  return `${open} (relay_udp_sessions_open)${proxy.name === 'relay-raw' ? `, ${conntrack} conntrack entries` : ''}`;
}

/** A progress line, as the runner prints its own. */
function say(line: string): void {
  process.stdout.write(`bench: ${line}\n`);
}

/** The JSON line udp-peers printed for this event at step n (or its fatal line, thrown). */
async function event<T>(proc: SpawnedProcess, name: string, n: number, timeoutMs: number): Promise<T> {
  const line = await proc.waitFor(new RegExp(`\\{"event":"(${name}","sessions":${n},|fatal")[^\\n]*\\}`), timeoutMs);
  const parsed = JSON.parse(line) as T & { event: string; what?: string; error?: string };
  if (parsed.event === 'fatal') throw new Error(`udp-peers spread failed: ${parsed.what}: ${parsed.error}`);
  return parsed;
}

const { prepare: _prepare, ...scaleInfo } = scaleCase;

/** Read from the same runs: the fds the sessions added, and the request rate with the table full. */
const scaleDerived: readonly DerivedCase[] = [
  {
    ...scaleInfo, id: 'udp-scale-fds', source: scaleCase.id,
    title: 'UDP at scale: fds the proxy added for its live sessions', unit: 'fds', decimals: 0,
    goal: { kind: 'variant-at-most', variant: 'relay-raw', max: 0 }, // issue 16: fds constant
    valueOf: (s) => Number(s.details.fdsAdded),
  },
  {
    ...scaleInfo, id: 'udp-scale-rate', source: scaleCase.id,
    title: 'UDP at scale: requests per second across every live session, the table full', unit: 'req/s', decimals: 0,
    perCore: true,
    goal: { kind: 'none', why: `each target at its own size (relay-raw ${RAW_STEPS[RAW_STEPS.length - 1].toLocaleString('en-US')} ` +
      `sessions, the others ${FD_BOUND_SESSIONS.toLocaleString('en-US')}, as many as their fds allow)` },
    valueOf: (s) => Number(s.details.rateFull),
  },
];

export const udpScale: BenchCase = { ...scaleCase, derived: scaleDerived };
