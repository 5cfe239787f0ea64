// What the torture tests and the soak share: how hard to push (TORTURE=long),
// the abusive peers, and what relay holds, read from /proc (and from its
// USR2 stats line where relay has one).
import * as fs from 'node:fs';
import { Lab, Namespace, SpawnedProcess } from '../../src/lab/netns';
import { cliPath, distFile, Topology, ADDR, waitUntilRelayServes } from '../../src/lab/topology';
import { events } from '../../src/lab/peers';
import { formatEndpoint } from '../../src/addr';
import { udpEngineArgs } from '../integration/lab-fixture';

/**
 * How much abuse: 1 in `npm test`, more with TORTURE=long (`npm run torture`).
 * TORTURE=N multiplies by N.
 */
export const SCALE = process.env.TORTURE === 'long' ? 4 : Math.max(1, Number(process.env.TORTURE) || 1);
export const LONG = SCALE > 1;

export function abusePath(): string {
  return distFile('lab', 'abuse.js');
}

export interface RelayOptions {
  /** Extra environment for relay (RELAY_TEST_FAULTS). */
  env?: NodeJS.ProcessEnv;
  /** Commands that exec into relay, before node (prlimit, setpriv): the pid stays relay's. */
  wrap?: string[];
  /** Active health checks stay off unless args ask for them (their connections would show at the backend). */
  timeoutMs?: number;
}

