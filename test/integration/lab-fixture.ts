// Shared set-up for the namespace tests: one lab per test file (unique names,
// since tap runs files in parallel), removed in teardown whatever happens.
import type { Test } from 'tap';
import { Lab, Namespace, SpawnedProcess } from '../../src/lab/netns';
import { buildTopology, applyRelayRoutes, startRelay, Topology, ADDR } from '../../src/lab/topology';
import { startToolServer, toolsPath, udpToolsPath, events } from '../../src/lab/peers';
import { formatEndpoint } from '../../src/addr';

export { ADDR, events, formatEndpoint, udpToolsPath };

export const canRunLab = process.getuid?.() === 0;
export const SKIP_REASON = 'namespace tests need root (they create network namespaces)';

/** A client-relay-backend lab with relay's host routes applied. */
export function tcpLab(t: Test, tag: string): Topology {
  // Namespace names: unique per file and per run.
  const lab = new Lab(`rt${tag}${process.pid % 100000}`);
  t.teardown(() => lab.teardown());
  const topo = buildTopology(lab);
  applyRelayRoutes(topo.relay, ...(UDP_ENGINE === 'raw' ? ['--udp-engine', 'raw'] : []));
  return topo;
}

/**
 * The UDP engine the UDP suite runs against: socket, or raw when a twin file
 * (NAME.raw.test.ts) imports ./raw-engine first. Every UDP relay of the file
 * then runs with --udp-engine raw, and the lab's routes carry its rules.
 */
export const UDP_ENGINE = process.env.RELAY_TEST_UDP_ENGINE === 'raw' ? 'raw' : 'socket';

/**
 * Start relay in the lab. Active health checks are off unless the test asks
 * for them: their connections from relay's own address would otherwise show
 * up among what the backend saw.
 */
export function relay(topo: Topology, args: string[]): Promise<SpawnedProcess> {
  const health = args.includes('--health-interval') ? [] : ['--health-interval', '0'];
  return startRelay(topo.lab, topo.relay, [...args, ...health, ...udpEngineArgs(args)]);
}

/** --udp-engine raw for a UDP relay when the suite runs against the raw engine (and args do not choose one). */
export function udpEngineArgs(args: readonly string[]): string[] {
  const proto = args[args.indexOf('--proto') + 1] ?? '';
  return UDP_ENGINE === 'raw' && args.includes('--proto') && proto.includes('udp') && !args.includes('--udp-engine')
    ? ['--udp-engine', 'raw'] : [];
}

export function toolServer(topo: Topology, mode: string, port: number, addresses: readonly string[] = [ADDR.backend4, ADDR.backend6]): Promise<SpawnedProcess> {
  return startToolServer(topo.lab, topo.backend, mode, addresses.map((a) => formatEndpoint(a, port)), port);
}

export interface SessionOutcome {
  connected: boolean;
  local: string;
  localPort: number;
  received: string;
  gotEnd: boolean;
  error: string | null;
  closedAfterMs: number;
}

/** Run one scripted client connection in the client namespace and return what it saw. */
export async function clientSession(topo: Topology, target: string, flags: string[] = [], waitMs = 5000): Promise<SessionOutcome> {
  const proc = topo.lab.spawn(topo.client, [process.execPath, toolsPath(), 'session', '--target', target,
    '--timeout', String(waitMs), ...flags]);
  await proc.waitFor(/"event":"session"/, waitMs + 5000);
  return events(proc).find((e) => e.event === 'session') as unknown as SessionOutcome;
}

/** relay's JSON log lines with the given msg. */
export function relayLogs(proc: SpawnedProcess, msg?: string): Record<string, unknown>[] {
  return proc.stdout().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l))
    .filter((l) => msg === undefined || l.msg === msg);
}

/**
 * relay's lines with msg logged at or after since (ms): by each line's own
 * time, not by when it reached stdout, since relay batches its writes and a
 * line can arrive after a later event the test waited for.
 */
export function relayLogsSince(proc: SpawnedProcess, msg: string, since: number): Record<string, unknown>[] {
  return relayLogs(proc, msg).filter((l) => Date.parse(String(l.time)) >= since);
}

