// `npm run bench`: builds a namespace lab, measures relay against nginx's
// transparent stream proxy and plain kernel routing, prints a table with
// verdicts and writes docs/benchmarks.md. Needs root. The lab is removed on
// exit, on error and on Ctrl-C.
//
//   npm run bench -- --runs 1 --seconds 2       a quick run
//   npm run bench -- --only tcp-idle-memory     one case
//   npm run bench -- --tuned-client             also the connection rate with a tuned client, marked
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { Lab } from '../../src/lab/netns';
import { tryCommand } from '../../src/shell';
import { BenchCase, BenchOptions, CaseResult, PROXY_CPU_OTHERS_LIMIT, deriveResult, median, runCase, runsOf } from './case';
import { FD_HARD_LIMIT, LOAD_CPU, PROXY_CPU, buildBenchLab } from './lab';
import { Target, haproxyInstalled } from './targets';
import { TCP_CASES, tcpConnRateTunedClient } from './tcp';
import { SYSCALL_CASES } from './syscalls';
import { WORKERS_CASES } from './workers';
import { DEFAULT_UDP_SESSIONS, UDP_CASES, UDP_MAX_SESSIONS, UDP_WARM_UP_SESSIONS, crossComparisons } from './udp';
import { udpScale } from './udp-scale';
import { CaseSummary, consoleReport, machineInfo, markdownReport, summarize } from './report';

/** Every case the benchmark knows, in the order they run. */
const CASES: readonly BenchCase[] = [...TCP_CASES, ...UDP_CASES, udpScale, ...WORKERS_CASES, ...SYSCALL_CASES];
/** Cases left out unless asked for by name (--only) or by their own flag. */
const OPT_IN: ReadonlySet<string> = new Set([tcpConnRateTunedClient.id]);
/** RELAY_BENCH_PREFIX names another lab, so two benchmarks (two work trees) do not tear down each other's namespaces. */
const LAB_PREFIX = process.env.RELAY_BENCH_PREFIX || 'relaybench';
const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');
const REQUIRED_TOOLS = ['ip', 'taskset', 'iperf3', 'wrk', 'nginx', 'curl', 'nft', 'cc', 'strace'];

