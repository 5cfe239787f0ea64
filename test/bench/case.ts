// What a benchmark case is, and the loop that runs one: every run starts each
// target fresh, targets interleaved run by run so slow drift on the machine
// (another job, thermal) spreads over all of them instead of one; or, for a
// case that measures what runs leave behind (TIME_WAIT), each target's runs
// back to back in a client namespace of its own (a series). A new protocol is
// another module exporting more BenchCase values (tcp.ts, udp.ts).
import type { BenchContext, HostPort, ProxyUnderTest, Target, TargetName } from './targets';
import { busyFractions, foreignCpuSeconds, hostCpuTimes, namedNetns, processCpuSnapshot, totalCpuSeconds } from './proc';
import { PROXY_CPU, renewClientNamespace, setSysctls, sleep } from './lab';

export interface BenchOptions {
  runs: number;
  seconds: number;
  /** Concurrent connections of the connection-rate load generator. */
  rateConns: number;
  /** Connections held open in the memory case. */
  idleConns: number;
  /** UDP client sockets (so client ports, so proxy sessions) in the UDP rate cases. */
  udpFlows: number;
  /** Live UDP sessions held in the UDP memory case. */
  udpSessions: number;
}

/** One measurement of one target. */
export interface Sample {
  target: TargetName;
  run: number;
  value: number;
  /** CPU time (user + system) of the proxy's processes during the window; undefined if it has none. */
  proxyCpuSeconds?: number;
  wallSeconds: number;
  /** Busy fraction of each host CPU during the window: shows who was saturated. */
  hostBusy: number[];
  /** Did the backend see the client's own address? undefined when not checked. */
  sawClient?: boolean;
  /** Case-specific figures worth keeping (RSS before and after, errors...). */
  details: Record<string, string | number>;
  /**
   * System calls by name, per unit of the case's figure (per connection, per
   * session): calls and failed calls. Only the system-call cases have it.
   */
  perCall?: Record<string, { calls: number; errors: number }>;
  /** What the proxy logged at warn or worse during the run, with counts. */
  problems: Record<string, number>;
  /** How busy the machine was just before the run (max over CPUs). */
  busyBefore: number;
  /** Cores used during the run by processes outside the lab: other jobs on this machine. */
  foreignCores: number;
  /**
   * Busy share of the proxy's CPU not spent in the proxy's processes: kernel
   * threads, interrupts or anything else that shared the CPU pinned for the
   * proxy (work the foreign-process count cannot see). undefined without a
   * proxy process.
   */
  proxyCpuOthers?: number;
}

export type Goal =
  // relay >= min x nginx, medians; with everyRun, also run by run (relay's run i against nginx's run i)
  | { kind: 'ratio-at-least'; min: number; everyRun?: boolean }
  | { kind: 'ratio-at-most'; max: number } // relay <= max x nginx, medians (lower is better: TIME_WAIT, system calls)
  | { kind: 'at-most'; max: number } // relay's own figure, absolute
  // a variant of relay >= min x relay as it runs in the other cases, medians (a wildcard listener against a specific one)
  | { kind: 'variant-at-least'; variant: TargetName; min: number }
  // a variant's own figure, absolute, medians (the raw UDP engine's memory per session)
  | { kind: 'variant-at-most'; variant: TargetName; max: number }
  // a variant's figure per core of CPU its processes used >= min x relay's own, medians (workers' per-core efficiency)
  | { kind: 'variant-per-core-at-least'; variant: TargetName; min: number }
  | { kind: 'none'; why: string }; // reported beside the targets, judged by none (a tuned client)

/** A case prepared for measuring: its backend runs until close(). */
export interface PreparedCase {
  backend: HostPort;
  measure(proxy: ProxyUnderTest, run: number): Promise<Omit<Sample, 'target' | 'run' | 'problems' | 'busyBefore' | 'foreignCores' | 'proxyCpuOthers'>>;
  close(): Promise<void>;
}

