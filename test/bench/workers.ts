// Issue 13's cases: relay on every core. Scaling: relay --workers 1 (pinned
// to the proxy CPU, as in every other case) against --workers 2 (both CPUs),
// with the load generator and backend pinned to CPU 0 as always; on this
// 2-core machine the second worker shares CPU 0 with them, so the figure
// judged is the rate per core of CPU relay's processes used. And relay
// --workers auto beside nginx worker_processes auto, both free on both CPUs,
// reported as a ratio (raw and per core). Same load and checks as
// tcp-conn-rate and udp-rr.
import type { BenchCase } from './case';
import { LOAD_CPU, PROXY_CPU, TUNED_CLIENT_SYSCTLS } from './lab';
import { RelayWorkers, nginxWorkersTarget, relayTarget, relayWorkersTarget, udpNginxTarget, udpRelayTarget } from './targets';
import { connRateCase } from './tcp';
import { SESSION_TIMEOUT, UDP_MAX_SESSIONS, requestRateCase } from './udp';

/** Every CPU of this machine's two: where the workers may run. */
const ALL_CPUS = `${LOAD_CPU},${PROXY_CPU}`;
const TWO_WORKERS: RelayWorkers = { name: 'relay-workers', count: '2', listening: 2, cpus: ALL_CPUS };
/** Both workers on the proxy CPU: what the worker design costs per core, with no CPU shared with the load. */
const TWO_WORKERS_ONE_CPU: RelayWorkers = { name: 'relay-workers', count: '2', listening: 2, cpus: String(PROXY_CPU) };
const AUTO_WORKERS: RelayWorkers = { name: 'relay', count: 'auto', listening: 2, cpus: ALL_CPUS };

/** Issue 13: 2 workers' figure per core at least 0.9x one worker's. */
const SCALING = { kind: 'variant-per-core-at-least', variant: 'relay-workers', min: 0.9 } as const;
const BESIDE_NGINX = { kind: 'none', why: 'issue 13 asks for the ratio to nginx `auto`, reported (raw and per core), not judged' } as const;

const SCALING_NOTE = `relay --workers 1 on CPU ${PROXY_CPU} alone (as in every other case) against --workers 2 on CPUs ` +
  `${ALL_CPUS}; the load generator and the backend stay pinned to CPU ${LOAD_CPU}, so the second worker shares that CPU ` +
  'with them. The verdict compares the figure per core of CPU relay\'s processes (primary and workers) used.';

const tcpWorkersBase = (id: string, title: string, goal: BenchCase['goal'], note: string): BenchCase => ({
  ...connRateCase({ id, title, clientSysctls: [], goal, timeWaitGoal: { kind: 'none', why: 'not measured here' }, note }),
  series: undefined,
  derived: undefined,
  clientSysctls: TUNED_CLIENT_SYSCTLS,
  method: (o) => `As tcp-conn-rate (wrk -t1 -c${o.rateConns}, \`Connection: close\`, nginx backend, all on CPU ${LOAD_CPU}), ` +
    `runs interleaved in one client namespace tuned with ${TUNED_CLIENT_SYSCTLS.map((x) => `\`${x}\``).join(', ')}. ${note}`,
});

export const tcpConnRateWorkers: BenchCase = {
  ...tcpWorkersBase('tcp-conn-rate-workers', 'New TCP connections per second, 1 worker against 2 (per core)', SCALING, SCALING_NOTE),
  targets: [relayTarget, relayWorkersTarget(TWO_WORKERS)],
};

const ONE_CPU_NOTE = `relay --workers 1 against --workers 2, both on CPU ${PROXY_CPU} alone. On this 2-core machine the ` +
  'load generator needs the other CPU, so two workers cannot each have a core of their own without sharing it with the ' +
  'load (the case above); here they share one, which shows what the worker design itself costs per core: the ' +
  'primary, a second event loop, SO_REUSEPORT spreading clients over two sockets. The verdict compares the figure ' +
  'per core of CPU relay\'s processes used.';

export const tcpConnRateWorkersOneCpu: BenchCase = {
  ...tcpWorkersBase('tcp-conn-rate-workers-1cpu', 'New TCP connections per second, 1 worker against 2 sharing one CPU (per core)',
    SCALING, ONE_CPU_NOTE),
  targets: [relayTarget, relayWorkersTarget(TWO_WORKERS_ONE_CPU)],
};

export const tcpConnRateAuto: BenchCase = {
  ...tcpWorkersBase('tcp-conn-rate-auto', 'New TCP connections per second, relay --workers auto beside nginx auto', BESIDE_NGINX,
    `relay --workers auto and nginx \`worker_processes auto\` (with \`reuseport\`), each free on CPUs ${ALL_CPUS}.`),
  targets: [relayWorkersTarget(AUTO_WORKERS), nginxWorkersTarget(ALL_CPUS)],
};

const kept = { maxSessions: UDP_MAX_SESSIONS, sessionTimeout: SESSION_TIMEOUT };

export const udpRequestRateWorkers: BenchCase = requestRateCase({
  id: 'udp-rr-workers',
  title: 'UDP requests per second, sessions kept, 1 worker against 2 (per core)',
  targets: [
    udpRelayTarget({ ...kept, variant: '--workers 1' }),
    udpRelayTarget({ ...kept, variant: '--workers 2', workers: TWO_WORKERS }),
  ],
  goal: SCALING,
  sessions: `Sessions kept per client port, as in udp-rr. ${SCALING_NOTE}`,
});

export const udpRequestRateWorkersOneCpu: BenchCase = requestRateCase({
  id: 'udp-rr-workers-1cpu',
  title: 'UDP requests per second, sessions kept, 1 worker against 2 sharing one CPU (per core)',
  targets: [
    udpRelayTarget({ ...kept, variant: '--workers 1' }),
    udpRelayTarget({ ...kept, variant: '--workers 2, one CPU', workers: TWO_WORKERS_ONE_CPU }),
  ],
  goal: SCALING,
  sessions: `Sessions kept per client port, as in udp-rr. ${ONE_CPU_NOTE}`,
});

export const udpRequestRateAuto: BenchCase = requestRateCase({
  id: 'udp-rr-auto',
  title: 'UDP requests per second, sessions kept, relay --workers auto beside nginx auto',
  targets: [
    udpRelayTarget({ ...kept, variant: '--workers auto', workers: AUTO_WORKERS }),
    udpNginxTarget({ timeout: SESSION_TIMEOUT, variant: 'worker_processes auto', workers: { processes: 'auto' }, cpus: ALL_CPUS }),
  ],
  goal: BESIDE_NGINX,
  sessions: `Sessions kept per client port, as in udp-rr; relay --workers auto and nginx \`worker_processes auto\` ` +
    `(\`listen ... udp reuseport\`, so a client port stays with one worker), each free on CPUs ${ALL_CPUS}.`,
});

export const WORKERS_CASES: readonly BenchCase[] = [tcpConnRateWorkers, tcpConnRateWorkersOneCpu, tcpConnRateAuto,
  udpRequestRateWorkers, udpRequestRateWorkersOneCpu, udpRequestRateAuto];