const FLAGS = {
  runs: { type: 'string', default: '3' },
  seconds: { type: 'string', default: '5' },
  conns: { type: 'string', default: '50' },
  'idle-conns': { type: 'string', default: '5000' },
  'udp-flows': { type: 'string', default: '128' },
  'udp-sessions': { type: 'string', default: String(DEFAULT_UDP_SESSIONS) },
  only: { type: 'string' },
  targets: { type: 'string' },
  out: { type: 'string', default: path.join('docs', 'benchmarks.md') },
  'tuned-client': { type: 'boolean', default: false },
  'no-doc': { type: 'boolean', default: false },
  strict: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

const USAGE = `usage: npm run bench [-- options]   (as root)

  --runs N          runs per measurement, the median is reported (default 3)
  --seconds S       length of each throughput and connection-rate run (default 5)
  --conns N         concurrent wrk connections in the connection-rate case (default 50)
  --idle-conns N    connections held in the memory case (default 5000; relay uses 2 fds each)
  --udp-flows N     client sockets (ports, so sessions) in the UDP rate cases (default 128)
  --udp-sessions N  live sessions in the UDP memory case (default ${DEFAULT_UDP_SESSIONS}: 50,000 or as many as the
                    hard open-file limit, ${FD_HARD_LIMIT}, allows; 1 fd each, at most ${UDP_MAX_SESSIONS - UDP_WARM_UP_SESSIONS})
  --only IDS        comma-separated case ids: ${CASES.map((c) => c.id).join(', ')}
                    (a figure read from another case's runs, e.g. ${CASES.flatMap((c) => c.derived ?? [])[0]?.id}, runs that case)
  --tuned-client    also run ${tcpConnRateTunedClient.id}: the connection rate with the client tuned
                    (tcp_tw_reuse=1, ports 1024-65535), reported beside the default-sysctl case, not judged
  --targets NAMES   comma-separated: ${[...new Set(CASES.flatMap((c) => c.targets.map((t) => t.name)))].join(', ')} (default all;
                    haproxy, in the connection-rate case, only where it is installed)
  --out FILE        where to write the report (default docs/benchmarks.md)
  --no-doc          print only, write no report
  --strict          exit 1 if relay misses a target
`;

function say(line: string): void {
  process.stdout.write(`bench: ${line}\n`);
}

function positiveInt(text: string, flag: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${flag} must be a positive integer: got '${text}'`);
  return n;
}

function parseOptions(argv: string[]) {
  const { values } = parseArgs({ args: argv, options: FLAGS, strict: true, allowPositionals: false });
  const options: BenchOptions = {
    runs: positiveInt(values.runs, 'runs'),
    seconds: positiveInt(values.seconds, 'seconds'),
    rateConns: positiveInt(values.conns, 'conns'),
    idleConns: positiveInt(values['idle-conns'], 'idle-conns'),
    udpFlows: positiveInt(values['udp-flows'], 'udp-flows'),
    udpSessions: positiveInt(values['udp-sessions'], 'udp-sessions'),
  };
  // Each idle connection costs the proxy 2 fds under the 20,000 hard limit, plus listeners and logs.
  if (options.idleConns > 8_800) throw new Error('--idle-conns must be at most 8800 (relay runs with --max-conns 9000: 2 fds each, 20,000 fd limit)');
  if (options.udpFlows > 1_000) throw new Error('--udp-flows must be at most 1000');
  // Each UDP session costs the proxy 1 fd; relay runs with --max-sessions UDP_MAX_SESSIONS, warm-up sessions included.
  if (options.udpSessions > UDP_MAX_SESSIONS - UDP_WARM_UP_SESSIONS) {
    throw new Error(`--udp-sessions must be at most ${UDP_MAX_SESSIONS - UDP_WARM_UP_SESSIONS} (1 fd each, hard open-file limit ${FD_HARD_LIMIT})`);
  }
  // A derived figure's id asks for the case whose runs it reads.
  const sourceOf = new Map(CASES.flatMap((c) => (c.derived ?? []).map((d) => [d.id, c.id] as const)));
  const ids = values.only?.split(',').map((s) => s.trim()).map((id) => sourceOf.get(id) ?? id);
  const unknown = ids?.filter((id) => !CASES.some((c) => c.id === id)) ?? [];
  if (unknown.length > 0) throw new Error(`--only: unknown case ${unknown.join(', ')}`);
  const names = values.targets?.split(',').map((s) => s.trim());
  const unknownTargets = names?.filter((n) => !CASES.some((c) => c.targets.some((t) => t.name === n))) ?? [];
  if (unknownTargets.length > 0) throw new Error(`--targets: unknown target ${unknownTargets.join(', ')}`);
  const wanted = (c: BenchCase) => (ids ? ids.includes(c.id) : !OPT_IN.has(c.id)) ||
    (c.id === tcpConnRateTunedClient.id && values['tuned-client']);
  // HAProxy is measured where it is installed, and left out (said at start) where not.
  const withoutHaproxy = (c: BenchCase) => (haproxyInstalled() ? c : { ...c, targets: c.targets.filter((t) => t.name !== 'haproxy'),
    derived: c.derived?.map((d) => ({ ...d, targets: d.targets.filter((t) => t.name !== 'haproxy') })) });
  const cases = CASES.filter(wanted).map(withoutHaproxy)
    .map((c) => (names ? { ...c, targets: c.targets.filter((t) => names.includes(t.name)) } : c))
    .filter((c) => c.targets.length > 0);
  return { options, cases, values };
}

function checkPrerequisites(): void {
  if (process.getuid?.() !== 0) throw new Error('needs root: it creates network namespaces and runs transparent proxies');
  const missing = REQUIRED_TOOLS.filter((t) => !tryCommand(['which', t]).ok);
  if (missing.length > 0) throw new Error(`missing tools: ${missing.join(' ')} (apt-get install -y iperf3 wrk nginx libnginx-mod-stream curl nftables gcc strace)`);
}

/** Other labs on this machine compete for the CPUs: worth saying next to the numbers. */
function foreignNamespaces(): string[] {
  return tryCommand(['ip', 'netns', 'list']).stdout.split('\n').map((l) => l.split(' ')[0])
    .filter((n) => n !== '' && !n.startsWith(`${LAB_PREFIX}-`));
}

async function main(argv: string[]): Promise<number> {
  const { options, cases, values } = parseOptions(argv);
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  checkPrerequisites();
  if (!haproxyInstalled()) say('haproxy is not installed: the connection-rate case runs without it (apt-get install -y haproxy)');
  // The runner itself goes to the load CPU with everything it spawns, unless pinned elsewhere.
  tryCommand(['taskset', '-a', '-p', '-c', String(LOAD_CPU), String(process.pid)]);
  const foreign = foreignNamespaces();
  if (foreign.length > 0) say(`other network namespaces exist (${foreign.join(', ')}): other jobs may disturb the numbers`);

  const lab = new Lab(LAB_PREFIX);
  let tornDown = false;
  const teardown = async () => {
    if (tornDown) return;
    tornDown = true;
    await lab.teardown();
  };
  const onSignal = () => {
    say('interrupted: removing the lab');
    void teardown().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const results: CaseResult[] = [];
  try {
    say(`building the lab (${LAB_PREFIX}-client, -relay, -backend); proxy on CPU ${PROXY_CPU}, load on CPU ${LOAD_CPU}`);
    const net = buildBenchLab(lab);
    for (const benchCase of cases) {
      say(`${benchCase.title}: ${runsOf(benchCase, options)} run(s) each through ${benchCase.targets.map((t) => t.name).join(', ')}`);
      const result = await runCase({ lab, net }, benchCase, options, say);
      results.push(result, ...(benchCase.derived ?? []).map((d) => deriveResult(result, d)));
    }
  } finally {
    await teardown();
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }

  const summaries = results.map(summarize);
  process.stdout.write(consoleReport(summaries));
  const cross = crossComparisons(summaries);
  if (cross.length > 0) process.stdout.write(`\n${cross.join('\n')}\n`);
  const warnings = collectWarnings(summaries, options, foreign);
  if (warnings.length > 0) process.stdout.write(`\nNotes:\n${warnings.map((w) => `  - ${w}`).join('\n')}\n`);
  // Measurements of relay against itself, not against nginx: several backends, and the cost of a pick.
  const extras = values.only ? [] : balancingMeasurements(options);
  if (!values['no-doc']) writeDoc(values.out, summaries, options, argv, warnings, cases, cross, extras);
  return values.strict && summaries.some((s) => s.verdict === 'FAIL') ? 1 : 0;
}

/**
 * The balancing figures (issue target: four backends with health checks
 * >= 0.9x one backend; maglev lookups/s), from their own scripts; each prints
 * its runs and a median line, which are shown as they are.
 */
function balancingMeasurements(options: BenchOptions): string[] {
  const scripts: [string, string[]][] = [
    ['backends-conn-rate.js', ['--runs', String(options.runs), '--seconds', String(options.seconds)]],
    ['maglev-lookups.js', []],
  ];
  const sections: string[] = [];
  for (const [script, args] of scripts) {
    const command = `node dist/test/bench/${script} ${args.join(' ')}`.trim();
    say(`${command}`);
    const result = spawnSync(process.execPath, [path.join(__dirname, script), ...args], { encoding: 'utf8', timeout: 600_000 });
    const output = (result.stdout + (result.status === 0 ? '' : result.stderr)).trim();
    process.stdout.write(`${output}\n`);
    sections.push(`$ ${command}\n${output}`);
  }
  return sections;
}

function writeDoc(out: string, summaries: CaseSummary[], options: BenchOptions, argv: string[], warnings: string[],
  cases: readonly BenchCase[], cross: string[], extras: string[]): void {
  const file = path.resolve(REPO_ROOT, out);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const balancing = extras.length === 0 ? '' : '\n## Several backends (relay against itself)\n\n' +
    'Target: new connections/s with four backends and health checks >= 0.9x one backend. ' +
    'Both scripts ran right after the cases above, on the same machine.\n\n' +
    extras.map((e) => `\`\`\`\n${e}\n\`\`\``).join('\n\n') + '\n';
  fs.writeFileSync(file, markdownReport({
    summaries,
    machine: machineInfo(),
    options,
    command: `npm run bench${argv.length > 0 ? ` -- ${argv.join(' ')}` : ''}`,
    date: new Date(),
    targets: distinctTargets(cases),
    pinning: `the proxy under test (relay's node process; nginx's master and worker) alone on CPU ${PROXY_CPU} ` +
      `(taskset -c ${PROXY_CPU}); load generators, backends and the benchmark runner on CPU ${LOAD_CPU}.`,
    warnings,
    crossComparisons: cross,
  }) + balancing);
  say(`wrote ${path.relative(process.cwd(), file) || file}`);
}