export interface BenchCase {
  id: string;
  title: string;
  unit: string;
  decimals: number;
  /** Figures per core of proxy CPU make sense for rates, not for memory. */
  perCore: boolean;
  /**
   * The load generator sends as fast as it can whatever the proxy manages
   * (one-way UDP): the load CPU is always saturated, which then says nothing
   * about what bounded the figure.
   */
  flatOut?: boolean;
  /**
   * The figure is a count (system calls), not a rate or a size: other jobs on
   * the machine cannot change it, so a run they disturbed is not repeated.
   */
  countOnly?: boolean;
  targets: readonly Target[];
  goal: Goal;
  /** How it is measured, for docs/benchmarks.md. */
  method(options: BenchOptions): string;
  /** What a reader must know next to the verdict (e.g. a figure measured at less than the issue asked for). */
  caveat?(options: BenchOptions): string;
  /**
   * Run each target's runs back to back (run 1, 2, 3 of relay, then of nginx...)
   * instead of interleaved, each target in a client namespace made fresh for
   * it (with clientSysctls set there, if any): what one run leaves on the
   * client (TIME_WAIT, for 60 s) then weighs on the next run of the same
   * target, as in production, and never on another target's. After the case
   * the client namespace is made fresh again, with the kernel's defaults.
   */
  series?: { clientSysctls?: readonly string[] };
  /**
   * Interleaved runs (no series) in a client namespace made fresh for the case
   * with these sysctls, e.g. so that the TIME_WAIT of many short connections
   * does not slow the later runs; made fresh again with the defaults after.
   */
  clientSysctls?: readonly string[];
  /** At least this many runs per target, whatever --runs says (an issue asks for 5 interleaved runs). */
  minRuns?: number;
  /** At most this many (a case long enough that one run is what the full bench can afford). */
  maxRuns?: number;
  /** Further figures read from this case's samples, each reported and judged as a case of its own. */
  derived?: readonly DerivedCase[];
  prepare(ctx: BenchContext, options: BenchOptions): Promise<PreparedCase>;
}

/** What the report needs of a case: everything but how to run it. */
export type CaseInfo = Omit<BenchCase, 'prepare' | 'derived' | 'series'> & { series?: BenchCase['series'] };

/** A figure taken from another case's runs (e.g. TIME_WAIT per 10,000 connections from the connection-rate runs). */
export interface DerivedCase extends CaseInfo {
  /** The id of the case whose runs it reads. */
  source: string;
  /** The figure of one of the source case's samples. */
  valueOf(sample: Sample): number;
}

export interface CaseResult {
  benchCase: CaseInfo;
  samples: Sample[];
  /** Runs repeated because another job used the CPUs during them. */
  discarded: Sample[];
}

export type Log = (line: string) => void;

/** Another job using this much CPU during a run makes the run worthless: repeat it. */
const FOREIGN_CORES_LIMIT = 0.1;

/**
 * The proxy runs alone on its CPU: in quiet runs that CPU's busy share is at
 * most ~13 points above the proxy's own CPU time (the rest is softirq work for
 * the proxy's own traffic done outside its process, e.g. in ksoftirqd). More
 * means something else ran there (another job's kernel work, e.g. a network
 * namespace being torn down in a kernel worker, which the foreign-process
 * count cannot see): repeat the run.
 */
export const PROXY_CPU_OTHERS_LIMIT = 0.15;
const MAX_ATTEMPTS = 4;

/** How many runs each target gets: --runs, within the case's own bounds (minRuns, maxRuns). */
export function runsOf(benchCase: BenchCase, options: BenchOptions): number {
  return Math.min(Math.max(options.runs, benchCase.minRuns ?? 0), benchCase.maxRuns ?? Infinity);
}

export async function runCase(ctx: BenchContext, benchCase: BenchCase, options: BenchOptions, log: Log): Promise<CaseResult> {
  const samples: Sample[] = [];
  const discarded: Sample[] = [];
  // In a series, how many runs (repeated ones too) the target's client namespace has seen: all left their TIME_WAIT.
  let seriesRuns = 0;
  const measureOne = async (prepared: PreparedCase, target: Target, run: number) => {
    for (let attempt = 1; ; attempt++) {
      const sample = await runOnce(ctx, prepared, target, run);
      if (benchCase.series) sample.details.runInSeries = ++seriesRuns;
      log(describe(benchCase, sample));
      const others = sample.proxyCpuOthers ?? 0;
      if ((sample.foreignCores <= FOREIGN_CORES_LIMIT && others <= PROXY_CPU_OTHERS_LIMIT) || benchCase.countOnly ||
        attempt === MAX_ATTEMPTS) {
        samples.push(sample);
        return;
      }
      discarded.push(sample);
      log(sample.foreignCores > FOREIGN_CORES_LIMIT
        ? `  other processes used ${sample.foreignCores.toFixed(2)} cores during that run: repeating it`
        : `  CPU ${PROXY_CPU} was ${Math.round(others * 100)}% busy beside the proxy during that run: repeating it`);
    }
  };
  const runs = runsOf(benchCase, options);
  const prepared = await benchCase.prepare(ctx, options);
  try {
    if (benchCase.series) {
      for (const target of benchCase.targets) {
        seriesRuns = 0;
        renewClientNamespace(ctx.net);
        setSysctls(ctx.net.client, benchCase.series.clientSysctls ?? []);
        log(`${benchCase.id}: ${target.name}, ${runs} run(s) back to back in a fresh client namespace` +
          (benchCase.series.clientSysctls?.length ? ` tuned with ${benchCase.series.clientSysctls.join(', ')}` : ' (kernel defaults)'));
        for (let run = 1; run <= runs; run++) await measureOne(prepared, target, run);
      }
    } else {
      if (benchCase.clientSysctls) {
        renewClientNamespace(ctx.net);
        setSysctls(ctx.net.client, benchCase.clientSysctls);
      }
      for (let run = 1; run <= runs; run++) {
        for (const target of benchCase.targets) await measureOne(prepared, target, run);
      }
    }
  } finally {
    await prepared.close();
    // What the series left on the client (TIME_WAIT, tuned sysctls) must not reach the next case.
    if (benchCase.series || benchCase.clientSysctls) renewClientNamespace(ctx.net);
  }
  return { benchCase, samples, discarded };
}