/** Start relay inside the lab's relay namespace (with wrap and env) and wait until it serves. */
export async function startRelay(topo: Topology, args: string[], options: RelayOptions = {}): Promise<SpawnedProcess> {
  const health = args.includes('--health-interval') ? [] : ['--health-interval', '0'];
  const argv = [...(options.wrap ?? []), process.execPath, cliPath(), ...args, ...health, ...udpEngineArgs(args)];
  const proc = topo.lab.spawn(topo.relay, argv, options.env ?? {});
  await waitUntilRelayServes(proc, topo.relay, args, options.timeoutMs);
  return proc;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * relay's own pid: `ip netns exec NS env -u NODE_OPTIONS [prlimit ...] node cli.js`
 * execs each step in place, so the child we spawned IS relay once it runs
 * node. Throws if that ever stops being true (the fd counts would be ip's).
 */
export function relayPid(proc: SpawnedProcess): number {
  const pid = proc.child.pid;
  if (pid === undefined) throw new Error('relay has no pid');
  const exe = fs.readlinkSync(`/proc/${pid}/exe`);
  if (exe !== fs.realpathSync(process.execPath)) throw new Error(`pid ${pid} runs ${exe}, not node: the exec chain forked`);
  return pid;
}

export function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

export function rssKiB(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match ? Number(match[1]) : 0;
}

/** Whether pid catches signal number sig (its SigCgt mask): a signal it does not catch would kill it. */
export function catchesSignal(pid: number, sig: number): boolean {
  const match = /^SigCgt:\s+([0-9a-f]+)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match !== null && (BigInt(`0x${match[1]}`) & (1n << BigInt(sig - 1))) !== 0n;
}

const SIGUSR2 = 12;

/** relay's JSON log lines (with msg, if given). */
export function relayLines(proc: SpawnedProcess | string, msg?: string): Record<string, unknown>[] {
  return (typeof proc === 'string' ? proc : proc.stdout()).split('\n').filter((l) => l.startsWith('{'))
    .flatMap((l) => { try { return [JSON.parse(l) as Record<string, unknown>]; } catch { return []; } })
    .filter((l) => msg === undefined || l.msg === msg);
}

export interface Snapshot {
  fds: number;
  rssKiB: number;
  /** From relay's 'relay stats' line (kill -USR2), when relay has one. */
  stats?: Record<string, unknown>;
}

/**
 * What relay holds now. The USR2 stats line is asked for only when relay
 * catches SIGUSR2 (before that signal was added it would end relay); it is
 * an info line, so relay must run at --log-level info or lower to write it.
 */
export async function snapshot(proc: SpawnedProcess, withStats = true, stdout = () => proc.stdout()): Promise<Snapshot> {
  const pid = relayPid(proc);
  const shot: Snapshot = { fds: fdCount(pid), rssKiB: rssKiB(pid) };
  if (withStats && catchesSignal(pid, SIGUSR2)) {
    const before = relayLines(stdout(), 'relay stats').length;
    process.kill(pid, 'SIGUSR2');
    const deadline = Date.now() + 3000;
    while (Date.now() < deadline) {
      const lines = relayLines(stdout(), 'relay stats');
      if (lines.length > before) { shot.stats = lines[lines.length - 1]; break; }
      await sleep(20);
    }
  }
  return shot;
}

/**
 * Wait until relay's fd count is back within slack of baseline (connections
 * close a little after their peers do), at most timeoutMs. Returns the count.
 */
export async function settleFds(pid: number, baseline: number, slack: number, timeoutMs = 15_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let now = fdCount(pid);
  while (now > baseline + slack && Date.now() < deadline) {
    await sleep(100);
    now = fdCount(pid);
  }
  return now;
}

/**
 * How much RSS may grow over a warmed-up baseline without meaning a leak.
 * V8 keeps its young generation's semi-spaces (16 MiB each on Node 20 x64,
 * larger on newer majors) and the old generation it grew to, and malloc keeps
 * freed arenas: after a burst RSS stays tens of MiB up with nothing leaked
 * (Node 24 in CI: 68 MiB after the 1,500 abusive connections). What this
 * catches is a runaway: the blasts alone move 4 MiB per connection, so
 * keeping even one in 10 of them goes past it. Leaks per connection show in
 * the fd count, which is exact, and growth over time in the soak.
 */
export const RSS_SLACK_KIB = 128 * 1024;

/** Run one abuse.ts client in ns and return its result event. */
export async function runAbuse(lab: Lab, ns: Namespace, mode: string, args: string[], resultEvent: string,
  timeoutMs: number): Promise<Record<string, unknown>> {
  const proc = lab.spawn(ns, [process.execPath, abusePath(), mode, ...args]);
  await proc.waitFor(new RegExp(`"event":"${resultEvent}"`), timeoutMs);
  await proc.exited(5000).catch(() => proc.stop('SIGKILL'));
  return events(proc).find((e) => e.event === resultEvent)!;
}

/** The abusive backend (abuse.ts tcp-server) on the backend's IPv4 and IPv6 addresses. */
export async function abusiveBackend(topo: Topology, port: number, quiet = false): Promise<SpawnedProcess> {
  const proc = topo.lab.spawn(topo.backend, [process.execPath, abusePath(), 'tcp-server', ...(quiet ? ['--quiet'] : []),
    '--listen', formatEndpoint(ADDR.backend4, port), '--listen', formatEndpoint(ADDR.backend6, port)]);
  await proc.waitFor(/"event":"listening".*\n.*"event":"listening"/, 10_000);
  return proc;
}

export interface ServedCheck {
  ok: boolean;
  /** What the client saw. */
  client: Record<string, unknown>;
  /** Whether the backend accepted a connection from the client's own address meanwhile. */
  backendSawClient: boolean;
}

/**
 * One normal client through relay: its echo round trip works, and the
 * backend (an abuse.ts tcp-server, not quiet) accepted a connection from the
 * client's own address while it ran, which is relay's whole point (relay
 * picks the port unless --keep-client-port). Call it with no other load
 * running. Tries a few times: a case's last abuse may still be draining (a
 * 1 ms connect timeout misses now and then).
 */
export async function servesNormalClient(topo: Topology, target: string, backend: SpawnedProcess, attempts = 3): Promise<ServedCheck> {
  let last: ServedCheck | undefined;
  const fromClient = () => events(backend).filter((e) => e.event === 'accept' &&
    String(e.remote) === (target.startsWith('[') ? ADDR.client6 : ADDR.client4)).length;
  for (let i = 0; i < attempts; i++) {
    const before = fromClient();
    const client = await runAbuse(topo.lab, topo.client, 'hello', ['--target', target, '--timeout', '3000'], 'hello-result', 10_000);
    // The backend prints its accept line a moment after it echoes.
    const deadline = Date.now() + 2000;
    while (client.ok === true && fromClient() === before && Date.now() < deadline) await sleep(20);
    last = { ok: client.ok === true, client, backendSawClient: fromClient() > before };
    if (last.ok && last.backendSawClient) return last;
    await sleep(200);
  }
  return last!;
}