/** Every target configuration the cases used, each once, in order of first use. */
function distinctTargets(cases: readonly BenchCase[]): Target[] {
  const seen = new Map<string, Target>();
  for (const t of cases.flatMap((c) => c.targets)) {
    const key = `${t.name}|${t.setup}`;
    if (!seen.has(key)) seen.set(key, t);
  }
  return [...seen.values()];
}

/** Things a reader must know to trust (or distrust) the numbers. */
function collectWarnings(summaries: CaseSummary[], options: BenchOptions, foreign: string[]): string[] {
  const warnings: string[] = [];
  if (options.runs < 3) warnings.push(`only ${options.runs} run(s) per measurement: a quick run, not a reference`);
  if (foreign.length > 0) warnings.push(`other network namespaces existed during the run (${foreign.join(', ')}): other jobs shared the machine`);
  // A derived figure's runs are its source case's: warned about once, there.
  for (const s of summaries.filter((x) => !('source' in x.result.benchCase))) {
    const c = s.result.benchCase;
    if (s.result.discarded.length > 0) {
      warnings.push(`${c.id}: ${s.result.discarded.length} run(s) repeated because other jobs used the CPUs (listed under All runs)`);
    }
    for (const x of s.result.samples) {
      const where = `${c.id} run ${x.run} (${x.target})`;
      if (x.foreignCores > 0.1 && !c.countOnly) warnings.push(`${where}: other jobs used ${x.foreignCores.toFixed(2)} cores during it, even after repeats`);
      if ((x.proxyCpuOthers ?? 0) > PROXY_CPU_OTHERS_LIMIT) {
        warnings.push(`${where}: CPU ${PROXY_CPU} was ${Math.round((x.proxyCpuOthers ?? 0) * 100)}% busy beside the proxy, even after repeats`);
      }
      if (x.busyBefore > 0.2 && !c.countOnly) warnings.push(`${where} started with a CPU ${Math.round(x.busyBefore * 100)}% busy (another job?)`);
      if (x.sawClient === false) warnings.push(`${where}: the backend did NOT see the client's address (${x.details.backendSaw ?? ''})`);
      if (x.details.socketErrors && x.details.socketErrors !== 'none' &&
        !/^connect 0, read 0, write 0, timeout 0$/.test(String(x.details.socketErrors))) {
        warnings.push(`${where}: wrk socket errors: ${x.details.socketErrors}`);
      }
      if (Number(x.details.non2xx) > 0) warnings.push(`${where}: ${x.details.non2xx} non-2xx responses`);
      warnings.push(...udpWarnings(where, x.details, c.flatOut === true));
      for (const [problem, n] of Object.entries(x.problems)) warnings.push(`${where} logged ${n}x ${problem}`);
    }
    for (const [name, t] of Object.entries(s.targets)) {
      const runs = s.result.samples.filter((x) => x.target === name && x.hostBusy.length > LOAD_CPU);
      const busy = runs.map((x) => x.hostBusy[LOAD_CPU]);
      // Flat-out load keeps the load CPU busy whatever happens; the proxy dropping datagrams is what says it was the limit.
      const proxyDropped = c.flatOut === true && runs.some((x) => Number(x.details.dropsRelayNs) > 0);
      if (busy.length > 0 && median(busy) > 0.9 && !proxyDropped) {
        warnings.push(`${c.id} (${name}): CPU ${LOAD_CPU} (load generator and backend) was ${Math.round(median(busy) * 100)}% ` +
          `busy (median run), so ${t ? 'this figure' : 'it'} may be bounded by the load side rather than by ${name}`);
      }
    }
  }
  return warnings;
}

