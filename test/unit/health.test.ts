import t from 'tap';
import { HealthState, HealthChecker } from '../../src/health';
import { parseEndpoint } from '../../src/addr';

t.test('down after `fall` failures in a row, up after `rise` successes in a row', async (t) => {
  const state = new HealthState(2, 3);
  t.ok(state.up, 'starts up');
  t.notOk(state.record(false));
  t.notOk(state.record(false));
  t.notOk(state.record(true), 'a success resets the failure count');
  t.notOk(state.record(false));
  t.notOk(state.record(false));
  t.ok(state.record(false), 'third failure in a row: down');
  t.notOk(state.up);
  t.notOk(state.record(true));
  t.notOk(state.record(false), 'a failure resets the success count');
  t.notOk(state.record(true));
  t.ok(state.record(true), 'second success in a row: up');
  t.ok(state.up);
});

t.test('passive failures count like failed checks and report the change once', async (t) => {
  const backend = parseEndpoint('198.51.100.20:80');
  const changes: [string, boolean, string][] = [];
  const checker = new HealthChecker([backend], 'tcp', { intervalMs: 0, timeoutMs: 100, rise: 1, fall: 2 },
    (b, up, reason) => changes.push([b.address, up, reason]));
  checker.reportFailure(backend, 'connect ECONNREFUSED');
  t.ok(checker.isUp(backend));
  checker.reportFailure(backend, 'connect ECONNREFUSED');
  checker.reportFailure(backend, 'connect ECONNREFUSED');
  t.notOk(checker.isUp(backend));
  t.same(changes, [['198.51.100.20', false, 'connect ECONNREFUSED']]);
});

t.test('without active checks, a backend traffic marked down is tried again later', async (t) => {
  const backend = parseEndpoint('198.51.100.20:80');
  const changes: boolean[] = [];
  const checker = new HealthChecker([backend], 'udp', { intervalMs: 2000, timeoutMs: 100, rise: 2, fall: 1, passiveRetryMs: 50 },
    (_b, up) => changes.push(up));
  checker.reportFailure(backend, 'udp ECONNREFUSED');
  t.notOk(checker.isUp(backend), 'down (UDP without a probe: no active checks)');
  await new Promise((r) => setTimeout(r, 120));
  t.ok(checker.isUp(backend), 'up again after the retry delay');
  t.same(changes, [false, true]);
});

t.test('a success in real traffic breaks a run of failures', async (t) => {
  const backend = parseEndpoint('198.51.100.20:80');
  const checker = new HealthChecker([backend], 'tcp', { intervalMs: 0, timeoutMs: 100, rise: 1, fall: 2 }, () => {});
  checker.reportFailure(backend, 'x');
  checker.reportSuccess(backend);
  checker.reportFailure(backend, 'x');
  t.ok(checker.isUp(backend), 'two failures, but not in a row');
});
