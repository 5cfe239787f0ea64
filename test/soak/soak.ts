// `npm run soak -- --minutes N`: relay under mixed TCP and UDP load for N
// minutes with periodic faults (abusive TCP peers, a backend SIGKILL and
// restart, UDP floods), printing relay's fds, RSS and heap each minute and a
// verdict at the end: flat or not. Needs root. Builds its own namespace lab
// and removes it on exit, on error and on Ctrl-C.
import { parseArgs } from 'node:util';
import { Lab } from '../../src/lab/netns';
import { buildTopology, applyRelayRoutes, ADDR } from '../../src/lab/topology';
import { udpToolsPath } from '../../src/lab/peers';
import { formatEndpoint } from '../../src/addr';
import {
  startRelay, relayPid, snapshot, runAbuse, abusiveBackend, sleep, settleFds, relayLines, Snapshot,
} from '../torture/harness';
import type { SpawnedProcess } from '../../src/lab/netns';

const USAGE = `usage: npm run soak -- [--minutes N]   (as root)

  --minutes N   how long to run (default 10); a line per minute, a verdict at the end
`;

/** fds relay may hold over its first minute's count at the end: libuv opens a few lazily. */
const FD_SLACK = 5;
/** RSS growth over the run that still counts as flat (see RSS_SLACK_KIB in the harness for why this much). */
const RSS_FLAT_KIB = 64 * 1024;

function say(line: string): void {
  process.stdout.write(`soak: ${line}\n`);
}

async function main(): Promise<number> {
  const { values } = parseArgs({ args: process.argv.slice(2), options: {
    minutes: { type: 'string', default: '10' }, help: { type: 'boolean', short: 'h', default: false } } });
  if (values.help) { process.stdout.write(USAGE); return 0; }
  const minutes = Number(values.minutes);
  if (!(minutes > 0)) throw new Error(`--minutes must be a positive number: got '${values.minutes}'`);
  if (process.getuid?.() !== 0) throw new Error('the soak needs root (it builds network namespaces)');

  const lab = new Lab(`relaysoak${process.pid % 100000}`);
  let stopping = false;
  const cleanup = async (): Promise<void> => { await lab.teardown(); };
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    say(`${signal}: removing the lab`);
    void cleanup().then(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await soak(lab, minutes, () => stopping);
  } finally {
    await cleanup();
  }
}

