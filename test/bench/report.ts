// Results -> medians, ratios and verdicts -> a console table and
// docs/benchmarks.md. Pure formatting apart from machineInfo(), which asks the
// host what it is.
import * as fs from 'node:fs';
import * as os from 'node:os';
import { spawnSync } from 'node:child_process';
import { tryCommand } from '../../src/shell';
import { BenchCase, BenchOptions, CaseResult, PROXY_CPU_OTHERS_LIMIT, Sample, cores, median } from './case';
import type { Target, TargetName } from './targets';
import { LOAD_GENERATOR_SYSCTLS, PROXY_CPU } from './lab';

export interface TargetSummary {
  values: number[];
  median: number;
  /** Median cores of proxy CPU used, and median figure per core; undefined without a proxy process. */
  cores?: number;
  perCore?: number;
  /** Runs in which the backend saw the client's address, of runs checked. */
  transparent: string;
}

export interface CaseSummary {
  result: CaseResult;
  targets: Partial<Record<TargetName, TargetSummary>>;
  ratio?: number;
  perCoreRatio?: number;
  goal: string;
  verdict: 'PASS' | 'FAIL';
  why: string;
}

export function summarize(result: CaseResult): CaseSummary {
  const { benchCase } = result;
  const targets: CaseSummary['targets'] = {};
  for (const target of benchCase.targets) {
    const samples = result.samples.filter((s) => s.target === target.name);
    if (samples.length > 0) targets[target.name] = summarizeTarget(samples);
  }
  const relay = targets.relay;
  const nginx = targets.nginx;
  const ratio = relay && nginx ? relay.median / nginx.median : undefined;
  const perCoreRatio = relay?.perCore && nginx?.perCore ? relay.perCore / nginx.perCore : undefined;
  const { goal, verdict, why } = judge(benchCase, result.samples, relay, ratio);
  return { result, targets, ratio, perCoreRatio, goal, verdict, why };
}

function summarizeTarget(samples: Sample[]): TargetSummary {
  const values = samples.map((s) => s.value);
  const withCpu = samples.filter((s) => s.proxyCpuSeconds !== undefined && s.proxyCpuSeconds > 0);
  const checked = samples.filter((s) => s.sawClient !== undefined);
  return {
    values,
    median: median(values),
    cores: withCpu.length > 0 ? median(withCpu.map(cores)) : undefined,
    perCore: withCpu.length > 0 ? median(withCpu.map((s) => s.value / cores(s))) : undefined,
    transparent: `${checked.filter((s) => s.sawClient).length}/${checked.length}`,
  };
}

function judge(benchCase: BenchCase, samples: Sample[], relay: TargetSummary | undefined, ratio: number | undefined):
  { goal: string; verdict: 'PASS' | 'FAIL'; why: string } {
  const g = benchCase.goal;
  const goal = g.kind === 'ratio-at-least' ? `relay >= ${g.min}x nginx` : `relay <= ${g.max} ${benchCase.unit}`;
  if (samples.some((s) => s.target === 'relay' && s.sawClient === false)) {
    return { goal, verdict: 'FAIL', why: 'the backend did not see the client address through relay' };
  }
  if (!relay) return { goal, verdict: 'FAIL', why: 'no relay measurement' };
  if (g.kind === 'ratio-at-least') {
    if (ratio === undefined) return { goal, verdict: 'FAIL', why: 'no nginx measurement to compare with' };
    return { goal, verdict: ratio >= g.min ? 'PASS' : 'FAIL', why: `relay/nginx = ${ratio.toFixed(2)}` };
  }
  return { goal, verdict: relay.median <= g.max ? 'PASS' : 'FAIL', why: `relay = ${fmt(relay.median, benchCase.decimals)}` };
}

