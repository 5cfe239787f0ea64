// The benchmark's lab: the standard client -- relay -- backend namespaces with
// relay's routes applied, plus what a benchmark needs on top: CPU pinning,
// commands bounded in time, and kernel forwarding that can be switched on in
// the relay namespace (never on the host) to measure plain routing.
//
// Candidates for src/lab: spawnPinned, runBounded, stopWithin, setForwarding,
// renewClientNamespace.
import * as os from 'node:os';
import { Lab, Namespace, SpawnedProcess } from '../../src/lab/netns';
import { ADDR, Topology, buildTopology, applyRelayRoutes } from '../../src/lab/topology';
import { getFileLimit } from '../../src/sys';
import { runCommand, tryCommand } from '../../src/shell';

export { ADDR };

/**
 * The proxy under test gets a CPU to itself; load generators and backends
 * share the other (see TOOLCHAIN.md: left to the scheduler, results swing 2x).
 */
export const PROXY_CPU = Math.min(1, os.cpus().length - 1);
export const LOAD_CPU = 0;

/**
 * The hard open-file limit the proxies and peers run under (20,000 on the
 * machines this was written on, where root lacks CAP_SYS_RESOURCE): every UDP
 * session holds an fd in each proxy, so it bounds the sessions a case can hold.
 * Capped so an unlimited hard limit still gives a sane table size.
 */
export const FD_HARD_LIMIT = Math.min(getFileLimit().hard, 1_000_000);

export interface BenchLab extends Topology {
  relayRoutes: string;
}

export function buildBenchLab(lab: Lab): BenchLab {
  const topo = buildTopology(lab);
  const relayRoutes = applyRelayRoutes(topo.relay);
  setForwarding(topo.relay, false); // the standard lab: only a proxy joins client and backend
  // Every namespace keeps the kernel's default sysctls (tcp_tw_reuse=2, ports
  // 32768-60999), as operators and their clients run: tuning the client hid
  // a proxy that leaves TIME_WAIT on its clients (issue 21).
  return { ...topo, relayRoutes };
}

/**
 * What a tuned load generator sets, for the one case that is marked as tuned
 * (--tuned-client): TIME_WAIT reused by new connects, and twice the ports.
 * Under these the client's TIME_WAIT costs nothing, so a proxy that leaves
 * it there looks as fast as one that does not.
 */
export const TUNED_CLIENT_SYSCTLS = ['net.ipv4.tcp_tw_reuse=1', 'net.ipv4.ip_local_port_range=1024 65535'];

/** sysctl -w each setting inside ns only (its own copy of the setting). */
export function setSysctls(ns: Namespace, settings: readonly string[]): void {
  for (const setting of settings) ns.run('sysctl', '-q', '-w', setting);
}

/**
 * Replace the client namespace by a new one of the same name, link, addresses
 * and routes, so the next measurement starts with a client that holds no
 * TIME_WAIT and no other TCP state (TIME_WAIT lasts 60 s and cannot be
 * cleared). The relay's end of the link goes with the old namespace and is
 * made again; relay's routes do not name it (they use lo and a mark), so they
 * stand. Whatever still runs in the old namespace is killed first: it can
 * only be this lab's own load generator. The kernel frees the old namespace
 * in a worker thread a little later (the bench's quiet wait and its
 * busy-beside-the-proxy check see that work).
 */
export function renewClientNamespace(net: BenchLab): void {
  const name = net.client.name;
  tryCommand(['ip', 'netns', 'pids', name]).stdout.split(/\s+/).filter(Boolean)
    .forEach((pid) => { try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ } });
  // The link first, from the relay's side: deleting the namespace frees its
  // veth end (and so the peer) later, in a kernel worker, and re-making the
  // link right after then failed with 'File exists'.
  tryCommand(['ip', '-n', net.relay.name, 'link', 'del', 'eth-client']);
  runCommand(['ip', 'netns', 'del', name], undefined, 'ERR_LAB');
  runCommand(['ip', 'netns', 'add', name], undefined, 'ERR_LAB');
  net.client.ip('link', 'set', 'lo', 'up');
  net.lab.link(net.client, 'eth0', net.relay, 'eth-client');
  net.client.ip('addr', 'add', `${ADDR.client4}/24`, 'dev', 'eth0');
  net.client.ip('-6', 'addr', 'add', `${ADDR.client6}/64`, 'dev', 'eth0', 'nodad');
  net.relay.ip('addr', 'add', `${ADDR.relayClientSide4}/24`, 'dev', 'eth-client');
  net.relay.ip('-6', 'addr', 'add', `${ADDR.relayClientSide6}/64`, 'dev', 'eth-client', 'nodad');
  net.client.ip('route', 'add', 'default', 'via', ADDR.relayClientSide4);
  net.client.ip('-6', 'route', 'add', 'default', 'via', ADDR.relayClientSide6);
}

/** IPv4 forwarding inside ns only: sysctl runs inside the namespace, whose copy of the setting it changes. */
export function setForwarding(ns: Namespace, on: boolean): void {
  ns.run('sysctl', '-q', '-w', `net.ipv4.ip_forward=${on ? 1 : 0}`);
}

/**
 * Spawn argv inside ns pinned to one CPU. `ip netns exec`, the lab's `env`
 * and taskset all exec, so the child's pid is the pid of argv[0] itself
 * (checked by callers that read /proc for it).
 */
/** cpu: one CPU, or a taskset list ('0,1') for a process with workers spread over several. */
export function spawnPinned(lab: Lab, ns: Namespace, cpu: number | string, argv: string[]): SpawnedProcess {
  return lab.spawn(ns, ['taskset', '-c', String(cpu), ...argv]);
}

export interface Finished {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run argv pinned inside ns to completion; kill it and throw after timeoutMs. */
export async function runBounded(lab: Lab, ns: Namespace, cpu: number, argv: string[], timeoutMs: number): Promise<Finished> {
  const proc = spawnPinned(lab, ns, cpu, argv);
  const exited = new Promise<number | null>((resolve) => proc.child.once('exit', (code) => resolve(code)));
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), timeoutMs); });
  const result = await Promise.race([exited, timedOut]);
  clearTimeout(timer);
  if (result === 'timeout') {
    await proc.stop('SIGKILL');
    throw new Error(`${argv[0]} did not finish within ${timeoutMs} ms: ${proc.stderr().trim()}`);
  }
  // 'exit' can come before the last piped output: let the streams drain.
  await sleep(50);
  return { code: result, stdout: proc.stdout(), stderr: proc.stderr() };
}

/** SIGTERM, then SIGKILL if the process is still there after ms. */
export async function stopWithin(proc: SpawnedProcess, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const killed = new Promise<void>((resolve) => {
    timer = setTimeout(() => { void proc.stop('SIGKILL').then(() => resolve()); }, ms);
  });
  await Promise.race([proc.stop('SIGTERM').then(() => undefined), killed]);
  clearTimeout(timer);
}

/** Poll check() every 50 ms until it returns true; throw with what() after timeoutMs. */
export async function waitUntil(check: () => boolean, timeoutMs: number, what: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what()}`);
    await sleep(50);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
