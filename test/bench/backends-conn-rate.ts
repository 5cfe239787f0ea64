// New TCP connections per second through relay with four backends and active
// health checks, as a ratio to relay with one backend (issue target: >= 0.9x):
// what a pick, the health bookkeeping and the checks themselves cost. Runs
// alternate so drift on this shared machine spreads over both. As root:
//
//   npm run build && node dist/test/bench/backends-conn-rate.js [--runs 3] [--seconds 5]
//
// Not yet one of `npm run bench`'s cases: those compare relay with nginx.
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { Lab } from '../../src/lab/netns';
import { ADDR, applyRelayRoutes, buildTopology, cliPath } from '../../src/lab/topology';
import { startNginxHttp } from '../../src/lab/peers';
import { waitForListener } from '../../src/lab/netns';

const PROXY_CPU = '1';
const LOAD_CPU = '0';
const BACKENDS = ['198.51.100.20', '198.51.100.21', '198.51.100.22', '198.51.100.23'];

const { values } = parseArgs({ options: { runs: { type: 'string', default: '3' }, seconds: { type: 'string', default: '5' } } });
const RUNS = Number(values.runs);
const SECONDS = Number(values.seconds);

const CONFIGS: Record<string, string[]> = {
  'one backend': ['--backend', `${BACKENDS[0]}:80`, '--health-interval', '0'],
  'four backends, health checks every 2 s': [...BACKENDS.flatMap((a) => ['--backend', `${a}:80`]), '--health-interval', '2s'],
};

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

async function main(): Promise<void> {
  const lab = new Lab('relaybackends');
  process.once('SIGINT', () => void lab.teardown().then(() => process.exit(130)));
  try {
    const topo = buildTopology(lab);
    applyRelayRoutes(topo.relay);
    for (const address of BACKENDS.slice(1)) topo.backend.ip('addr', 'add', `${address}/24`, 'dev', 'eth0');
    await startNginxHttp(lab, topo.backend, BACKENDS, 80);
    const results: Record<string, number[]> = Object.fromEntries(Object.keys(CONFIGS).map((k) => [k, []]));
    let port = 8100;
    for (let run = 1; run <= RUNS; run++) {
      for (const [name, args] of Object.entries(CONFIGS)) {
        port++;
        const relay = lab.spawn(topo.relay, ['taskset', '-c', PROXY_CPU, process.execPath, cliPath(),
          '--listen', `${ADDR.relayClientSide4}:${port}`, ...args, '--log-level', 'warn']);
        await waitForListener(topo.relay, 'tcp', port);
        const before = cpuSeconds(relay.child.pid!);
        const out = topo.client.run('taskset', '-c', LOAD_CPU, 'wrk', '-t1', '-c50', `-d${SECONDS}s`, '--timeout', '2s',
          '-H', 'Connection: close', `http://${ADDR.relayClientSide4}:${port}/`);
        const cores = (cpuSeconds(relay.child.pid!) - before) / SECONDS;
        const rate = Number(/Requests\/sec:\s+(\S+)/.exec(out)?.[1] ?? NaN);
        results[name].push(rate);
        process.stdout.write(`run ${run} ${name}: ${Math.round(rate)} conn/s, relay ${cores.toFixed(2)} cores\n`);
        await relay.stop('SIGKILL');
      }
    }
    const [single, four] = Object.keys(CONFIGS).map((k) => median(results[k]));
    process.stdout.write(`median: one backend ${Math.round(single)} conn/s, four backends ${Math.round(four)} conn/s, ` +
      `ratio ${(four / single).toFixed(2)} (target >= 0.9)\n`);
  } finally {
    await lab.teardown();
  }
}

void main();