function fmt(value: number | undefined, decimals: number): string {
  if (value === undefined || !Number.isFinite(value)) return 'n/a';
  return value.toLocaleString('en-US', { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
}

const NAMES: readonly TargetName[] = ['relay', 'nginx', 'kernel'];

/** Rows of the results table: metric, relay, nginx, kernel, ratio, target, verdict. */
function resultRows(summaries: CaseSummary[]): string[][] {
  return summaries.map((s) => {
    const c = s.result.benchCase;
    return [`${c.title} (${c.unit})`, ...NAMES.map((n) => fmt(s.targets[n]?.median, c.decimals)),
      fmt(s.ratio, 2), s.goal, s.verdict];
  });
}

/** Rows of the CPU table, for the rate cases. */
function cpuRows(summaries: CaseSummary[]): string[][] {
  return summaries.filter((s) => s.result.benchCase.perCore).map((s) => {
    const c = s.result.benchCase;
    const r = s.targets.relay;
    const n = s.targets.nginx;
    return [`${c.title} (${c.unit})`, fmt(r?.cores, 2), fmt(r?.perCore, c.decimals), fmt(n?.cores, 2),
      fmt(n?.perCore, c.decimals), fmt(s.perCoreRatio, 2)];
  });
}

const RESULT_HEAD = ['metric (median)', 'relay', 'nginx', 'kernel', 'relay/nginx', 'target', 'verdict'];
const CPU_HEAD = ['metric (median)', 'relay cores', 'relay per core', 'nginx cores', 'nginx per core', 'relay/nginx per core'];

export function consoleReport(summaries: CaseSummary[]): string {
  return `\n${textTable(RESULT_HEAD, resultRows(summaries))}\n\nProxy CPU use (cores = CPU seconds / wall seconds; ` +
    `per core = figure / cores):\n${textTable(CPU_HEAD, cpuRows(summaries))}\n`;
}

function textTable(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

function mdTable(head: string[], rows: string[][]): string {
  const esc = (c: string) => c.replace(/\|/g, '\\|');
  return [`| ${head.map(esc).join(' | ')} |`, `|${head.map(() => '---').join('|')}|`,
    ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`)].join('\n');
}

export interface Machine {
  cpus: number;
  cpuModel: string;
  kernel: string;
  node: string;
  nginx: string;
  iperf3: string;
  wrk: string;
  cc: string;
  commit: string;
}

export function machineInfo(): Machine {
  const cpuModel = /^model name\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown';
  // nginx -v and wrk -v print to stderr (wrk then exits 1): take whichever stream has text.
  const firstLine = (argv: string[]) => {
    const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', timeout: 5_000 });
    return `${r.stdout ?? ''}${r.stderr ?? ''}`.split('\n')[0].trim();
  };
  const commit = tryCommand(['git', 'rev-parse', '--short', 'HEAD']).stdout.trim();
  const dirty = tryCommand(['git', 'status', '--porcelain', '--', 'src', 'protocols']).stdout.trim() !== '';
  return {
    cpus: os.cpus().length,
    cpuModel,
    kernel: os.release(),
    node: process.version,
    nginx: firstLine(['nginx', '-v']).replace(/^nginx version: /, ''),
    iperf3: firstLine(['iperf3', '--version']),
    wrk: firstLine(['wrk', '-v']).replace(/ Copyright.*/, ''),
    cc: firstLine(['cc', '--version']),
    commit: `${commit || 'unknown'}${dirty ? ' (with uncommitted changes in src/ or protocols/)' : ''}`,
  };
}

export interface DocInput {
  summaries: CaseSummary[];
  machine: Machine;
  options: BenchOptions;
  command: string;
  date: Date;
  targets: readonly Target[];
  pinning: string;
  warnings: string[];
  /** Comparisons across cases worth a line under the verdicts (not verdicts themselves). */
  crossComparisons: string[];
}

export function markdownReport(d: DocInput): string {
  const m = d.machine;
  return [
    '# Benchmarks',
    '',
    `Written by \`${d.command}\` (test/bench/run.ts) on ${d.date.toISOString()}; rerun it rather than edit this file.`,
    '',
    '## Machine',
    '',
    mdTable(['', ''], [['CPUs (nproc)', String(m.cpus)], ['CPU model', m.cpuModel], ['kernel (uname -r)', m.kernel],
      ['Node.js', m.node], ['nginx', m.nginx], ['iperf3', m.iperf3], ['wrk', m.wrk],
      ['C compiler (UDP peers)', m.cc], ['relay commit', m.commit]]),
    '',
    `Runs per measurement: ${d.options.runs} (the table shows medians); ${d.options.seconds} s per throughput and ` +
      `connection-rate run; ${d.options.rateConns} concurrent wrk connections; ${d.options.idleConns} idle connections; ` +
      `${d.options.udpFlows} client sockets in the UDP rate cases; ${d.options.udpSessions} live sessions in the UDP ` +
      'memory case.',
    '',
    '## Results',
    '',
    mdTable(RESULT_HEAD, resultRows(d.summaries)),
    '',
    ...d.summaries.map((s) => `- **${s.verdict}** ${s.result.benchCase.title}: target ${s.goal}; ${s.why}.` +
      (s.result.benchCase.caveat?.(d.options) ? ` ${s.result.benchCase.caveat(d.options)}` : '')),
    ...d.crossComparisons.map((line) => `- ${line}`),
    '',
    '### CPU use of the proxy',
    '',
    'Cores = CPU time (utime + stime from /proc/PID/stat, all threads, summed over the proxy\'s processes) divided by ' +
      'the wall time of the run; per core = the figure divided by those cores. Kernel routing has no process: ' +
      'its forwarding runs in softirq context, mostly on the CPU of the sender, so it gets no CPU figure.',
    '',
    mdTable(CPU_HEAD, cpuRows(d.summaries)),
    '',
    '## All runs',
    '',
    'Host CPUs busy = each CPU\'s busy share during the run (from /proc/stat), CPU 0 first: a load-generator CPU at ' +
      '100% means the figure is a floor, not the proxy\'s limit. Other jobs = CPU time used during the run by ' +
      'processes outside the lab\'s namespaces (this machine is shared); a run where they used more than 0.1 cores ' +
      `is repeated, up to 3 times, and so is a run where CPU ${PROXY_CPU}, pinned for the proxy alone, was more than ` +
      `${Math.round(PROXY_CPU_OTHERS_LIMIT * 100)} points busier than the proxy's own CPU time (kernel threads and ` +
      'interrupts are not processes of another job, but can still be another job\'s work); shown in brackets when over 10.',
    '',
    ...d.summaries.flatMap((s) => runsSection(s)),
    '## How it is measured',
    '',
    '- Lab: network namespaces client (192.0.2.2) -- relay (192.0.2.1 | 198.51.100.1) -- backend (198.51.100.20), ' +
      'veth links, IPv4; `relay routes apply` inside the relay namespace (nftables `socket transparent` mark, ip rule, ' +
      'local route table), as an operator would. Forwarding is off in the relay namespace except during kernel runs.',
    `- The client namespace is tuned as a load generator is: ${LOAD_GENERATOR_SYSCTLS.map((x) => `\`${x}\``).join(', ')} ` +
      '(inside that namespace only). Through relay the client, not the proxy, ends up holding TIME_WAIT (relay\'s FIN ' +
      'reaches it after the reply, and wrk closes on the reply); without reuse the second connection-rate run ' +
      'measures the client\'s search for a free port instead of the proxy.',
    `- Pinning: ${d.pinning}`,
    '- Each run starts the proxy fresh; runs are interleaved (run 1 of every target, then run 2...). Before each run ' +
      'the benchmark waits (up to 20 s) for every CPU to be under 20% busy.',
    ...d.targets.map((t) => `- ${t.name}${t.variant ? ` (${t.variant})` : ''}: ${t.setup}.`),
    '',
    ...d.summaries.flatMap((s) => [`### ${s.result.benchCase.title}`, '', s.result.benchCase.method(d.options), '']),
    '## Notes',
    '',
    ...(d.warnings.length > 0 ? d.warnings.map((w) => `- ${w}`) : ['- Nothing unusual was seen.']),
    '',
  ].join('\n');
}

function runsSection(s: CaseSummary): string[] {
  const c = s.result.benchCase;
  const row = (x: Sample) => [String(x.run), x.target, fmt(x.value, c.decimals),
    x.proxyCpuSeconds !== undefined ? fmt(cores(x), 2) : 'n/a',
    x.hostBusy.length > 0 ? x.hostBusy.map((b) => `${Math.round(b * 100)}%`).join(' / ') : 'n/a',
    fmt(x.foreignCores, 2) + (x.proxyCpuOthers !== undefined && x.proxyCpuOthers > 0.1
      ? ` (CPU ${PROXY_CPU}: ${Math.round(x.proxyCpuOthers * 100)}% beside the proxy)` : ''),
    x.sawClient === undefined ? 'n/a' : x.sawClient ? 'yes' : 'NO',
    Object.entries(x.details).map(([k, v]) => `${k}=${v}`).join(', '),
    Object.entries(x.problems).map(([k, n]) => `${n}x ${k}`).join('; ') || 'none'];
  const head = ['run', 'target', c.unit, 'proxy cores', 'host CPUs busy', 'other jobs (cores)', 'backend saw client',
    'details', 'proxy warnings/errors'];
  const repeated = s.result.discarded.length === 0 ? [] : ['',
    'Runs repeated because other processes on the machine used the CPUs during them (not in the medians):', '',
    mdTable(head, s.result.discarded.map(row))];
  return [`### ${c.title}`, '', mdTable(head, s.result.samples.map(row)), ...repeated, ''];
}