/** A derived case's result: the source case's runs, each with the derived figure as its value. */
export function deriveResult(source: CaseResult, derived: DerivedCase): CaseResult {
  const figure = (s: Sample): Sample => ({ ...s, value: derived.valueOf(s) });
  return { benchCase: derived, samples: source.samples.map(figure), discarded: source.discarded.map(figure) };
}

async function runOnce(ctx: BenchContext, prepared: PreparedCase, target: Target, run: number): Promise<Sample> {
  const busyBefore = await waitForQuiet();
  // Read at every run: a series renews the client namespace, and with it its identity.
  const ours = new Set(ctx.lab.namespaces.map((ns) => namedNetns(ns.name)));
  const proxy = await target.start(ctx, prepared.backend);
  try {
    const before = processCpuSnapshot();
    const t0 = Date.now();
    const measured = await prepared.measure(proxy, run);
    const foreign = foreignCpuSeconds(before, processCpuSnapshot(), ours, process.pid);
    const sample: Sample = { target: target.name, run, ...measured, busyBefore,
      foreignCores: foreign / ((Date.now() - t0) / 1000), problems: countProblems(proxy.problems()) };
    if (sample.proxyCpuSeconds !== undefined && sample.hostBusy.length > PROXY_CPU) {
      sample.proxyCpuOthers = Math.max(0, sample.hostBusy[PROXY_CPU] - cores(sample));
    }
    return sample;
  } finally {
    await proxy.stop();
  }
}

function describe(benchCase: CaseInfo, s: Sample): string {
  return `${benchCase.id} run ${s.run} ${s.target}: ${s.value.toFixed(benchCase.decimals)} ${benchCase.unit}` +
    (s.proxyCpuSeconds !== undefined ? `, proxy CPU ${cores(s).toFixed(2)} cores` : '') +
    (s.hostBusy.length > 0 ? `, host CPUs busy ${s.hostBusy.map((b) => `${Math.round(b * 100)}%`).join('/')}` : '') +
    (s.sawClient === false ? ', backend did NOT see the client address' : '');
}

/** Cores the proxy used on average during its window. */
export function cores(sample: Sample): number {
  return (sample.proxyCpuSeconds ?? 0) / sample.wallSeconds;
}

/** Run fn and report the proxy's CPU time and each host CPU's busy fraction over it. */
export async function measureWindow<T>(proxy: ProxyUnderTest, fn: () => Promise<T>):
  Promise<{ result: T; proxyCpuSeconds?: number; wallSeconds: number; hostBusy: number[] }> {
  const pids = proxy.pids();
  const cpu0 = totalCpuSeconds(pids);
  const host0 = hostCpuTimes();
  const t0 = process.hrtime.bigint();
  const result = await fn();
  const wallSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return {
    result,
    proxyCpuSeconds: pids.length > 0 ? totalCpuSeconds(pids) - cpu0 : undefined,
    wallSeconds,
    hostBusy: busyFractions(host0, hostCpuTimes()),
  };
}

const QUIET_BUSY = 0.2;
const QUIET_WAIT_MS = 20_000;

/**
 * Wait (at most QUIET_WAIT_MS) until no CPU is more than QUIET_BUSY busy, so a
 * run does not start while the last one's processes, or another job on this
 * machine, still use the CPUs. Returns the busiest CPU's fraction last seen.
 */
async function waitForQuiet(): Promise<number> {
  const deadline = Date.now() + QUIET_WAIT_MS;
  for (;;) {
    const before = hostCpuTimes();
    await sleep(300);
    const busiest = Math.max(...busyFractions(before, hostCpuTimes()));
    if (busiest <= QUIET_BUSY || Date.now() > deadline) return busiest;
  }
}

function countProblems(lines: string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const line of lines) counts[line] = (counts[line] ?? 0) + 1;
  return counts;
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}
