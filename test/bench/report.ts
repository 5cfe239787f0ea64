// Results -> medians, ratios and verdicts -> a console table and
// docs/benchmarks.md. Pure formatting apart from machineInfo(), which asks the
// host what it is.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { tryCommand } from '../../src/shell';
import { BenchOptions, CaseInfo, CaseResult, PROXY_CPU_OTHERS_LIMIT, Sample, cores, median } from './case';
import type { Target, TargetName } from './targets';
import { PROXY_CPU, TUNED_CLIENT_SYSCTLS } from './lab';

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
  /** relay's run i / nginx's run i, by run number (cases run as a series, where run i of each met the same client history). */
  runRatios: number[];
  goal: string;
  verdict: Verdict;
  why: string;
}

/** INFO: reported beside the targets, judged by none (e.g. a tuned client). */
export type Verdict = 'PASS' | 'FAIL' | 'INFO';

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
  const runRatios = ratiosByRun(result.samples);
  const { goal, verdict, why } = judge(benchCase, result.samples, relay, nginx, ratio, runRatios);
  return { result, targets, ratio, perCoreRatio, runRatios, goal, verdict, why };
}

/** relay's run i / nginx's run i, for each run both have. */
function ratiosByRun(samples: Sample[]): number[] {
  const of = (name: TargetName) => new Map(samples.filter((s) => s.target === name).map((s) => [s.run, s.value]));
  const relay = of('relay');
  const nginx = of('nginx');
  return [...relay.keys()].sort((a, b) => a - b).filter((run) => nginx.has(run))
    .map((run) => (relay.get(run) as number) / (nginx.get(run) as number));
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

function judge(benchCase: CaseInfo, samples: Sample[], relay: TargetSummary | undefined, nginx: TargetSummary | undefined,
  ratio: number | undefined, runRatios: number[]): { goal: string; verdict: Verdict; why: string } {
  const g = benchCase.goal;
  const goal = g.kind === 'ratio-at-least' ? `relay >= ${g.min}x nginx${g.everyRun ? ' in every run' : ''}`
    : g.kind === 'ratio-at-most' ? `relay <= ${g.max === 1 ? '' : `${g.max}x `}nginx`
      : g.kind === 'at-most' ? `relay <= ${g.max} ${benchCase.unit}`
        : g.kind === 'variant-at-least' ? `${g.variant} >= ${g.min}x relay`
          : g.kind === 'variant-at-most' ? `${g.variant} <= ${g.max} ${benchCase.unit}`
          : g.kind === 'variant-per-core-at-least' ? `${g.variant} per core >= ${g.min}x relay per core` : 'none (reported, not judged)';
  if (samples.some((s) => s.target.startsWith('relay') && s.sawClient === false)) {
    return { goal, verdict: 'FAIL', why: 'the backend did not see the client address through relay' };
  }
  if (g.kind === 'none') return { goal, verdict: 'INFO', why: g.why };
  if (g.kind === 'variant-at-most') {
    const variant = summarizeVariant(samples, g.variant);
    if (!variant) return { goal, verdict: 'FAIL', why: `no ${g.variant} measurement` };
    return { goal, verdict: variant.median <= g.max ? 'PASS' : 'FAIL',
      why: `${g.variant} = ${fmt(variant.median, benchCase.decimals)} ${benchCase.unit}` };
  }
  if (!relay) return { goal, verdict: 'FAIL', why: 'no relay measurement' };
  if (g.kind === 'ratio-at-least') {
    if (ratio === undefined) return { goal, verdict: 'FAIL', why: 'no nginx measurement to compare with' };
    if (!g.everyRun) return { goal, verdict: ratio >= g.min ? 'PASS' : 'FAIL', why: `relay/nginx = ${ratio.toFixed(2)}` };
    const lowest = Math.min(...runRatios);
    return { goal, verdict: ratio >= g.min && lowest >= g.min ? 'PASS' : 'FAIL',
      why: `relay/nginx = ${ratio.toFixed(2)} (medians), ${lowest.toFixed(2)} in the lowest run ` +
        `(run by run: ${runRatios.map((r) => r.toFixed(2)).join(', ')})` };
  }
  if (g.kind === 'variant-at-least') {
    const variant = summarizeVariant(samples, g.variant);
    if (!variant) return { goal, verdict: 'FAIL', why: `no ${g.variant} measurement` };
    const r = variant.median / relay.median;
    const spread = (values: number[]) => `${fmt(Math.min(...values), benchCase.decimals)}-${fmt(Math.max(...values), benchCase.decimals)}`;
    return { goal, verdict: r >= g.min ? 'PASS' : 'FAIL', why: `${g.variant}/relay = ${r.toFixed(3)} ` +
      `(${fmt(variant.median, benchCase.decimals)} against ${fmt(relay.median, benchCase.decimals)} ${benchCase.unit}; ` +
      `runs ${spread(variant.values)} against ${spread(relay.values)})` };
  }
  if (g.kind === 'variant-per-core-at-least') {
    const variant = summarizeVariant(samples, g.variant);
    if (!variant?.perCore || !relay.perCore) return { goal, verdict: 'FAIL', why: `no per-core figure for ${variant ? 'relay' : g.variant}` };
    const r = variant.perCore / relay.perCore;
    const d = benchCase.decimals;
    return { goal, verdict: r >= g.min ? 'PASS' : 'FAIL', why: `${g.variant}/relay per core = ${r.toFixed(3)} ` +
      `(${fmt(variant.perCore, d)} on ${fmt(variant.cores, 2)} cores against ${fmt(relay.perCore, d)} on ${fmt(relay.cores, 2)}; ` +
      `raw ${fmt(variant.median, d)} against ${fmt(relay.median, d)} ${benchCase.unit})` };
  }
  if (g.kind === 'ratio-at-most') {
    if (!nginx) return { goal, verdict: 'FAIL', why: 'no nginx measurement to compare with' };
    const d = benchCase.decimals;
    return { goal, verdict: relay.median <= g.max * nginx.median ? 'PASS' : 'FAIL',
      why: `relay ${fmt(relay.median, d)}, nginx ${fmt(nginx.median, d)} ${benchCase.unit}` +
        (ratio !== undefined && Number.isFinite(ratio) ? ` (relay/nginx = ${ratio.toFixed(2)})` : '') };
  }
  return { goal, verdict: relay.median <= g.max ? 'PASS' : 'FAIL', why: `relay = ${fmt(relay.median, benchCase.decimals)}` };
}

function summarizeVariant(samples: Sample[], name: TargetName): TargetSummary | undefined {
  const own = samples.filter((s) => s.target === name);
  return own.length > 0 ? summarizeTarget(own) : undefined;
}

function fmt(value: number | undefined, decimals: number): string {
  if (value === undefined || !Number.isFinite(value)) return 'n/a';
  return value.toLocaleString('en-US', { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
}

const NAMES: readonly TargetName[] = ['relay', 'relay-wildcard', 'relay-admin', 'relay-proxy-v2', 'relay-workers', 'relay-raw', 'nginx', 'haproxy', 'kernel'];

/** The targets with a figure in any of the summaries, in NAMES order (HAProxy only where it ran). */
function namesIn(summaries: CaseSummary[]): TargetName[] {
  return NAMES.filter((n) => summaries.some((s) => s.targets[n]));
}

/** The results table: metric, a column per target, ratio, target, verdict. */
function resultTable(summaries: CaseSummary[]): { head: string[]; rows: string[][] } {
  const names = namesIn(summaries);
  return {
    head: ['metric (median)', ...names, 'relay/nginx', 'target', 'verdict'],
    rows: summaries.map((s) => {
      const c = s.result.benchCase;
      return [`${c.title} (${c.unit})`, ...names.map((n) => fmt(s.targets[n]?.median, c.decimals)),
        fmt(s.ratio, 2), s.goal, s.verdict];
    }),
  };
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

/**
 * A series case's runs side by side, run by run, with the figures derived
 * from them (TIME_WAIT per 10,000 connections): the table the issue's "in
 * every run" target is read from.
 */
function seriesTables(summaries: CaseSummary[]): { title: string; head: string[]; rows: string[][] }[] {
  return summaries.filter((s) => s.result.benchCase.series && !('source' in s.result.benchCase)).map((s) => {
    const c = s.result.benchCase;
    const derived = summaries.filter((d) => (d.result.benchCase as { source?: string }).source === c.id);
    const names = NAMES.filter((n) => s.targets[n]);
    const runs = [...new Set(s.result.samples.map((x) => x.run))].sort((a, b) => a - b);
    const value = (summary: CaseSummary, name: TargetName, run: number) =>
      summary.result.samples.find((x) => x.target === name && x.run === run)?.value;
    const head = ['run', ...names.map((n) => `${n} ${c.unit}`), 'relay/nginx',
      ...derived.flatMap((d) => names.map((n) => `${n} ${d.result.benchCase.unit}`))];
    const row = (run: number) => [String(run), ...names.map((n) => fmt(value(s, n, run), c.decimals)),
      fmt(s.runRatios[runs.indexOf(run)], 2),
      ...derived.flatMap((d) => names.map((n) => fmt(value(d, n, run), d.result.benchCase.decimals)))];
    const lowest = s.runRatios.length > 0 ? Math.min(...s.runRatios) : undefined;
    const summaryRow = ['median', ...names.map((n) => fmt(s.targets[n]?.median, c.decimals)), fmt(s.ratio, 2),
      ...derived.flatMap((d) => names.map((n) => fmt(d.targets[n]?.median, d.result.benchCase.decimals)))];
    const lowestRow = ['lowest relay/nginx', ...names.map(() => ''), fmt(lowest, 2), ...derived.flatMap(() => names.map(() => ''))];
    return { title: `${c.title}: runs back to back, each target in its own fresh client namespace` +
      (derived.length > 0 ? `; ${derived.map((d) => d.result.benchCase.title).join(', ')}` : ''),
    head, rows: [...runs.map(row), summaryRow, lowestRow] };
  });
}

/** Calls per unit by name, relay (and relay-raw) beside nginx, for every case whose runs counted system calls (median over runs). */
function syscallTable(summaries: CaseSummary[]): { head: string[]; rows: string[][] } | undefined {
  const cases = summaries.filter((s) => s.result.samples.some((x) => x.perCall));
  if (cases.length === 0) return undefined;
  const counted = (s: CaseSummary): TargetName[] => (['relay', 'relay-raw', 'nginx'] as TargetName[])
    .filter((name) => s.result.samples.some((x) => x.target === name && x.perCall));
  const perCall = (s: CaseSummary, name: TargetName, call: string) => {
    const runs = s.result.samples.filter((x) => x.target === name && x.perCall);
    return runs.length === 0 ? undefined : {
      calls: median(runs.map((x) => x.perCall?.[call]?.calls ?? 0)),
      errors: median(runs.map((x) => x.perCall?.[call]?.errors ?? 0)),
    };
  };
  const calls = [...new Set(cases.flatMap((s) => s.result.samples.flatMap((x) => Object.keys(x.perCall ?? {}))))];
  // Biggest first, by what relay and nginx make of it together over every case.
  const weight = (call: string) => cases.reduce((sum, s) => sum + (perCall(s, 'relay', call)?.calls ?? 0) +
    (perCall(s, 'nginx', call)?.calls ?? 0), 0);
  calls.sort((a, b) => weight(b) - weight(a) || a.localeCompare(b));
  const cell = (n: { calls: number; errors: number } | undefined) => n === undefined || n.calls === 0 ? '-'
    : `${fmt(n.calls, 2)}${n.errors > 0 ? ` (${fmt(n.errors, 2)} failed)` : ''}`;
  const head = ['system call', ...cases.flatMap((s) => counted(s).map((n) => `${n} ${s.result.benchCase.unit.replace(/^calls\//, 'per ')}`))];
  const rows = calls.map((call) => [call, ...cases.flatMap((s) => counted(s).map((n) => cell(perCall(s, n, call))))]);
  rows.push(['total', ...cases.flatMap((s) => counted(s).map((n) => fmt(s.targets[n]?.median, 2)))]);
  return { head, rows };
}

const CPU_HEAD = ['metric (median)', 'relay cores', 'relay per core', 'nginx cores', 'nginx per core', 'relay/nginx per core'];

export function consoleReport(summaries: CaseSummary[]): string {
  const series = seriesTables(summaries).map((t) => `\n${t.title}:\n${textTable(t.head, t.rows)}\n`).join('');
  const syscalls = syscallTable(summaries);
  const results = resultTable(summaries);
  return `\n${textTable(results.head, results.rows)}\n${series}` +
    (syscalls ? `\nSystem calls per connection / per session (median over runs; failed calls in brackets):\n` +
      `${textTable(syscalls.head, syscalls.rows)}\n` : '') +
    (cpuRows(summaries).length === 0 ? '' : `\nProxy CPU use (cores = CPU seconds / wall seconds; per core = figure / ` +
      `cores):\n${textTable(CPU_HEAD, cpuRows(summaries))}\n`);
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
  haproxy: string;
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
    haproxy: fs.existsSync('/usr/sbin/haproxy') ? firstLine(['haproxy', '-v']).replace(/ - https:.*$/, '') : 'not installed',
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
      ['Node.js', m.node], ['nginx', m.nginx], ['HAProxy', m.haproxy], ['iperf3', m.iperf3], ['wrk', m.wrk],
      ['C compiler (UDP peers)', m.cc], ['relay commit', m.commit]]),
    '',
    `Runs per measurement: ${d.options.runs} (the table shows medians); ${d.options.seconds} s per throughput and ` +
      `connection-rate run; ${d.options.rateConns} concurrent wrk connections; ${d.options.idleConns} idle connections; ` +
      `${d.options.udpFlows} client sockets in the UDP rate cases; ${d.options.udpSessions} live sessions in the UDP ` +
      'memory case.',
    '',
    '## Results',
    '',
    mdTable(resultTable(d.summaries).head, resultTable(d.summaries).rows),
    '',
    ...d.summaries.map((s) => `- **${s.verdict}** ${s.result.benchCase.title}: target ${s.goal}; ${s.why}.` +
      (s.result.benchCase.caveat?.(d.options) ? ` ${s.result.benchCase.caveat(d.options)}` : '')),
    ...d.crossComparisons.map((line) => `- ${line}`),
    '',
    ...seriesTables(d.summaries).flatMap((t) => [`### ${t.title}`, '', mdTable(t.head, t.rows), '']),
    ...syscallSection(d.summaries),
    '### CPU use of the proxy',
    '',
    'Cores = CPU time (utime + stime from /proc/PID/stat, all threads, summed over the proxy\'s processes) divided by ' +
      'the wall time of the run; per core = the figure divided by those cores. Kernel routing has no process: ' +
      'its forwarding runs in softirq context, mostly on the CPU of the sender, so it gets no CPU figure.',
    '',
    mdTable(CPU_HEAD, cpuRows(d.summaries)),
    '',
    ...leversSection(),
    '## All runs',
    '',
    'Host CPUs busy = each CPU\'s busy share during the run (from /proc/stat), CPU 0 first: a load-generator CPU at ' +
      '100% means the figure is a floor, not the proxy\'s limit. Other jobs = CPU time used during the run by ' +
      'processes outside the lab\'s namespaces (this machine is shared); a run where they used more than 0.1 cores ' +
      `is repeated, up to 3 times, and so is a run where CPU ${PROXY_CPU}, pinned for the proxy alone, was more than ` +
      `${Math.round(PROXY_CPU_OTHERS_LIMIT * 100)} points busier than the proxy's own CPU time (kernel threads and ` +
      'interrupts are not processes of another job, but can still be another job\'s work); shown in brackets when over 10.',
    '',
    // A derived figure's runs are its source case's: its values are in the series table and the source's details.
    ...d.summaries.filter((s) => !('source' in s.result.benchCase)).flatMap((s) => runsSection(s)),
    '## How it is measured',
    '',
    '- Lab: network namespaces client (192.0.2.2) -- relay (192.0.2.1 | 198.51.100.1) -- backend (198.51.100.20), ' +
      'veth links, IPv4; `relay routes apply` inside the relay namespace (nftables `socket transparent` mark, ip rule, ' +
      'local route table), as an operator would. Forwarding is off in the relay namespace except during kernel runs.',
    '- Every namespace keeps the kernel\'s default sysctls (net.ipv4.tcp_tw_reuse=2, reuse on loopback only; ' +
      'ip_local_port_range 32768-60999), as operators and their clients run. Whoever closes a TCP connection first ' +
      'keeps it in TIME_WAIT for 60 s, so a proxy that makes its clients close first fills their port range and ' +
      'slows their connects: the connection-rate case runs each target\'s runs back to back, without clearing ' +
      'TIME_WAIT, in a client namespace made fresh for that target, and counts the TIME_WAIT it leaves there. ' +
      `A case marked "tuned client" (--tuned-client) sets ${TUNED_CLIENT_SYSCTLS.map((x) => `\`${x}\``).join(', ')} ` +
      'in its client namespace only, where that cost is invisible; it is reported, not judged.',
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

function syscallSection(summaries: CaseSummary[]): string[] {
  const t = syscallTable(summaries);
  if (!t) return [];
  return ['### System calls per connection and per session', '',
    'Median over runs; failed calls in brackets; `-` none. Counted by `strace -f -c` attached to the running proxy ' +
    '(see How it is measured).', '', mdTable(t.head, t.rows), ''];
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

/**
 * What each change to relay contributed, measured when it was made: kept by
 * hand in test/bench/levers.md (a run measures relay as it is, not the steps
 * that made it so), and copied into the report so the two stay together.
 */
function leversSection(): string[] {
  const file = path.resolve(__dirname, '..', '..', '..', 'test', 'bench', 'levers.md');
  try {
    return [fs.readFileSync(file, 'utf8').trim(), ''];
  } catch {
    return [];
  }
}
