// Workers without processes: the flag, a worker's share of the limits, its
// role from the environment, and how the primary routes health messages.
import t from 'tap';
import * as os from 'node:os';
import { parseWorkers, workerShare, workerRole } from '../../src/workers';
import { HealthRouter, healthKey } from '../../src/health-link';
import { buildRunConfig } from '../../src/config';

t.test('--workers', async (t) => {
  t.equal(parseWorkers(undefined), 1, 'default 1');
  t.equal(parseWorkers('3'), 3);
  t.equal(parseWorkers('auto'), os.availableParallelism());
  for (const bad of ['0', '-1', '1.5', 'many', '257']) {
    t.throws(() => parseWorkers(bad), { name: 'ConfigError', message: /--workers must be auto or an integer from 1 to 256/ }, bad);
  }
});

t.test("a worker's share: limits split, never above the relay's", async (t) => {
  const run = buildRunConfig({ listen: ['192.0.2.1:53'], backend: ['198.51.100.20:53'], 'max-conns': '4096', 'max-sessions': '5' });
  const share = workerShare(run, 3);
  t.equal(share.maxConns, 1365);
  t.equal(share.maxSessions, 1);
  t.equal(share.reusePort, true);
  t.equal(workerShare(run, 8).maxSessions, 1, 'at least one each');
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
  t.same(router.route(2, { type: 'health-report', key, ok: false, reason: 'refused' }, 3).map((r) => r.to), [0]);
  t.same(router.route(0, { type: 'health-report', key, ok: false, reason: 'refused' }, 3), [], "the leader's own reports stay with it");
  t.same(router.route(1, { type: 'health-state', key, up: false, reason: 'x' }, 3), [], 'only the leader decides');
  t.same(router.route(0, { type: 'health-state', key, up: false, reason: 'refused' }, 3).map((r) => r.to), [1, 2]);
  t.same(router.snapshot(), [{ type: 'health-state', key, up: false, reason: 'refused' }]);
});
