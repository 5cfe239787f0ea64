// Workers without processes: the flag, a worker's share of the limits, its
// role from the environment, and how the primary routes health messages.
import t from 'tap';
import * as os from 'node:os';
import {
  assertLimitsSplit, parseWorkers, restartBackoff, workerShare, workerRole,
  FIRST_RESTART_DELAY_MS, MAX_RESTART_DELAY_MS, STABLE_AFTER_MS,
} from '../../src/workers';
import { HealthRouter, ReportBatch, healthKey, replayRuns, type HealthMessage } from '../../src/health-link';
import { HealthState } from '../../src/health';
import { buildRunConfig } from '../../src/config';

t.test('--workers', async (t) => {
  t.equal(parseWorkers(undefined), 1, 'default 1');
  t.equal(parseWorkers('3'), 3);
  t.equal(parseWorkers('auto'), os.availableParallelism());
  for (const bad of ['0', '-1', '1.5', 'many', '257']) {
    t.throws(() => parseWorkers(bad), { name: 'ConfigError', message: /--workers must be auto or an integer from 1 to 256/ }, bad);
  }
});

t.test("a worker's share: limits split exactly, their sum the relay's", async (t) => {
  const run = buildRunConfig({ proto: 'udp', listen: ['192.0.2.1:53'], backend: ['198.51.100.20:53'],
    'max-conns': '4096', 'max-sessions': '5' });
  const shares = [0, 1, 2].map((index) => workerShare(run, 3, index));
  t.same(shares.map((s) => s.maxSessions), [2, 2, 1], 'max-sessions 5 over 3 workers');
  t.same(shares.map((s) => s.maxConns), [1366, 1365, 1365], 'max-conns 4096 over 3 workers');
  t.ok(shares.every((s) => s.reusePort), 'listeners join the SO_REUSEPORT group');
  t.same([0, 1, 2, 3, 4].map((index) => workerShare(run, 5, index).maxSessions), [1, 1, 1, 1, 1], 'one each');
  t.throws(() => workerShare(run, 8, 0), { name: 'ConfigError', message: /max-sessions 5 is below the 8 workers: each worker needs at least 1/ },
    'a limit below the workers leaves one with none: refused');
  t.throws(() => assertLimitsSplit([run], 6), { name: 'ConfigError' });
  const tcp = buildRunConfig({ listen: ['192.0.2.1:80'], backend: ['198.51.100.20:80'], 'max-sessions': '1' });
  t.doesNotThrow(() => assertLimitsSplit([tcp], 4), "a TCP service's max-sessions is not split: it has no sessions");
});

t.test('a worker that keeps dying waits longer each time, up to a cap; one that served a while starts afresh', async (t) => {
  let delay = FIRST_RESTART_DELAY_MS;
  const waits: number[] = [];
  for (let death = 0; death < 9; death++) {
    const next = restartBackoff(delay, 100); // dies 100 ms after each start
    waits.push(next.delayMs);
    delay = next.nextDelayMs;
  }
  t.same(waits, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000], 'doubling from 0.5 s to the 30 s cap');
  t.equal(waits.at(-1), MAX_RESTART_DELAY_MS);
  t.same(restartBackoff(MAX_RESTART_DELAY_MS, STABLE_AFTER_MS), { delayMs: 500, nextDelayMs: 1000 },
    'a worker that served 30 s is restarted after 0.5 s again');
  t.same(restartBackoff(MAX_RESTART_DELAY_MS, STABLE_AFTER_MS - 1).delayMs, 30000, 'one that served less keeps its backoff');
});

t.test('the role comes from the environment the primary sets', async (t) => {
  t.same(workerRole({ RELAY_WORKER: '1', RELAY_WORKERS: '2' }), { index: 1, count: 2 });
  t.equal(workerRole({}), undefined);
  t.equal(workerRole({ RELAY_WORKER: '2', RELAY_WORKERS: '2' }), undefined, 'out of range');
});

t.test('health: reports go to the leader, its decisions to the others, kept for late starters', async (t) => {
  const router = new HealthRouter();
  const key = healthKey('dns', 'udp', { address: '198.51.100.20', port: 53, family: 4 });
  t.equal(key, 'dns|udp|198.51.100.20:53');
  const refused = [{ ok: false, count: 1, reason: 'refused' }];
  t.same(router.route(2, { type: 'health-report', key, runs: refused }, 3).map((r) => r.to), [0]);
  t.same(router.route(0, { type: 'health-report', key, runs: refused }, 3), [], "the leader's own reports stay with it");
  t.same(router.route(1, { type: 'health-state', key, up: false, reason: 'x' }, 3), [], 'only the leader decides');
  t.same(router.route(0, { type: 'health-state', key, up: false, reason: 'refused' }, 3).map((r) => r.to), [1, 2]);
  t.same(router.snapshot(), [{ type: 'health-state', key, up: false, reason: 'refused' }]);
});