/** Wait until predicate holds, polling, at most timeoutMs. */
export async function eventually<T>(fn: () => T | undefined, timeoutMs = 5000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = fn();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export function accepts(server: SpawnedProcess): { remote: string; port: number }[] {
  return events(server).filter((e) => e.event === 'accept').map((e) => ({ remote: String(e.remote), port: Number(e.port) }));
}

export type { Namespace, Topology, SpawnedProcess };

/**
 * n TCP connections to target (IPv4 ADDR:PORT) one after another from one
 * client process, each from a new source port and sending prefix+i to an
 * echo backend: how many came back right.
 */
export function echoMany(topo: Topology, target: string, prefix: string, n: number): number {
  const cut = target.lastIndexOf(':');
  const script = `const net=require('net');let ok=0;const one=(i)=>{if(i===${n}){process.stdout.write(String(ok));return;}` +
    `const s=net.connect(${Number(target.slice(cut + 1))},'${target.slice(0, cut)}',()=>s.end('${prefix}'+i));let got='';s.on('data',d=>got+=d);` +
    `s.on('error',()=>{});s.on('close',()=>{if(got==='${prefix}'+i)ok++;one(i+1);});};one(0);`;
  return Number(topo.client.run('node', '-e', script));
}

/** One HTTP request with curl inside ns: the status and the body. */
export function httpRequest(ns: Namespace, method: string, url: string, headers: string[] = []): { status: number; body: string } {
  const out = ns.run('curl', '-s', '-m', '5', '-X', method, ...headers.flatMap((h) => ['-H', h]), '-w', '\n%{http_code}', url);
  const cut = out.lastIndexOf('\n');
  return { status: Number(out.slice(cut + 1)), body: out.slice(0, cut) };
}

/** The samples of name in a /metrics text whose labels include labels. */
export function metricSamples(text: string, name: string, labels: Record<string, string>): number[] {
  const values: number[] = [];
  for (const line of text.split('\n')) {
    const match = /^([a-z_:]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const have = Object.fromEntries([...(match[2] ?? '').matchAll(/([a-z_]+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) values.push(Number(match[3]));
  }
  return values;
}

/** The sum of every such sample. */
export function metricTotal(text: string, name: string, labels: Record<string, string> = {}): number {
  return metricSamples(text, name, labels).reduce((a, b) => a + b, 0);
}

/**
 * A client in the client namespace holding one TCP connection to target
 * (ADDR:PORT, IPv4) through an echo backend: it sends 100,000 bytes at
 * connect and 100,000 more on each SIGUSR2, and prints
 * {"event":"echoed","bytes":N,"exact":true|false} when all it sent came back.
 */
export function heldConnection(topo: Topology, target: string): SpawnedProcess {
  const cut = target.lastIndexOf(':');
  const script = `
const net = require('net');
const s = net.connect(${Number(target.slice(cut + 1))}, '${target.slice(0, cut)}');
let got = Buffer.alloc(0), sent = Buffer.alloc(0);
const say = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
s.on('data', (d) => { got = Buffer.concat([got, d]); if (got.length === sent.length) say({ event: 'echoed', bytes: got.length, exact: got.equals(sent) }); });
s.on('error', (e) => say({ event: 'error', code: e.code }));
s.on('close', () => say({ event: 'closed' }));
const send = (n) => { const b = Buffer.alloc(n, 0); for (let i = 0; i < n; i++) b[i] = (i * 7 + sent.length) & 255; sent = Buffer.concat([sent, b]); s.write(b); };
s.on('connect', () => { say({ event: 'connected', port: s.localPort }); send(100000); });
process.on('SIGUSR2', () => send(100000));
setTimeout(() => process.exit(0), 20000);
`;
  return topo.lab.spawn(topo.client, [process.execPath, '-e', script]);
}

// ---- UDP --------------------------------------------------------------------

import { waitForListener } from '../../src/lab/netns';

/** A UDP echo server on the backend that reports every datagram's source. */
export async function udpEcho(topo: Topology, port: number, addresses: readonly string[] = [ADDR.backend4, ADDR.backend6]): Promise<SpawnedProcess> {
  const proc = topo.lab.spawn(topo.backend, [process.execPath, udpToolsPath(), 'echo',
    ...addresses.flatMap((a) => ['--listen', formatEndpoint(a, port)])]);
  await waitForListener(topo.backend, 'udp', port);
  return proc;
}

export interface SendResult {
  local: string;
  localPort: number;
  sent: number;
  replies: { from: string; bytes: number; exact: boolean }[];
}

/** Send datagrams of the given sizes from one client socket; what came back. */
export async function udpSend(topo: Topology, target: string, flags: string[] = [], ns: Namespace = topo.client): Promise<SendResult> {
  const proc = topo.lab.spawn(ns, [process.execPath, udpToolsPath(), 'send', '--target', target, ...flags]);
  await proc.waitFor(/"event":"send-result"/, 15_000);
  return events(proc).find((e) => e.event === 'send-result') as unknown as SendResult;
}

export function udpSeen(server: SpawnedProcess): { remote: string; port: number; bytes: number }[] {
  return events(server).filter((e) => e.event === 'udp')
    .map((e) => ({ remote: String(e.remote), port: Number(e.port), bytes: Number(e.bytes) }));
}