async function soak(lab: Lab, minutes: number, stopped: () => boolean): Promise<number> {
  const topo = buildTopology(lab);
  applyRelayRoutes(topo.relay);
  topo.client.ip('route', 'add', 'local', '203.0.113.0/24', 'dev', 'lo');
  topo.relay.ip('route', 'add', '203.0.113.0/24', 'via', ADDR.client4);
  const backendPorts = [7800, 7801];
  const tcpBackends: SpawnedProcess[] = [];
  const udpBackends: SpawnedProcess[] = [];
  const startBackends = async (i: number): Promise<void> => {
    tcpBackends[i] = await abusiveBackend(topo, backendPorts[i], true);
    udpBackends[i] = lab.spawn(topo.backend, [process.execPath, udpToolsPath(), 'echo',
      '--listen', formatEndpoint(ADDR.backend4, backendPorts[i])]);
    await udpBackends[i].waitFor(/"event":"listening"/);
    // udp-tools' echo prints a line per datagram: over a soak, that is for nobody.
    udpBackends[i].child.stdout?.removeAllListeners('data').resume();
  };
  await startBackends(0);
  await startBackends(1);
  const relay = await startRelay(topo, ['--proto', 'tcp,udp', '--listen', '0.0.0.0:7802', '--listen', '[::]:7803',
    '--backend', formatEndpoint(ADDR.backend4, 7800), '--backend', formatEndpoint(ADDR.backend4, 7801),
    '--backend', formatEndpoint(ADDR.backend6, 7800),
    '--max-sessions', '512', '--session-timeout', '2s', '--health-interval', '500ms', '--log-level', 'info']);
  const pid = relayPid(relay);
  // At info relay writes a line per connection: keep only its stats lines and
  // warnings or worse, or the soak's own memory would grow with the run.
  let kept = '';
  let partial = '';
  relay.child.stdout?.removeAllListeners('data');
  relay.child.stdout?.on('data', (chunk: string) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      if (line.includes('"msg":"relay stats"') || /"level":[456]0/.test(line)) kept += `${line}\n`;
    }
  });
  const v4 = `${ADDR.relayClientSide4}:7802`;
  say(`lab ${lab.prefix}, relay pid ${pid}, ${minutes} min; columns: minute fds rssMiB heapMiB tcpOpen udpSessions`);

  const samples: Snapshot[] = [];
  const deadline = Date.now() + minutes * 60_000;
  let minute = 0;
  let nextSample = Date.now();
  let faults = 0;
  const print = (s: Snapshot, label: string): void => {
    const heap = s.stats ? (Number(s.stats.heapUsed) / 1048576).toFixed(1) : 'n/a';
    const tcp = (s.stats?.tcp as Record<string, number> | undefined)?.open ?? 'n/a';
    const udp = (s.stats?.udp as Record<string, number> | undefined)?.sessions ?? 'n/a';
    say(`${label.padEnd(6)} fds ${String(s.fds).padStart(4)}  rss ${(s.rssKiB / 1024).toFixed(1).padStart(6)} MiB  ` +
      `heap ${String(heap).padStart(6)} MiB  tcpOpen ${tcp}  udpSessions ${udp}`);
  };

  // Steady load the whole time: TCP echo round trips and one UDP conversation.
  const steadyMs = minutes * 60_000;
  const steady = Promise.all([
    runAbuse(lab, topo.client, 'tcp-load', ['--target', v4, '--duration', String(steadyMs), '--parallel', '4'],
      'load-result', steadyMs + 60_000),
    runAbuse(lab, topo.client, 'udp-steady', ['--target', v4, '--local-port', '44000', '--every', '50',
      '--duration', String(steadyMs)], 'steady-result', steadyMs + 60_000),
  ]).catch((err: Error) => { say(`steady load failed: ${err.message}`); return undefined; });

  while (Date.now() < deadline && !stopped()) {
    if (Date.now() >= nextSample) {
      const s = await snapshot(relay, true, () => kept);
      samples.push(s);
      print(s, `min ${minute}`);
      minute++;
      nextSample += 60_000;
    }
    if (relay.child.exitCode !== null) break;
    // One fault every few seconds, round robin, each bounded in time.
    const kind = faults++ % 4;
    if (kind === 0) {
      await runAbuse(lab, topo.client, 'tcp-mix', ['--target', v4, '--conns', '300', '--parallel', '40', '--timeout', '3000'],
        'mix-result', 60_000);
    } else if (kind === 1) {
      const flood = lab.spawn(topo.client, [process.execPath, udpToolsPath(), 'flows', '--target', v4,
        '--flows', '2000', '--batch', '500', '--timeout', '300']);
      await flood.waitFor(/"event":"flows-result"/, 60_000);
    } else if (kind === 2) {
      await runAbuse(lab, topo.client, 'udp-spoof', ['--target', v4, '--sources', '203.0.113.1-203.0.113.100',
        '--ports', '5', '--timeout', '300'], 'spoof-result', 60_000);
    } else {
      const victim = faults % 8 === 0 ? 1 : 0;
      await tcpBackends[victim].stop('SIGKILL');
      await udpBackends[victim].stop('SIGKILL');
      await sleep(2000);
      await startBackends(victim);
    }
    await sleep(1000);
  }
  const ended = await steady;
  // Let the last fault's connections and sessions finish before the last sample.
  await sleep(3000);
  if (relay.child.exitCode === null && samples.length > 0) await settleFds(pid, samples[0].fds, FD_SLACK, 10_000);
  const alive = relay.child.exitCode === null;
  const last = alive ? await snapshot(relay, true, () => kept) : undefined;
  if (last) print(last, 'end');
  if (ended) say(`steady load: tcp ${JSON.stringify(ended[0])}, udp ${JSON.stringify(ended[1])}`);

  // fds are compared with minute 0 (relay at rest, before any load); RSS with
  // minute 1 when there is one: V8 and malloc grow to their working size in
  // the first minute of load and keep it, which is not a leak.
  const first = samples[0];
  const warm = samples[1] ?? samples[0];
  const verdicts: string[] = [];
  const errors = relayLines(kept).filter((l) => Number(l.level) >= 50);
  if (errors.length > 0) say(`relay logged ${errors.length} error lines, first: ${JSON.stringify(errors[0])}`);
  if (!alive) verdicts.push(`relay exited (${relay.child.exitCode}): ${relay.stderr().trim().slice(0, 500)}`);
  if (first && last) {
    const fdGrowth = last.fds - first.fds;
    const rssGrowth = last.rssKiB - warm.rssKiB;
    // Flat means: at the end (load stopped, sessions expired) relay holds what it held at minute 0.
    verdicts.push(fdGrowth <= FD_SLACK ? `fds flat (${first.fds} -> ${last.fds})` : `fds GREW ${first.fds} -> ${last.fds} (+${fdGrowth})`);
    verdicts.push(rssGrowth <= RSS_FLAT_KIB ? `RSS flat (${(warm.rssKiB / 1024).toFixed(1)} -> ${(last.rssKiB / 1024).toFixed(1)} MiB)`
      : `RSS GREW ${(warm.rssKiB / 1024).toFixed(1)} -> ${(last.rssKiB / 1024).toFixed(1)} MiB`);
    const growing = samples.slice(1).map((s, i) => s.fds - samples[i].fds);
    if (growing.length >= 3 && growing.every((d) => d > 0)) verdicts.push('fds rose every minute');
  }
  const pass = alive && verdicts.every((v) => !/GREW|exited|rose/.test(v));
  say(`${faults} faults; verdict: ${pass ? 'FLAT' : 'NOT FLAT'}: ${verdicts.join('; ')}`);
  if (relay.child.exitCode === null) await relay.stop();
  return pass ? 0 : 1;
}

main().then((code) => { process.exitCode = code; }, (err: Error) => {
  say(`error: ${err.message}`);
  process.exitCode = 2;
});