t.test('health reports travel in batches: successes per period, a failure at the end of the turn, replayed in order', async (t) => {
  const sent: HealthMessage[] = [];
  const batch = new ReportBatch((m) => sent.push(m), 30);
  for (let i = 0; i < 1000; i++) batch.add('a', true, 'traffic passed');
  await new Promise((r) => setImmediate(r));
  t.equal(sent.length, 0, 'successes wait for the period');
  await new Promise((r) => setTimeout(r, 60));
  t.same(sent, [{ type: 'health-report', key: 'a', runs: [{ ok: true, count: 1000, reason: 'traffic passed' }] }],
    '1,000 successes: one message');
  sent.length = 0;
  batch.add('a', true, 'traffic passed');
  batch.add('a', false, 'connect refused');
  batch.add('b', false, 'connect timeout');
  await new Promise((r) => setImmediate(r));
  t.same(sent.map((m) => m.type === 'health-report' && [m.key, m.runs.map((r) => [r.ok, r.count])]),
    [['a', [[true, 1], [false, 1]]], ['b', [[false, 1]]]], 'a failure goes at the end of the turn, with what came before it');

  // Replayed, a batch leaves the leader where the reports one by one would have.
  let seed = 7;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (let round = 0; round < 50; round++) {
    const results = Array.from({ length: 1 + Math.floor(random() * 300) }, () => random() < 0.7);
    const direct = new HealthState(2, 3);
    const flipsDirect = results.filter((ok) => direct.record(ok)).length;
    const batched = new HealthState(2, 3);
    const messages: HealthMessage[] = [];
    const b = new ReportBatch((m) => messages.push(m));
    for (const ok of results) b.add('k', ok, ok ? 'passed' : 'refused');
    b.flush();
    let flipsBatched = 0;
    for (const m of messages) if (m.type === 'health-report') replayRuns(m.runs, (ok) => { if (batched.record(ok)) flipsBatched++; });
    if (batched.up !== direct.up || flipsBatched !== flipsDirect) {
      t.fail(`round ${round}: batched ${batched.up}/${flipsBatched} flips, one by one ${direct.up}/${flipsDirect}`);
      return;
    }
  }
  t.pass('50 random sequences: the same state and the same changes, batched or not');
});

t.test('status: the workers summed, a backend shown at the worst state any worker reports', async (t) => {
  const { mergeStatus } = await import('../../src/admin/status');
  const backend = (state: 'up' | 'down' | 'drained', open: number) =>
    ({ backend: '198.51.100.20:80', state, healthy: state !== 'down', weight: 1, open });
  const worker = (state: 'up' | 'down' | 'drained', open: number) => ({ pid: 1, uptimeSeconds: 1, services: [
    { name: 'web', listen: ['192.0.2.1:80'], balance: 'roundrobin', tcp: { connectionsOpen: open, backends: [backend(state, open)] } }] });
  const merged = mergeStatus([worker('up', 2), worker('drained', 3)]);
  t.equal(merged.length, 1);
  t.equal(merged[0].tcp?.connectionsOpen, 5);
  t.same(merged[0].tcp?.backends, [backend('drained', 5)]);
  t.same(mergeStatus([worker('down', 0), worker('up', 1)])[0].tcp?.backends[0], { ...backend('down', 1) });
});

t.test('a worker starts with the drains of its environment, per service', async (t) => {
  const { drainedAtStart, DRAINED_ENV } = await import('../../src/admin/worker-side');
  const env = { [DRAINED_ENV]: JSON.stringify([['web', '198.51.100.20:80'], ['dns', '198.51.100.21:53']]) };
  t.same(drainedAtStart('web', env), ['198.51.100.20:80']);
  t.same(drainedAtStart('mail', env), []);
  t.same(drainedAtStart('web', {}), []);
  t.same(drainedAtStart('web', { [DRAINED_ENV]: 'not json' }), [], 'a bad value starts with none');
});

t.test('the primary: a silent worker is left out within the bound, its counters kept; a dead one stays in the sum', async (t) => {
  const { PrimaryAdmin, ASK_TIMEOUT_MS } = await import('../../src/admin/primary');
  const { EventEmitter } = await import('node:events');
  const counter = (value: number) => [{ name: 'relay_x_total', help: 'x', type: 'counter', aggregator: 'sum', values: [{ labels: {}, value }] },
    { name: 'relay_x_open', help: 'x', type: 'gauge', aggregator: 'sum', values: [{ labels: {}, value }] }];
  const figures = [5, 7];
  const silent = new Set<number>();
  const workers = [0, 1].map((index) => {
    const child = Object.assign(new EventEmitter(), {
      connected: true, pid: 100 + index,
      send: (message: { id: number; what: string }) => {
        if (silent.has(index)) return true;
        setImmediate(() => admin.onMessage({ type: 'admin-reply', id: message.id, metrics: counter(figures[index]) }));
        return true;
      },
    });
    return { index, child: child as never, ready: true, restarts: 0 };
  });
  const admin = new PrimaryAdmin(() => workers, () => false);
  const value = (text: string, name: string) => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1]);
  let text = (await admin.metrics()).text;
  t.equal(value(text, 'relay_x_total'), 12, 'counters summed');
  t.equal(value(text, 'relay_x_open'), 12, 'gauges summed');
  silent.add(1);
  figures[0] = 6;
  const started = Date.now();
  text = (await admin.metrics()).text;
  t.ok(Date.now() - started < ASK_TIMEOUT_MS + 500, 'the scrape waited no longer than the bound');
  t.equal(value(text, 'relay_x_total'), 13, "the silent worker's counter stands at its last answer");
  t.equal(value(text, 'relay_x_open'), 6, 'its gauge is left out');
  t.match(text, /relay_worker_reporting\{worker="1"\} 0/, 'and the scrape says so');
  silent.delete(1);
  admin.workerExited(1);
  figures[1] = 1; // its successor starts from zero
  text = (await admin.metrics()).text;
  t.equal(value(text, 'relay_x_total'), 6 + 7 + 1, "a dead worker's last counters stay in the sum: *_total never goes down");
  t.equal(value(text, 'relay_x_open'), 7);
});
