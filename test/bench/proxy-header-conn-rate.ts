// What a PROXY v2 header costs relay per connection: new TCP connections
// through relay reading a v2 header in front of each (proxy-protocol v2), as a
// ratio to plain relay (issue 14's target: the header costs under 5%), with
// relay's own CPU time per connection beside it, since the Node.js client
// (short-conns.js, the same in both) may be what limits the rate. Runs
// alternate so drift on this shared machine spreads over both. As root:
//
//   npm run build && node dist/test/bench/proxy-header-conn-rate.js [--runs 3] [--conns 20000]
//
// Not yet one of `npm run bench`'s cases: those compare relay with nginx.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { Lab, waitForListener } from '../../src/lab/netns';
import { ADDR, applyRelayRoutes, buildTopology, cliPath } from '../../src/lab/topology';
import { startNginxHttp } from '../../src/lab/peers';

const PROXY_CPU = '1';
const LOAD_CPU = '0';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '3' }, conns: { type: 'string', default: '20000' } } });
const RUNS = Number(values.runs);
const CONNS = Number(values.conns);

const CONFIGS: Record<string, { relay: string[]; client: string[] }> = {
  'plain TCP': { relay: [], client: [] },
  'PROXY v2 header': { relay: ['--proxy-protocol', 'v2', '--proxy-from', `${ADDR.client4}/32`], client: ['--proxy-v2'] },
};

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function median(list: number[]): number {
  const sorted = [...list].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

async function main(): Promise<void> {
  const lab = new Lab('relaypphdr');
  process.once('SIGINT', () => void lab.teardown().then(() => process.exit(130)));
  try {
    const topo = buildTopology(lab);
    applyRelayRoutes(topo.relay);
    await startNginxHttp(lab, topo.backend, [ADDR.backend4], 80);
    const rates: Record<string, number[]> = Object.fromEntries(Object.keys(CONFIGS).map((k) => [k, []]));
    const cpuPerConn: Record<string, number[]> = Object.fromEntries(Object.keys(CONFIGS).map((k) => [k, []]));
    const client = path.join(__dirname, 'short-conns.js');
    let port = 8200;
    for (let run = 1; run <= RUNS; run++) {
      for (const [name, config] of Object.entries(CONFIGS)) {
        port++;
        const relay = lab.spawn(topo.relay, ['taskset', '-c', PROXY_CPU, process.execPath, cliPath(),
          '--listen', `${ADDR.relayClientSide4}:${port}`, '--backend', `${ADDR.backend4}:80`, '--health-interval', '0',
          ...config.relay, '--log-level', 'warn']);
        await waitForListener(topo.relay, 'tcp', port);
        const before = cpuSeconds(relay.child.pid!);
        const out = topo.client.run('taskset', '-c', LOAD_CPU, process.execPath, client, '--target',
          `${ADDR.relayClientSide4}:${port}`, '--conns', String(CONNS), '--parallel', '50', ...config.client);
        const cpu = cpuSeconds(relay.child.pid!) - before;
        const done = JSON.parse(out.trim().split('\n').at(-1)!) as { ok: number; failed: number; ms: number };
        const rate = done.ok / (done.ms / 1000);
        rates[name].push(rate);
        cpuPerConn[name].push((cpu / done.ok) * 1e6);
        process.stdout.write(`run ${run} ${name}: ${Math.round(rate)} conn/s (${done.failed} failed), ` +
          `relay ${((cpu / done.ok) * 1e6).toFixed(1)} µs CPU per connection\n`);
        await relay.stop('SIGKILL');
      }
    }
    const [plain, header] = Object.keys(CONFIGS).map((k) => median(rates[k]));
    const [plainCpu, headerCpu] = Object.keys(CONFIGS).map((k) => median(cpuPerConn[k]));
    process.stdout.write(`median: plain ${Math.round(plain)} conn/s, ${plainCpu.toFixed(1)} µs/conn; ` +
      `v2 header ${Math.round(header)} conn/s, ${headerCpu.toFixed(1)} µs/conn; rate ratio ${(header / plain).toFixed(3)}, ` +
      `CPU cost of the header ${(((headerCpu / plainCpu) - 1) * 100).toFixed(1)}% (target < 5%)\n`);
  } finally {
    await lab.teardown();
  }
}

void main();