/** What the UDP peers counted that a reader should know about. */
function udpWarnings(where: string, d: Record<string, string | number>, flatOut: boolean): string[] {
  const out: string[] = [];
  if (Number(d.retries) > 0) out.push(`${where}: ${d.retries} requests went unanswered for 500 ms and were sent again (datagrams lost)`);
  if (d.sendErrors !== undefined && d.sendErrors !== 'none') out.push(`${where}: the client's sends failed: ${d.sendErrors}`);
  if (Number(d.dropsBackendNs) > 0) out.push(`${where}: the backend's socket queue overflowed ${d.dropsBackendNs} times (the figure may be the backend's limit)`);
  if (Number(d.dropsClientNs) > 0) out.push(`${where}: the client's socket queues overflowed ${d.dropsClientNs} times`);
  // Flat-out one-way load is meant to overflow the proxy's queue; with replies expected, a drop is a lost request.
  if (!flatOut && Number(d.dropsRelayNs) > 0) out.push(`${where}: ${d.dropsRelayNs} datagrams dropped in the relay namespace (a proxy socket queue full)`);
  if (Number(d.failed) > 0) out.push(`${where}: ${d.failed} sessions never answered`);
  if (d.belowOffered === 'yes') out.push(`${where}: served less than its offered ${d.offeredRate} req/s: not a comparison at equal load`);
  return out;
}

main(process.argv.slice(2)).then(
  (status) => { process.exitCode = status; },
  (err: Error) => {
    process.stderr.write(`bench: ${err.message}\n`);
    process.exitCode = 1;
  },
);
